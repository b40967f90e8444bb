"""The tail kept at a container's end (its failure description): the last bytes, and a
first line saying the output was cut."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import docker
import pytest

from ccserver.cluster.docker_ops import cut_marker, last_bytes, logs_tail

IMAGE = "ccserver-test/busybox:1"


def test_last_bytes_of_chunks() -> None:
    assert last_bytes([b"abc\n", b"def\n"], 100) == ("abc\ndef\n", False)
    assert last_bytes([b"abc\n", b"def\n"], 5) == ("\ndef\n", True)
    assert last_bytes([b"x" * 1000, b"y" * 10], 10) == ("y" * 10, True)
    # a character cut in two at the start is dropped
    assert last_bytes(["é".encode() * 10], 5) == ("éé", True)
    # as many lines as asked for: there may have been more
    assert last_bytes([b"\n" * 4], 4) == ("\n" * 4, True)


@pytest.fixture(scope="module")
def engine() -> Iterator[docker.DockerClient]:
    client = docker.from_env(timeout=60)
    client.images.get(IMAGE)  # built by scripts/build-test-images, never pulled
    yield client
    client.close()


def test_logs_tail_of_a_real_container(engine: docker.DockerClient) -> None:
    name = f"ccserver-livelogs-end-{uuid.uuid4().hex[:12]}"
    container = engine.containers.run(IMAGE, ["sh", "-c", "seq 1 3000"], name=name, detach=True)
    try:
        container.wait(timeout=60)
        tail = logs_tail(engine, name, 1000)
        assert tail.startswith(cut_marker(1000))
        body = tail[len(cut_marker(1000)) :]
        assert len(body.encode()) == 1000 and body.endswith("2999\n3000\n")
        whole = logs_tail(engine, name, 100_000)
        assert not whole.startswith("[output cut") and whole.startswith("1\n2\n3\n")
    finally:
        container.remove(force=True)
