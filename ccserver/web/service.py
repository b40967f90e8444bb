"""Listening for HTTP(S) and closing down gently."""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import deferLater
from twisted.logger import Logger

from ccserver.web.site import CCSite, RefusingFactory

log = Logger(namespace="ccserver.web")


class WebService(Service):
    """Listens on endpoint strings with one ``CCSite``.

    ``listen(endpoints)`` is called by the parent once the endpoints are known (they may
    depend on the Docker bridge gateway).  ``stopService`` stops listening, lets requests
    in flight finish for at most ``shutdown_timeout`` seconds, then closes every connection.
    """

    name = "web"  # type: ignore[assignment]  # Twisted's Service has an untyped `name = None`

    def __init__(self, reactor: Any, site: CCSite, shutdown_timeout: float, name: str = "web") -> None:
        """``name``: of the service, and the head of its "listening on" lines unless ``web``."""
        self.name = name
        self.reactor = reactor
        self.site = site
        self.shutdown_timeout = shutdown_timeout
        self.ports: list[Any] = []

    @inlineCallbacks
    def listen(self, endpoints: tuple[str, ...]) -> Any:
        for description in endpoints:
            endpoint = serverFromString(self.reactor, description)
            # TLS wraps the site in a factory that cannot take "refused" (None) for an answer
            tls = description.split(":", 1)[0] == "ssl"
            port = yield endpoint.listen(RefusingFactory(self.site) if tls else self.site)
            self.ports.append((description.split(":", 1)[0], port))
            address = port.getHost()
            # the API's line keeps its format (JSON log readers match on it)
            fmt = (
                "listening on {kind}:{host}:{port}"
                if self.name == "web"
                else "{what}: listening on {kind}:{host}:{port}"
            )
            log.info(
                fmt,
                what=self.name,
                kind=description.split(":", 1)[0],
                host=getattr(address, "host", address),
                port=getattr(address, "port", ""),
            )

    def bound(self) -> list[tuple[str, int]]:
        """(kind, port) of each open listener, kind ``tcp`` or ``ssl``, in opening order."""
        return [(kind, port.getHost().port) for kind, port in self.ports]

    @inlineCallbacks
    def stopService(self) -> Any:
        super().stopService()
        ports, self.ports = self.ports, []
        yield DeferredList([Deferred.fromCoroutine(_stop(p)) for _, p in ports])
        deadline = self.reactor.seconds() + self.shutdown_timeout
        while self.site.channels and self.reactor.seconds() < deadline:
            for channel in list(self.site.channels):
                http, transport = _unwrap(channel)
                if transport is not None and not getattr(http, "requests", None):
                    transport.loseConnection()  # idle keep-alive connection
            yield deferLater(self.reactor, 0.05, lambda: None)
        for channel in list(self.site.channels):
            log.warn("closing a connection with a request still running at shutdown")
            _, transport = _unwrap(channel)
            if transport is not None:
                transport.abortConnection()


async def _stop(port: Any) -> None:
    result = port.stopListening()
    if isinstance(result, Deferred):
        await result


def _unwrap(channel: Any) -> tuple[Any, Any]:
    """The HTTP/1.1 channel and its transport behind Twisted's protocol-negotiating wrapper
    (``_GenericHTTPChannelProtocol`` keeps the real channel in ``_channel``)."""
    http = getattr(channel, "_channel", channel)
    return http, getattr(http, "transport", None)
