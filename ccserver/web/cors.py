"""Cross-origin access to the API for browser clients such as CC-UI served from elsewhere.

CC-UI calls the API from its own origin with ``Authorization`` and ``Content-Type:
application/json`` headers, so a browser sends a preflight ``OPTIONS`` first.  Only origins
listed in ``server.cors_origins`` get CORS headers (``"*"`` lists every origin); for any other
origin the answer carries none, and the browser keeps the page from reading it.

The allowed origin is echoed rather than answered with ``*``, so the same answer works for
requests with and without credentials; ``Vary: Origin`` keeps caches from mixing answers.
Credentialed requests (``Access-Control-Allow-Credentials``) are allowed only for origins
listed by name: with ``"*"`` any web page could otherwise ride on credentials a browser
remembered for the API.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from twisted.web.resource import IResource, Resource

ALLOWED_METHODS = b"GET, POST, OPTIONS"
ALLOWED_HEADERS = b"Authorization, Content-Type"
#: seconds a browser may reuse a preflight answer (browsers cap this at 2 h or less)
MAX_AGE = b"3600"


class CORSPolicy:
    """Which origins may read answers; ``"*"`` among ``origins`` allows every origin."""

    def __init__(self, origins: Iterable[str]) -> None:
        listed = [o.rstrip("/") for o in origins]
        self.any_origin = "*" in listed
        self.named = frozenset(o.encode("utf-8") for o in listed if o != "*")

    @property
    def enabled(self) -> bool:
        return self.any_origin or bool(self.named)

    def allows(self, origin: bytes | None) -> bool:
        if not origin:
            return False
        return self.any_origin or origin in self.named

    def decorate(self, request: Any) -> bool:
        """Add the headers of an actual (non-preflight) answer; ``True`` when allowed."""
        if not self.enabled:
            return False
        request.setHeader(b"vary", b"Origin")
        origin = request.getHeader(b"origin")
        if not self.allows(origin):
            return False
        request.setHeader(b"access-control-allow-origin", origin)
        if origin in self.named:
            request.setHeader(b"access-control-allow-credentials", b"true")
        return True


class CORSResource(Resource):
    """Wraps the API resource (a Klein leaf): answers every ``OPTIONS`` itself with 204 and
    adds CORS headers to the answers of allowed origins."""

    isLeaf = True

    def __init__(self, wrapped: IResource, policy: CORSPolicy) -> None:
        super().__init__()
        self.wrapped = wrapped
        self.policy = policy

    def render(self, request: Any) -> Any:
        allowed = self.policy.decorate(request)
        if request.method == b"OPTIONS":
            request.setResponseCode(204)
            request.setHeader(b"allow", ALLOWED_METHODS)
            if allowed:
                request.setHeader(b"access-control-allow-methods", ALLOWED_METHODS)
                request.setHeader(b"access-control-allow-headers", ALLOWED_HEADERS)
                request.setHeader(b"access-control-max-age", MAX_AGE)
            return b""
        return self.wrapped.render(request)
