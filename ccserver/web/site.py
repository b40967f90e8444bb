"""The Site: request limits, one log line per request, and the connections it holds.

Everything a request needs before a route runs lives here and in :mod:`ccserver.web.channel`,
so the routes stay plain.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from typing import Protocol as Interface

from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.web import http
from twisted.web.http import NOT_FOUND
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

from ccserver.logs import printable
from ccserver.web.channel import CCChannel
from ccserver.web.connections import Budget, ConnectionTable

log = Logger(namespace="ccserver.http")

#: an encoded slash or backslash in a path: routing would see a separator the client hid
_ENCODED_SEPARATOR = re.compile(rb"%(2f|5c)", re.IGNORECASE)
#: at most one "connection limit reached" line per this many seconds
LIMIT_LOG_INTERVAL = 60.0


@dataclass(frozen=True)
class Limits:
    """The ``[server]`` connection limits (see docs/configuration.rst); ``budget`` is
    ``max_connections`` fitted to the open-file limit (:func:`ccserver.web.connections.budget`)."""

    budget: Budget = field(default_factory=lambda: Budget(1024, 1152, 1024))
    max_connections_per_client: int = 256
    idle_timeout: float | None = 60.0
    header_timeout: float | None = 20.0
    body_timeout: float | None = 60.0
    max_header_bytes: int = 32768
    #: addresses the per-client cap does not apply to (trusted proxies)
    exempt: Callable[[str], bool] = lambda host: False


class RequestObserver(Interface):
    """What hears of each answered request (``ccserver.web.route_names.RequestMetrics``)."""

    def request_done(self, method: bytes, path: bytes, status: int, seconds: float) -> None: ...


class CCRequest(Request):
    """A request that knows when it started and who it was for."""

    #: set by the authentication guard; only a user name, never a secret
    ccserver_user: str = "-"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.started = time.monotonic()
        self._body_bytes = 0
        self._too_large = False

    def handleContentChunk(self, data: bytes) -> None:
        # a declared Content-Length over the limit is refused by the channel before any body
        # comes; a chunked body is counted here
        if self._too_large:
            return
        self._body_bytes += len(data)
        limit = getattr(self.channel, "max_body_bytes", 0) if self.channel else 0
        if limit and self._body_bytes > limit:
            self._too_large = True
            self.channel.body_too_large()  # type: ignore[attr-defined]  # the channel is a CCChannel (CCSite.protocol)
            return
        super().handleContentChunk(data)

    def process(self) -> None:
        path = self.uri.split(b"?", 1)[0]
        if _ENCODED_SEPARATOR.search(path):
            self.setResponseCode(NOT_FOUND)
            self.setHeader(b"content-type", b"application/json")
            error = {"error": "no such resource: a path must not contain an encoded slash or backslash (%2F, %5C)"}
            body = json.dumps(error).encode()
            self.setHeader(b"content-length", b"%d" % len(body))
            self.write(body)
            self.finish()
            return
        super().process()


class CCSite(Site):
    requestFactory = CCRequest
    protocol = CCChannel  # type: ignore[assignment]  # plain HTTP/1.1 channels: no h2 negotiation wrapper

    def __init__(
        self,
        resource: IResource,
        *,
        max_body_bytes: int,
        client_address: Callable[[Request], str] | None = None,
        limits: Limits | None = None,
        reactor: Any = None,
        requests: RequestObserver | None = None,
    ) -> None:
        """``requests`` hears of every answered request (the daemon's HTTP metrics)."""
        limits = limits or Limits()
        self.requests = requests
        # the API speaks JSON only: no form or multipart parsing of POST bodies (it also
        # spares a costly content-type parse per request)
        super().__init__(resource, parsePOSTFormSubmission=False, timeout=limits.idle_timeout, reactor=reactor)
        self.max_body_bytes = max_body_bytes
        self.limits = limits
        self.client_address = client_address or (lambda r: _peer(r))
        self.connections: ConnectionTable[CCChannel] = ConnectionTable(
            limits.budget, limits.max_connections_per_client, lambda c: c.processing, limits.exempt
        )
        self._limit_logged = float("-inf")
        self._closed_for_others = 0
        self._refused = 0

    @property
    def channels(self) -> ConnectionTable[CCChannel]:
        """The open connections (for shutdown)."""
        return self.connections

    def buildProtocol(self, addr: Any) -> Any:
        host = str(getattr(addr, "host", addr))
        victims = self.connections.admit(host)
        if victims is None:
            self._refused += 1
            self._log_limit()
            return None  # the listening port closes the socket at once
        for victim in victims:
            self.connections.closing(victim)
            victim.close_for_another()
        if victims:
            self._closed_for_others += len(victims)
            self._log_limit()
        channel = super().buildProtocol(addr)
        limits = self.limits
        channel.configure(
            max_header_bytes=limits.max_header_bytes,
            max_body_bytes=self.max_body_bytes,
            header_timeout=limits.header_timeout,
            body_timeout=limits.body_timeout,
        )
        self.connections.add(channel, host)
        return channel

    def _log_limit(self) -> None:
        now = self.reactor.seconds()
        if now - self._limit_logged < LIMIT_LOG_INTERVAL:
            return
        self._limit_logged = now
        log.warn(
            "connection limits reached ({cap} in all, {per_client} per client): {closed} idle connections "
            "closed for new ones, {refused} refused, since the last such message",
            cap=self.limits.budget.cap,
            per_client=self.limits.max_connections_per_client,
            closed=self._closed_for_others,
            refused=self._refused,
        )
        self._closed_for_others = self._refused = 0

    # --- told by the channels ----------------------------------------------------------------

    def connection_ready(self, channel: CCChannel) -> None:
        self.connections.ready(channel)

    def connection_closing(self, channel: CCChannel) -> None:
        self.connections.closing(channel)

    def connection_lost(self, channel: CCChannel) -> None:
        self.connections.remove(channel)

    # --- the request log ---------------------------------------------------------------------

    def log(self, request: http.Request) -> None:
        # the query string is left out: nothing in ccserver's API uses one, and a client
        # could put a secret there
        seconds = time.monotonic() - getattr(request, "started", time.monotonic())
        if self.requests is not None:
            self.requests.request_done(request.method, request.path, request.code, seconds)
        self._log_line(
            request.method,
            request.path,
            request.code,
            getattr(request, "ccserver_user", "-"),
            self.client_address(request),  # type: ignore[arg-type]  # the site's requests are CCRequests
            seconds,
        )

    def log_refusal(self, channel: CCChannel, code: int, method: bytes, path: bytes) -> None:
        """A request the channel answered itself (too large, too slow) before it was complete."""
        peer = channel.transport.getPeer() if channel.transport is not None else None
        if self.requests is not None:
            self.requests.request_done(method, path.split(b"?", 1)[0], code, 0.0)
        self._log_line(method, path.split(b"?", 1)[0], code, "-", str(getattr(peer, "host", peer)), 0.0)

    def _log_line(self, method: bytes, path: bytes, code: int, user: str, client: str, seconds: float) -> None:
        # every value may come from the client: escaped, so none can forge a line or a terminal
        # sequence; a request line too long to log is cut
        log.info(
            "{method} {path} {status} user={user} client={client} {duration_ms:.1f}ms",
            method=printable(method[:64]),
            path=printable(path[:2048]),
            status=code,
            user=printable(user),
            client=printable(client),
            duration_ms=seconds * 1000,
        )


class RefusingFactory(Factory):
    """Puts ``site`` behind a wrapping factory (TLS) that cannot take ``None`` from
    ``buildProtocol``: a refused connection gets a protocol that closes it at once."""

    def __init__(self, site: CCSite) -> None:
        self.site = site

    def doStart(self) -> None:
        self.site.doStart()

    def doStop(self) -> None:
        self.site.doStop()

    def logPrefix(self) -> str:
        return self.site.logPrefix()

    def buildProtocol(self, addr: Any) -> Protocol:
        return self.site.buildProtocol(addr) or _Refused()


class _Refused(Protocol):
    def connectionMade(self) -> None:
        self.transport.abortConnection()  # type: ignore[union-attr]  # connected: a TCP or TLS transport


def _peer(request: Request) -> str:
    address = request.getClientAddress()
    return getattr(address, "host", None) or str(address)
