"""A registry on loopback that serves one small image, so that a test can watch a real pull
(the engine pulls from ``127.0.0.1:PORT`` over plain HTTP; no registry is reachable here)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class TinyRegistry:
    """Serves ``<host>/<name>:<tag>``: one layer of ``layer_bytes`` random bytes (they do not
    compress, so the engine reports its download progress)."""

    def __init__(self, name: str, tag: str = "1", layer_bytes: int = 2_000_000) -> None:
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w") as tar:
            payload = os.urandom(layer_bytes)
            info = tarfile.TarInfo("noise.bin")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        tar_bytes = raw.getvalue()
        self.layer = gzip.compress(tar_bytes, compresslevel=1)
        config = {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/nothing"]},
            "rootfs": {"type": "layers", "diff_ids": [_digest(tar_bytes)]},
        }
        self.config = json.dumps(config).encode()
        self.manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": MANIFEST,
                "config": {
                    "mediaType": "application/vnd.docker.container.image.v1+json",
                    "size": len(self.config),
                    "digest": _digest(self.config),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                        "size": len(self.layer),
                        "digest": _digest(self.layer),
                    }
                ],
            }
        ).encode()
        self.name, self.tag = name, tag
        blobs = {_digest(self.config): self.config, _digest(self.layer): self.layer}
        paths: dict[str, tuple[bytes, str]] = {
            f"/v2/{name}/manifests/{tag}": (self.manifest, MANIFEST),
            f"/v2/{name}/manifests/{_digest(self.manifest)}": (self.manifest, MANIFEST),
        }
        for digest, blob in blobs.items():
            paths[f"/v2/{name}/blobs/{digest}"] = (blob, "application/octet-stream")
        self.requests: list[str] = []
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, body: bool) -> None:
                registry.requests.append(f"{self.command} {self.path}")
                if self.path in ("/v2", "/v2/"):
                    found: tuple[bytes, str] | None = (b"{}", "application/json")
                else:
                    found = paths.get(self.path)
                if found is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data, kind = found
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Docker-Content-Digest", _digest(data))
                self.send_header("Docker-Distribution-API-Version", "registry/2.0")
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def do_GET(self) -> None:
                self._answer(True)

            def do_HEAD(self) -> None:
                self._answer(False)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def image(self) -> str:
        return f"127.0.0.1:{self.port}/{self.name}:{self.tag}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
