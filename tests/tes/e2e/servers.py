"""The storage servers of the TES end-to-end tests, on the Docker bridge gateway so that both
this process and the containers reach them: an HTTP server (GET below a directory, PUT kept in
memory) and an FTP server (pyftpdlib, one user, read and write below a directory)."""

from __future__ import annotations

import functools
import logging
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import ThreadedFTPServer

#: the largest body a PUT may send here
MAX_PUT_BYTES = 64 * 1024 * 1024
FTP_USER, FTP_PASSWORD = "ftp-user", "ftp-secret-pw-42"
logging.getLogger("pyftpdlib").setLevel(logging.WARNING)


class HttpFiles:
    """GET serves the files below ``root``; PUT /NAME... is kept in ``uploads`` by path."""

    def __init__(self, host: str, root: Path) -> None:
        self.uploads: dict[str, bytes] = {}
        self.lock = threading.Lock()
        files = self

        class Handler(SimpleHTTPRequestHandler):
            def do_PUT(self) -> None:  # noqa: N802
                length = int(self.headers.get("content-length") or 0)
                if self.headers.get("transfer-encoding", "").lower() == "chunked":
                    body = self._chunked()
                elif length > MAX_PUT_BYTES:
                    self.send_error(413)
                    return
                else:
                    body = self.rfile.read(length)
                with files.lock:
                    files.uploads[self.path] = body
                self.send_response(201)
                self.send_header("content-length", "0")
                self.end_headers()

            def _chunked(self) -> bytes:
                parts, total = [], 0
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline()
                        return b"".join(parts)
                    total += size
                    if total > MAX_PUT_BYTES:
                        raise ValueError("too large")
                    parts.append(self.rfile.read(size))
                    self.rfile.readline()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), functools.partial(Handler, directory=str(root)))
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def uploaded(self, path: str) -> bytes | None:
        with self.lock:
            return self.uploads.get(path)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class FtpFiles:
    """An FTP server with one user whose home is ``root`` (read and write)."""

    def __init__(self, host: str, root: Path) -> None:
        authorizer = DummyAuthorizer()
        authorizer.add_user(FTP_USER, FTP_PASSWORD, str(root), perm="elradfmwMT")
        handler = type("Handler", (FTPHandler,), {"authorizer": authorizer, "banner": "ccserver tests"})
        handler.log_prefix = "ftp %(username)s@%(remote_ip)s"
        self.server = ThreadedFTPServer((host, 0), handler)
        self.url = f"ftp://{FTP_USER}:{FTP_PASSWORD}@{host}:{self.server.address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"timeout": 0.5, "handle_exit": False}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.close_all()
        self.thread.join(10)
