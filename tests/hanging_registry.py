"""A registry that stalls, for tests of image pulls that hang (issue 9): a tiny HTTP server on
loopback that answers the engine's ``/v2/`` probe and then never answers."""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest


class HangingRegistry:
    """A registry on loopback that answers ``/v2/`` and then never answers: pulls hang."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.requests: list[str] = []
        self.release = threading.Event()
        self._threads: list[threading.Thread] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.release.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(120)
            try:
                while True:
                    head = b""
                    while b"\r\n\r\n" not in head:
                        chunk = conn.recv(4096)
                        if not chunk:
                            return
                        head += chunk
                    line = head.split(b"\r\n", 1)[0].decode("latin-1")
                    self.requests.append(line)
                    if line.split()[1] in ("/v2", "/v2/"):
                        conn.sendall(
                            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                            b"Docker-Distribution-API-Version: registry/2.0\r\nContent-Length: 2\r\n\r\n{}"
                        )
                        continue
                    self.release.wait(120)  # never answer (bounded, for the test's sake)
                    return
            except OSError:
                return

    def close(self) -> None:
        self.release.set()
        self.server.close()


@pytest.fixture
def registry() -> Any:
    hanging = HangingRegistry()
    yield hanging
    hanging.close()
