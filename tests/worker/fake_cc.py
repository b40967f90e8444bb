"""A small HTTP server that plays ccserver (callbacks) and a data archive (inputs, results) for the worker tests.

Routes (a leading /basic or /digest demands that auth with USER / PASSWORD first):
  POST /callback          records the JSON body; answers `answers[callback_type]` (status, body) or
                          200 with `works[container_id]` (else `work`) for type 0 and {} otherwise
  GET  /files/<name>      the bytes of files[name], 404 otherwise
  PUT|POST /results/<n>   records (method, name, headers, body) in `uploads`
  GET  /                  200 (the inspection URL)
  GET  /status/<code>     answers that status
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

USER = "archive-user"
PASSWORD = "archive-pass-7f3a"
REALM = "cc-test"


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


class FakeCC:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.work: dict[str, Any] = {}
        self.works: dict[str, dict[str, Any]] = {}  # container_id -> answer to its callback 0
        self.answers: dict[int, tuple[int, Any]] = {}
        self.files: dict[str, bytes] = {}
        self.callbacks: list[dict[str, Any]] = []
        self.callback_attempts = 0
        self.uploads: list[dict[str, Any]] = []
        self.nonces: set[str] = set()
        self.cond = threading.Condition()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = b""
                    while True:
                        size = int(self.rfile.readline().strip() or b"0", 16)
                        if size == 0:
                            self.rfile.readline()
                            return data
                        data += self.rfile.read(size)
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _send(self, status: int, body: bytes = b"", ctype: str = "application/json", **headers: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name.replace("_", "-"), value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _authorized(self, kind: str) -> bool:
                header = self.headers.get("Authorization", "")
                if kind == "basic":
                    import base64

                    expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
                    if header == expected:
                        return True
                    self._send(401, b"{}", WWW_Authenticate=f'Basic realm="{REALM}"')
                    return False
                if header.startswith("Digest ") and self._digest_ok(header[7:]):
                    return True
                nonce = secrets.token_hex(16)
                fake.nonces.add(nonce)
                self._send(
                    401, b"{}", WWW_Authenticate=f'Digest realm="{REALM}", nonce="{nonce}", qop="auth", algorithm=MD5'
                )
                return False

            def _digest_ok(self, value: str) -> bool:
                fields = {}
                for part in value.split(","):
                    if "=" in part:
                        k, v = part.strip().split("=", 1)
                        fields[k] = v.strip('"')
                if fields.get("username") != USER or fields.get("nonce") not in fake.nonces:
                    return False
                ha1 = _md5(f"{USER}:{REALM}:{PASSWORD}")
                ha2 = _md5(f"{self.command}:{fields.get('uri')}")
                expected = _md5(f"{ha1}:{fields['nonce']}:{fields.get('nc')}:{fields.get('cnonce')}:auth:{ha2}")
                return fields.get("response") == expected

            def _route(self) -> str | None:
                path = self.path.split("?", 1)[0]
                for kind in ("basic", "digest"):
                    if path.startswith(f"/{kind}/"):
                        if not self._authorized(kind):
                            self._body()
                            return None
                        return path[len(kind) + 1 :]
                return path

            def do_GET(self) -> None:
                path = self._route()
                if path is None:
                    return
                if path == "/":
                    self._send(200, b'{"ok": true}')
                elif path.startswith("/status/"):
                    self._send(int(path.rsplit("/", 1)[1]), b"{}")
                elif path.startswith("/files/") and path[7:] in fake.files:
                    self._send(200, fake.files[path[7:]], "application/octet-stream")
                else:
                    self._send(404, b"{}")

            def do_PUT(self) -> None:
                self.do_POST()

            def do_POST(self) -> None:
                path = self._route()
                if path is None:
                    return
                body = self._body()
                if path == "/callback":
                    self._callback(body)
                elif path.startswith("/results/"):
                    with fake.cond:
                        fake.uploads.append(
                            {"method": self.command, "name": path[9:], "body": body, "headers": dict(self.headers)}
                        )
                        fake.cond.notify_all()
                    self._send(200, b"{}")
                else:
                    self._send(404, b"{}")

            def _callback(self, raw: bytes) -> None:
                body = json.loads(raw)
                with fake.cond:
                    fake.callback_attempts += 1
                    ctype = body.get("callback_type")
                    work = fake.works.get(body.get("container_id"), fake.work)
                    status, answer = fake.answers.get(ctype, (200, work if ctype == 0 else {}))
                    if status < 400:
                        fake.callbacks.append(body)
                    fake.cond.notify_all()
                self._send(status, json.dumps(answer).encode())

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.host, self.port = self.server.server_address[:2]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> FakeCC:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def wait_for(self, predicate: Any, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
            return True

    def settings(self, container_type: str = "application", container_id: str = "ac0123456789") -> dict[str, Any]:
        return {
            "container_type": container_type,
            "container_id": container_id,
            "callback_key": "cbkey-" + secrets.token_hex(8),
            "callback_url": self.url + "/callback",
        }

    def callbacks_of(self, container_id: str) -> list[dict[str, Any]]:
        with self.cond:
            return [c for c in self.callbacks if c.get("container_id") == container_id]

    def uploaded(self, name: str) -> list[dict[str, Any]]:
        return [u for u in self.uploads if u["name"] == name]
