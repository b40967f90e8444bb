"""``GET /metrics``: the daemon's metrics in the Prometheus text format.

Served either on the API's listeners at ``<api prefix>/metrics`` (:class:`MetricsMount`
puts it beside the API), or, with ``metrics.listen``, only on listeners of its own
(:func:`metrics_only`), so that it can stay off the public port.  With ``metrics.access =
"admin"`` the request passes the API's guard first (:class:`ccserver.web.routes.Authorization`:
HTTP basic with a password or a token, of an admin user); ``"open"`` lets anyone read.

The text is made by ``prometheus_client`` (its encoder for what the ``Accept`` header
asks: the Prometheus text format or OpenMetrics) from the daemon's own registry, on a
thread pool: a scrape never encodes on the reactor thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET

from ccserver.web.errors import render_failure, write_json
from ccserver.web.root import JSONNotFound
from ccserver.web.routes import Authenticates, Authorization

log = Logger(namespace="ccserver.http")

T = TypeVar("T")

ADMIN_ONLY = Authorization(admin_only="read the metrics")


class Runs(Protocol):
    """A bounded thread pool (:class:`ccserver.threads.ThreadPoolService`)."""

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]: ...


class MetricsPage(Resource):
    isLeaf = True

    def __init__(self, registry: CollectorRegistry, auth: Authenticates, access: str, pool: Runs | None) -> None:
        """``access``: ``"open"`` or ``"admin"``; ``pool`` encodes the answer (inline without)."""
        super().__init__()
        if access not in ("open", "admin"):
            raise ValueError(f"metrics.access: expected 'open' or 'admin', got {access!r}")
        self.registry = registry
        self.auth = auth
        self.access = access
        self.pool = pool

    def render(self, request: Any) -> Any:
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET, HEAD")
            return write_json(request, 405, {"error": "method not allowed for this endpoint"})
        gone: list[Any] = []
        request.notifyFinish().addBoth(gone.append)
        d = Deferred.fromCoroutine(self._answer(request))

        def failed(failure: Failure) -> bytes:
            return render_failure(request, failure)

        def write(body: bytes) -> None:
            if gone:
                return  # the client left
            if request.method != b"HEAD":
                request.write(body)
            request.finish()

        d.addErrback(failed).addCallback(write)
        d.addErrback(lambda f: log.failure("answering {path}", f, path=request.path))
        return NOT_DONE_YET

    async def _answer(self, request: Any) -> bytes:
        if self.access == "admin":
            await ADMIN_ONLY.check(self, request)
        accept = request.getHeader(b"accept")
        encode, content_type = choose_encoder(accept.decode("latin-1") if accept else "")
        if self.pool is None:
            body = encode(self.registry)
        else:
            body = await self.pool.run(encode, self.registry)
        request.setResponseCode(200)
        request.setHeader(b"content-type", content_type.encode("ascii"))
        request.setHeader(b"content-length", b"%d" % len(body))
        return body


class MetricsMount(Resource):
    """``inner`` (the API's root resource), with ``page`` at ``<prefix>/metrics`` beside it."""

    def __init__(self, inner: IResource, page: IResource, prefix: str) -> None:
        super().__init__()
        self.inner = inner
        self.page = page
        self.path = [s.encode("utf-8") for s in prefix.strip("/").split("/") if s] + [b"metrics"]

    def getChildWithDefault(self, name: bytes, request: Any) -> IResource:
        # Site.getResourceFor has moved ``name`` from postpath to prepath already
        rest = self.path[1:]
        tail = request.postpath[len(rest) :]
        if name == self.path[0] and request.postpath[: len(rest)] == rest and tail in ([], [b""]):
            request.prepath.extend(request.postpath)
            del request.postpath[:]
            return self.page
        # not ours: the inner resource sees the whole path, as if this one were not there
        request.prepath.pop()
        request.postpath.insert(0, name)
        return self.inner

    def render(self, request: Any) -> Any:
        return self.inner.render(request)


def metrics_only(page: IResource) -> IResource:
    """The root of the metrics listeners: ``/metrics`` and nothing else."""
    return MetricsMount(JSONNotFound(), page, "")
