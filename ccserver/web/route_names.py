"""HTTP requests counted by route template (``/tasks/query``), never by raw path.

A raw path holds ids (and whatever a client makes up), so as a metric label it would grow
without bound.  The template of the Klein rule the path matches is a fixed set; a path no
rule matches is ``unmatched``, a static file (CC-UI) is ``static``.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import unquote

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, RequestRedirect

from ccserver.metrics import Metrics

UNMATCHED = "unmatched"
#: (method, path) pairs whose name is remembered (most requests go to a few fixed paths)
REMEMBERED = 4096
STATIC = "static"


class RouteNames:
    """The route template of a request path, for one site."""

    def __init__(self, url_map: Map, prefix: str, static: bool, fixed: Mapping[str, str] | None = None) -> None:
        """``prefix``: where the API is mounted (``server.api_prefix``); ``static``: paths
        outside it are static files; ``fixed``: full paths served outside the Klein
        application (``/cc/metrics``), each with its name (``/metrics``)."""
        self._adapter = url_map.bind("localhost", "/")
        self._prefix = prefix.rstrip("/")
        self._static = static
        self._known: dict[tuple[bytes | str, bytes | str], str] = {}
        self._fixed = {path.rstrip("/") or "/": name for path, name in (fixed or {}).items()}

    def name(self, method: bytes | str, path: bytes | str) -> str:
        key = (method, path)
        known = self._known.get(key)
        if known is None:
            known = self._name(method, path)
            if len(self._known) >= REMEMBERED:
                self._known.clear()  # paths with ids in them: bounded, start afresh
            self._known[key] = known
        return known

    def _name(self, method: bytes | str, path: bytes | str) -> str:
        text = path.decode("latin-1") if isinstance(path, bytes) else path
        text = unquote(text.split("?", 1)[0])
        fixed = self._fixed.get(text.rstrip("/") or "/")
        if fixed is not None:
            return fixed
        if self._prefix:
            if text != self._prefix and not text.startswith(self._prefix + "/"):
                return STATIC if self._static else UNMATCHED
            text = text[len(self._prefix) :] or "/"
        verb = method.decode("latin-1") if isinstance(method, bytes) else method
        try:
            rule, _ = self._adapter.match(text, method=verb, return_rule=True)
        except RequestRedirect:
            return UNMATCHED
        except HTTPException:  # NotFound, MethodNotAllowed
            return STATIC if self._static and not self._prefix else UNMATCHED
        return str(rule.rule)


class RequestMetrics:
    """What a :class:`~ccserver.web.site.CCSite` tells of each answered request, counted."""

    def __init__(self, metrics: Metrics, names: RouteNames) -> None:
        self.metrics = metrics
        self.names = names

    def request_done(self, method: bytes, path: bytes, status: int, seconds: float) -> None:
        self.metrics.http_request(method, self.names.name(method, path), status, seconds)
