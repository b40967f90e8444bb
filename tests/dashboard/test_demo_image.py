"""``ccserver-admin demo-image``: its pure parts, and a clear refusal of a base that is not here
(the build itself runs in tests/dashboard/test_quickstart.py)."""

from __future__ import annotations

import io
import secrets
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from ccserver.demo_image import build, build_context, debian_mirror


def test_the_mirror_comes_from_the_apt_sources(tmp_path: Path) -> None:
    deb822 = tmp_path / "debian.sources"
    deb822.write_text(
        "Types: deb\nURIs: http://security.debian.org/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\n"
    )
    assert debian_mirror([deb822]) == "http://mirror.example/debian"
    one_line = tmp_path / "sources.list"
    one_line.write_text("# a comment\ndeb [arch=amd64 signed-by=/k.gpg] https://other.example/debian bookworm main\n")
    assert debian_mirror([tmp_path / "missing", one_line]) == "https://other.example/debian"
    assert debian_mirror([]) == "http://deb.debian.org/debian"


def test_the_context_holds_the_worker_the_app_and_the_base() -> None:
    with tarfile.open(fileobj=io.BytesIO(build_context("some/base:2"))) as tar:
        names = set(tar.getnames())
        dockerfile = tar.extractfile("Dockerfile").read().decode()  # type: ignore[union-attr]
    assert dockerfile.startswith("FROM some/base:2\n")
    assert {"app.py", "config.json", "container_worker/__main__.py", "container_worker/application.py"} <= names


def test_a_missing_base_image_is_a_one_line_error() -> None:
    admin = str(Path(sys.executable).with_name("ccserver-admin"))
    done = subprocess.run(
        [admin, "demo-image", "--from", "ccserver-test/no-such-image:0", "--tag", "ccserver-test/never:0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == [
        "ccserver-admin: no local image ccserver-test/no-such-image:0: pull it first "
        "(docker pull ccserver-test/no-such-image:0) or leave out --from"
    ]


def test_the_image_carries_the_workers_bytecode() -> None:
    """Built on the local base (as the quick start does): every module of the worker is
    compiled in the image, and a container that runs the worker writes no bytecode."""
    docker = pytest.importorskip("docker")
    client = docker.DockerClient(base_url="unix:///var/run/docker.sock", timeout=300)
    tag = f"ccserver-test/demo-bytecode:{secrets.token_hex(4)}"
    container = None
    try:
        build("unix:///var/run/docker.sock", tag=tag, from_image="ccserver-test/base:1")
        listing = client.containers.run(tag, ["ls", "/opt/container_worker/__pycache__"], remove=True).decode()
        modules = {p.stem for p in (Path(__file__).resolve().parents[2] / "ccserver/worker").glob("*.py")}
        assert {name.split(".")[0] for name in listing.split()} == modules
        container = client.containers.create(
            tag, ["python3", "/opt/container_worker", '{"container_type": "inspection"}']
        )
        container.start()
        assert container.wait(timeout=120)["StatusCode"] == 1  # no inspection_url: 1, after importing the worker
        assert [c["Path"] for c in container.diff() or []] == []
    finally:
        if container is not None:
            container.remove(force=True)
        try:
            client.images.remove(tag, force=True)
        except docker.errors.ImageNotFound:
            pass
        client.close()
