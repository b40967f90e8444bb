"""The dashboard's static files (``ccserver/web/ui``), served from memory at ``<prefix>/ui/``.

The files are read once when the API is built (before the reactor runs; they are a few tens
of kilobytes), so a request never touches the file system and no path a client sends can
reach a file outside the set.  Every answer carries a strict Content-Security-Policy: scripts,
styles and connections only from this origin, no inline script or style, no frames, forms
only to this origin."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.web.resource import Resource

UI_DIR = Path(__file__).resolve().parent / "ui"

CONTENT_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
    ".png": b"image/png",
}

CONTENT_SECURITY_POLICY = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

HEADERS = {
    b"content-security-policy": CONTENT_SECURITY_POLICY,
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"no-referrer",
    b"x-frame-options": b"DENY",
    b"cache-control": b"no-cache",
}


def load(directory: Path = UI_DIR) -> dict[str, tuple[bytes, bytes]]:
    """``relative path → (content, content type)`` of every servable file under ``directory``."""
    files: dict[str, tuple[bytes, bytes]] = {}
    for path in sorted(directory.rglob("*")):
        kind = CONTENT_TYPES.get(path.suffix)
        if path.is_file() and kind is not None:
            files[path.relative_to(directory).as_posix()] = (path.read_bytes(), kind)
    if "index.html" not in files:
        raise FileNotFoundError(f"the dashboard's files are missing: no index.html in {directory}")
    return files


class DashboardFiles(Resource):
    """A leaf: ``postpath`` names the file; ``""`` is ``index.html``."""

    isLeaf = True

    def __init__(self, files: dict[str, tuple[bytes, bytes]]) -> None:
        super().__init__()
        self.files = files

    def render(self, request: Any) -> bytes:
        for header, value in HEADERS.items():
            request.setHeader(header, value)
        if request.method not in (b"GET", b"HEAD"):
            request.setResponseCode(405)
            request.setHeader(b"allow", b"GET, HEAD")
            request.setHeader(b"content-type", b"application/json")
            return b'{"error": "method not allowed for this endpoint"}'
        path = request.uri.split(b"?", 1)[0]
        if not path.endswith(b"/") and request.postpath in ([], [b""]):
            # ".../ui" without the slash: the page's relative URLs need it
            request.setResponseCode(301)
            request.setHeader(b"location", path.rsplit(b"/", 1)[-1] + b"/")
            return b""
        name = "/".join(s.decode("utf-8", "replace") for s in request.postpath) or "index.html"
        found = self.files.get(name)
        if found is None:
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"application/json")
            return b'{"error": "no such file of the dashboard"}'
        body, kind = found
        request.setHeader(b"content-type", kind)
        request.setHeader(b"content-length", b"%d" % len(body))
        return b"" if request.method == b"HEAD" else body
