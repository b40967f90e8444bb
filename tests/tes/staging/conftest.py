"""Real servers and a real engine for the staging tests.

``task``: a created (never started) ``ccserver-test/busybox:1`` container mounting a fresh
volume at /data, as the runner makes one; ``task.run(script)`` runs another container on the
same volume and returns its stdout, to see what staging wrote.  The servers (HTTP with PUT,
FTP by pyftpdlib, S3 by moto) listen on 127.0.0.1: the daemon side fetches, not the container.
"""

from __future__ import annotations

import base64
import http.server
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from ccserver.config import S3Config, StorageConfig

IMAGE = "ccserver-test/busybox:1"
LABEL = {"io.curious-containers.test": "tes-staging"}


@pytest.fixture(scope="session")
def engine() -> Iterator[docker.DockerClient]:
    client = docker.from_env(timeout=60)
    client.ping()
    client.images.get(IMAGE)  # built by scripts/build-test-images, never pulled
    yield client
    client.close()


@dataclass
class Task:
    client: docker.DockerClient
    container: str
    volume: str

    def run(self, script: str) -> bytes:
        """Run ``script`` on the volume; its stdout, read through an attach made before the
        start (the logs of a short-lived container can come back empty)."""
        container = self.client.containers.create(
            IMAGE, ["sh", "-c", script], volumes={self.volume: {"bind": "/data", "mode": "rw"}}, labels=LABEL
        )
        try:
            stream = container.attach(stdout=True, stderr=False, stream=True, logs=True)
            container.start()
            out = b"".join(stream)
            status = container.wait(timeout=60)["StatusCode"]
            assert status == 0, f"{script!r} exited with {status}"
            return out
        finally:
            container.remove(force=True)

    def read(self, path: str) -> bytes:
        """The bytes of ``path`` in the volume, exactly (base64 through the log stream)."""
        return base64.b64decode(self.run(f"busybox base64 -w 0 '{path}'"))


@pytest.fixture
def task(engine: docker.DockerClient) -> Iterator[Task]:
    volume = engine.volumes.create(name=f"tes-staging-{uuid.uuid4().hex[:12]}", labels=LABEL)
    container = engine.containers.create(
        IMAGE, ["true"], volumes={volume.name: {"bind": "/data", "mode": "rw"}}, labels=LABEL
    )
    yield Task(engine, container.id, volume.name)
    container.remove(force=True)
    volume.remove(force=True)


@pytest.fixture
def deadline() -> float:
    return time.monotonic() + 120


# --- HTTP ---------------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    root: Path
    uploads: Path

    def log_message(self, *args: Any) -> None:
        pass

    def _file(self) -> Path | None:
        path = self.root / self.path.lstrip("/").split("?", 1)[0]
        return path if path.is_file() else None

    def do_GET(self) -> None:
        unsized = self.path.startswith("/unsized/")
        if unsized:
            self.path = self.path[len("/unsized") :]
        path = self._file()
        if path is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        if unsized:  # no Content-Length: the body ends when the connection closes
            self.send_header("Connection", "close")
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(path.stat().st_size))
        self.end_headers()
        with open(path, "rb") as f:
            shutil.copyfileobj(f, self.wfile, 1024 * 1024)

    def do_PUT(self) -> None:
        length = int(self.headers.get("Content-Length", "-1"))
        if length < 0:
            self.send_response(411)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        target = self.uploads / self.path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as f:
            left = length
            while left:
                data = self.rfile.read(min(left, 1024 * 1024))
                if not data:
                    break
                f.write(data)
                left -= len(data)
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()


@dataclass
class HttpServer:
    url: str
    root: Path
    uploads: Path


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[HttpServer]:
    root, uploads = tmp_path / "http-root", tmp_path / "http-uploads"
    root.mkdir()
    uploads.mkdir()
    handler = type("Handler", (_Handler,), {"root": root, "uploads": uploads})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield HttpServer(f"http://127.0.0.1:{server.server_address[1]}", root, uploads)
    server.shutdown()
    server.server_close()
    thread.join(10)


# --- FTP ----------------------------------------------------------------------------------

FTP_USER, FTP_PASSWORD = "tes", "ftp-secret-pw"


@dataclass
class FtpServer:
    url: str  # with the credentials
    root: Path


@pytest.fixture
def ftp_server(tmp_path: Path) -> Iterator[FtpServer]:
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler
    from pyftpdlib.servers import FTPServer

    root = tmp_path / "ftp-root"
    root.mkdir()
    authorizer = DummyAuthorizer()
    authorizer.add_user(FTP_USER, FTP_PASSWORD, str(root), perm="elradfmwMT")
    handler = type("Handler", (FTPHandler,), {"authorizer": authorizer, "passive_ports": None})
    server = FTPServer(("127.0.0.1", 0), handler)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            server.serve_forever(timeout=0.2, blocking=False, handle_exit=False)
        server.close_all()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    port = server.address[1]
    yield FtpServer(f"ftp://{FTP_USER}:{FTP_PASSWORD}@127.0.0.1:{port}", root)
    stop.set()
    thread.join(10)


# --- S3 -----------------------------------------------------------------------------------


@dataclass
class S3Server:
    config: S3Config
    bucket: str

    def client(self) -> Any:
        import boto3

        c = self.config
        return boto3.client(
            "s3",
            endpoint_url=c.endpoint_url,
            region_name=c.region,
            aws_access_key_id=c.access_key_id,
            aws_secret_access_key=c.secret_access_key,
        )


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_server(moto_server: str) -> S3Server:
    config = S3Config(endpoint_url=moto_server, access_key_id="AKIDTEST", secret_access_key="s3-secret-key")
    server = S3Server(config, f"bucket-{uuid.uuid4().hex[:10]}")
    server.client().create_bucket(Bucket=server.bucket)
    return server


# --- file roots ---------------------------------------------------------------------------


@pytest.fixture
def file_root(tmp_path: Path) -> Path:
    root = tmp_path / "allowed"
    root.mkdir()
    return root


@pytest.fixture
def storage(file_root: Path, s3_server: S3Server) -> StorageConfig:
    return StorageConfig(file_roots=(str(file_root),), transfer_threads=4, s3=s3_server.config)


def make_tree(root: Path) -> dict[str, bytes]:
    """A small tree with a nested and an empty directory; its files by relative path."""
    files = {
        "a.txt": b"alpha\n",
        "sub/b.bin": bytes(range(256)) * 3,
        "sub/deeper/c.txt": "ünïcode\n".encode(),
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (root / "empty").mkdir()
    os.chmod(root / "a.txt", 0o600)  # staged files are 0644 whatever the source says
    return files
