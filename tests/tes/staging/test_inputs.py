"""Inputs written into a created container's volume through the engine's archive API, read
back by running a container on the same volume."""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from ccserver.config import StorageConfig
from ccserver.tes.staging import StagingError, stage_in
from tests.tes.staging.conftest import FTP_PASSWORD, FtpServer, HttpServer, S3Server, Task, make_tree


def listing(task: Task, path: str) -> dict[str, str]:
    """``relative path -> "mode uid gid"`` of everything below ``path`` in the volume."""
    out = task.run(f"cd '{path}' && busybox find . -mindepth 1 -exec busybox stat -c '%n %a %u %g' {{}} +")
    rows = [line.split(" ") for line in out.decode().splitlines()]
    return {name[2:]: " ".join(rest) for name, *rest in rows}


def test_content_input_lands_in_new_parent_directories(task: Task, storage: StorageConfig, deadline: float) -> None:
    script = "#!/bin/sh\necho hello\n" + "x" * (200 * 1024)  # beyond the 128 KiB TES asks for
    logs = stage_in(
        task.client, task.container, [{"path": "/data/in/deep/job.sh", "content": script}], storage, deadline
    )
    assert task.read("/data/in/deep/job.sh") == script.encode()
    assert listing(task, "/data/in") == {"deep": "755 0 0", "deep/job.sh": "644 0 0"}
    assert logs == [logs[0]] and logs[0].startswith(f"inputs[0] content -> /data/in/deep/job.sh: 1 file, {len(script)}")


def test_http_file_sized_and_unsized(
    task: Task, storage: StorageConfig, http_server: HttpServer, deadline: float
) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    (http_server.root / "blob.bin").write_bytes(data)
    inputs = [
        {"url": f"{http_server.url}/blob.bin", "path": "/data/blob.bin", "type": "FILE"},
        # no Content-Length: spooled to a temporary file for the tar header
        {"url": f"{http_server.url}/unsized/blob.bin", "path": "/data/again/blob.bin"},
    ]
    logs = stage_in(task.client, task.container, inputs, storage, deadline)
    assert task.read("/data/blob.bin") == data
    assert task.read("/data/again/blob.bin") == data
    assert [line.split(": ")[0] for line in logs] == [
        f"inputs[0] {http_server.url}/blob.bin -> /data/blob.bin",
        f"inputs[1] {http_server.url}/unsized/blob.bin -> /data/again/blob.bin",
    ]


def test_http_404_names_the_input(task: Task, storage: StorageConfig, http_server: HttpServer, deadline: float) -> None:
    (http_server.root / "ok.txt").write_bytes(b"ok")
    inputs = [
        {"url": f"{http_server.url}/ok.txt", "path": "/data/ok.txt"},
        {"url": f"{http_server.url}/missing.txt", "path": "/data/missing.txt"},
    ]
    with pytest.raises(StagingError) as caught:
        stage_in(task.client, task.container, inputs, storage, deadline)
    assert str(caught.value) == f"inputs[1] ({http_server.url}/missing.txt): 404 Not Found"


def test_http_directory_input_is_refused(task: Task, storage: StorageConfig, http_server: HttpServer) -> None:
    with pytest.raises(StagingError, match=r"inputs\[0\] .*DIRECTORY inputs cannot come from http"):
        stage_in(
            task.client,
            task.container,
            [{"url": f"{http_server.url}/d", "path": "/data/d", "type": "DIRECTORY"}],
            storage,
            time.monotonic() + 30,
        )


def test_ftp_file_and_directory(task: Task, storage: StorageConfig, ftp_server: FtpServer, deadline: float) -> None:
    files = make_tree(ftp_server.root / "tree")
    (ftp_server.root / "one.txt").write_bytes(b"one file\n")
    inputs = [
        {"url": f"{ftp_server.url}/one.txt", "path": "/data/one.txt"},
        {"url": f"{ftp_server.url}/tree", "path": "/data/tree", "type": "DIRECTORY"},
    ]
    logs = stage_in(task.client, task.container, inputs, storage, deadline)
    assert task.read("/data/one.txt") == b"one file\n"
    for rel, data in files.items():
        assert task.read(f"/data/tree/{rel}") == data
    assert listing(task, "/data/tree") == {
        "a.txt": "644 0 0",
        "empty": "755 0 0",
        "sub": "755 0 0",
        "sub/b.bin": "644 0 0",
        "sub/deeper": "755 0 0",
        "sub/deeper/c.txt": "644 0 0",
    }
    assert FTP_PASSWORD not in "".join(logs)


def test_ftp_error_names_the_input_without_its_password(
    task: Task, storage: StorageConfig, ftp_server: FtpServer, deadline: float
) -> None:
    with pytest.raises(StagingError) as caught:
        stage_in(
            task.client, task.container, [{"url": f"{ftp_server.url}/nope.txt", "path": "/data/x"}], storage, deadline
        )
    message = str(caught.value)
    assert message.startswith(f"inputs[0] ({ftp_server.url.replace(':' + FTP_PASSWORD, '')}/nope.txt): FTP")
    assert "550" in message and FTP_PASSWORD not in message


