"""The site's root resource: the API under ``server.api_prefix``, CC-UI (``server.static_dir``)
around it.

With a prefix such as ``/cc`` (the default when ``static_dir`` is set: CC-UI looks for the
API at ``<its origin>/cc``), ``/cc/...`` is the API and everything else is a static file.
With an empty prefix and a static directory, the API keeps its own first path segments
(``/tasks``, ``/nodes``, ...) and the rest, ``/`` included, is static.  Without a static
directory, paths outside the prefix are a JSON 404 like any unknown API path.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from twisted.web.resource import IResource, Resource
from twisted.web.static import File


class StaticFiles(File):
    """``twisted.web.static.File`` without directory listings: a directory without an
    ``index.html`` is a 404, not a page that lists its files."""

    def directoryListing(self) -> IResource:
        return JSONNotFound()


class JSONNotFound(Resource):
    isLeaf = True

    def render(self, request: Any) -> bytes:
        request.setResponseCode(404)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"error": "no such endpoint"}).encode()


class Root(Resource):
    """Routes the first path segments to the API (a leaf resource) or the static files."""

    def __init__(
        self,
        api: IResource,
        prefix: str,
        static: IResource | None,
        api_segments: Iterable[str] = (),
    ) -> None:
        super().__init__()
        self.api = api
        self.prefix = [s.encode("utf-8") for s in prefix.strip("/").split("/") if s]
        self.static = static
        #: first path segments of the API, used only when the prefix is empty
        self.api_segments = frozenset(s.encode("utf-8") for s in api_segments)

    def getChildWithDefault(self, name: bytes, request: Any) -> IResource:
        # Site.getResourceFor has moved ``name`` from postpath to prepath already
        if self.prefix:
            rest = self.prefix[1:]
            if name == self.prefix[0] and request.postpath[: len(rest)] == rest:
                request.prepath.extend(request.postpath[: len(rest)])
                del request.postpath[: len(rest)]
                return self.api
        elif self.static is None or name in self.api_segments:
            # the API sees the whole path: put the segment back
            request.prepath.pop()
            request.postpath.insert(0, name)
            return self.api
        if self.static is not None:
            return self.static.getChildWithDefault(name, request)
        return JSONNotFound()

    def render(self, request: Any) -> Any:
        if self.static is not None:
            return self.static.render(request)
        if not self.prefix:
            return self.api.render(request)
        return JSONNotFound().render(request)


def build_root(api: IResource, prefix: str, static_dir: str | None, api_segments: Iterable[str]) -> IResource:
    """The resource to serve: just ``api`` in the plain case (no prefix, no static files)."""
    if not prefix.strip("/") and not static_dir:
        return api
    static = StaticFiles(static_dir) if static_dir else None
    return Root(api, prefix, static, api_segments)