def test_s3_file_and_directory(task: Task, storage: StorageConfig, s3_server: S3Server, deadline: float) -> None:
    s3 = s3_server.client()
    big = os.urandom(5 * 1024 * 1024)
    s3.put_object(Bucket=s3_server.bucket, Key="single/obj.bin", Body=big)
    tree = {"a.txt": b"alpha", "x/y/z.txt": b"zed\n", "x/w.bin": b"\0\1\2"}
    for rel, data in tree.items():
        s3.put_object(Bucket=s3_server.bucket, Key=f"prefix/dir/{rel}", Body=data)
    s3.put_object(Bucket=s3_server.bucket, Key="prefix/dir-other/not-me.txt", Body=b"no")
    inputs = [
        {"url": f"s3://{s3_server.bucket}/single/obj.bin", "path": "/data/obj.bin"},
        {"url": f"s3://{s3_server.bucket}/prefix/dir", "path": "/data/dir", "type": "DIRECTORY"},
    ]
    stage_in(task.client, task.container, inputs, storage, deadline)
    assert task.read("/data/obj.bin") == big
    for rel, data in tree.items():
        assert task.read(f"/data/dir/{rel}") == data
    assert set(listing(task, "/data/dir")) == {"a.txt", "x", "x/y", "x/y/z.txt", "x/w.bin"}


def test_s3_missing_object_names_the_input(task: Task, storage: StorageConfig, s3_server: S3Server) -> None:
    url = f"s3://{s3_server.bucket}/nothing/here"
    with pytest.raises(StagingError, match=rf"^inputs\[0\] \({url}\): S3 404"):
        stage_in(task.client, task.container, [{"url": url, "path": "/data/x"}], storage, time.monotonic() + 30)
    with pytest.raises(StagingError, match=r"^inputs\[0\] .*: no object under s3://"):
        stage_in(
            task.client,
            task.container,
            [{"url": url, "path": "/data/x", "type": "DIRECTORY"}],
            storage,
            time.monotonic() + 30,
        )


def test_s3_unconfigured_fails_before_anything_is_fetched(
    task: Task, storage: StorageConfig, http_server: HttpServer
) -> None:
    (http_server.root / "first.txt").write_bytes(b"first")
    inputs = [
        {"url": f"{http_server.url}/first.txt", "path": "/data/first.txt"},
        {"url": "s3://bucket/key", "path": "/data/key"},
    ]
    started = time.monotonic()
    with pytest.raises(StagingError) as caught:
        stage_in(task.client, task.container, inputs, replace(storage, s3=None), time.monotonic() + 30)
    assert str(caught.value) == "inputs[1] (s3://bucket/key): s3:// is not configured on this server ([tes.storage.s3])"
    assert time.monotonic() - started < 1.0
    # not even the first (valid) input was fetched or written
    assert task.run("busybox find /data -mindepth 1") == b""


def test_file_file_and_directory(task: Task, storage: StorageConfig, file_root: Path, deadline: float) -> None:
    files = make_tree(file_root / "tree")
    (file_root / "single.txt").write_bytes(b"single\n")
    inputs = [
        {"url": f"file://{file_root}/single.txt", "path": "/data/s/single.txt"},
        {"url": f"file://{file_root}/tree/", "path": "/data/tree", "type": "DIRECTORY"},
    ]
    stage_in(task.client, task.container, inputs, storage, deadline)
    assert task.read("/data/s/single.txt") == b"single\n"
    for rel, data in files.items():
        assert task.read(f"/data/tree/{rel}") == data
    assert listing(task, "/data/tree") == {
        "a.txt": "644 0 0",
        "empty": "755 0 0",
        "sub": "755 0 0",
        "sub/b.bin": "644 0 0",
        "sub/deeper": "755 0 0",
        "sub/deeper/c.txt": "644 0 0",
    }


def test_file_outside_the_roots_is_refused(
    task: Task, storage: StorageConfig, file_root: Path, tmp_path: Path, deadline: float
) -> None:
    (tmp_path / "secret.txt").write_bytes(b"secret")
    for url in (f"file://{tmp_path}/secret.txt", f"file://{file_root}/../secret.txt", "file:///etc/passwd"):
        with pytest.raises(StagingError, match=r"^inputs\[0\] .*outside the allowed directories"):
            stage_in(task.client, task.container, [{"url": url, "path": "/data/x"}], storage, deadline)
    assert task.run("busybox find /data -mindepth 1") == b""


def test_symlink_out_of_the_roots_is_refused(
    task: Task, storage: StorageConfig, file_root: Path, tmp_path: Path, deadline: float
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"secret")
    (file_root / "link.txt").symlink_to(outside / "secret.txt")
    (file_root / "linkdir").symlink_to(outside)
    tree = file_root / "tree"
    tree.mkdir()
    (tree / "fine.txt").write_bytes(b"fine")
    (tree / "escape.txt").symlink_to(outside / "secret.txt")
    cases = [
        ({"url": f"file://{file_root}/link.txt", "path": "/data/x"}, "link.txt resolves to"),
        ({"url": f"file://{file_root}/linkdir/secret.txt", "path": "/data/x"}, "secret.txt resolves to"),
        ({"url": f"file://{tree}", "path": "/data/t", "type": "DIRECTORY"}, "escape.txt resolves to"),
    ]
    for item, reason in cases:
        with pytest.raises(StagingError) as caught:
            stage_in(task.client, task.container, [item], storage, deadline)
        assert str(caught.value).startswith(f"inputs[0] ({item['url']}): ")
        assert reason in str(caught.value) and "outside the allowed directories" in str(caught.value)
    # a link that stays inside the roots is fine
    (file_root / "inner.txt").symlink_to(tree / "fine.txt")
    stage_in(
        task.client, task.container, [{"url": f"file://{file_root}/inner.txt", "path": "/data/i"}], storage, deadline
    )
    assert task.read("/data/i") == b"fine"


def test_many_inputs_on_several_threads(
    task: Task, storage: StorageConfig, http_server: HttpServer, deadline: float
) -> None:
    inputs = []
    for i in range(12):
        (http_server.root / f"f{i}").write_bytes(f"file {i}\n".encode() * (i + 1))
        inputs.append({"url": f"{http_server.url}/f{i}", "path": f"/data/many/{i % 3}/f{i}"})
    logs = stage_in(task.client, task.container, inputs, storage, deadline)
    assert len(logs) == 12
    for i in range(12):
        assert task.read(f"/data/many/{i % 3}/f{i}") == f"file {i}\n".encode() * (i + 1)


def test_deadline_passed(task: Task, storage: StorageConfig) -> None:
    with pytest.raises(StagingError, match=r"^inputs\[0\]: deadline passed"):
        stage_in(task.client, task.container, [{"path": "/data/x", "content": "x"}], storage, time.monotonic() - 1)


class _SlowServer:
    """Answers every request with headers announcing 100 kB and then one byte every 0.1 s
    (``trickle``), or never answers at all."""

    def __init__(self, trickle: bool) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.trickle = trickle
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/slow"

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            if self.trickle:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
            while not self.stop.wait(0.1):
                if self.trickle:
                    try:
                        conn.sendall(b"x")
                    except OSError:
                        return

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.mark.parametrize("trickle", [False, True], ids=["silent", "trickling"])
def test_a_slow_server_cannot_outlast_the_deadline(task: Task, storage: StorageConfig, trickle: bool) -> None:
    server = _SlowServer(trickle)
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            stage_in(
                task.client, task.container, [{"url": server.url, "path": "/data/x"}], storage, time.monotonic() + 2
            )
            outcome.append(None)
        except BaseException as e:
            outcome.append(e)

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(20)
    try:
        assert not thread.is_alive(), "stage_in ran past its deadline"
        assert isinstance(outcome[0], StagingError)
        assert str(outcome[0]).startswith(f"inputs[0] ({server.url}): ")
        assert ("deadline passed" if trickle else "ReadTimeout") in str(outcome[0])
        assert time.monotonic() - started < 10
    finally:
        server.close()


def test_content_wins_over_url_unless_empty(
    task: Task, storage: StorageConfig, http_server: HttpServer, deadline: float
) -> None:
    (http_server.root / "f.txt").write_bytes(b"from the url")
    inputs = [
        {"url": f"{http_server.url}/nothing-there", "path": "/data/c.txt", "content": "inline"},
        {"url": f"{http_server.url}/f.txt", "path": "/data/u.txt", "content": ""},
        {"path": "/data/empty.txt", "content": ""},
    ]
    stage_in(task.client, task.container, inputs, storage, deadline)
    assert task.read("/data/c.txt") == b"inline"
    assert task.read("/data/u.txt") == b"from the url"
    assert task.read("/data/empty.txt") == b""
    with pytest.raises(StagingError, match=r"^inputs\[0\]: needs url or content$"):
        stage_in(task.client, task.container, [{"path": "/data/n"}], storage, deadline)


def test_the_engine_refusing_the_archive_names_the_input(task: Task, storage: StorageConfig, deadline: float) -> None:
    task.run("printf f > /data/f")
    big = "y" * (8 * 1024 * 1024)  # the engine stops reading before the stream ends
    with pytest.raises(StagingError) as caught:
        stage_in(task.client, task.container, [{"path": "/data/f/below.txt", "content": big}], storage, deadline)
    assert str(caught.value).startswith("inputs[0]: the engine refused the archive: "), str(caught.value)
    assert task.read("/data/f") == b"f"
