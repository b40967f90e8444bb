"""The Site: request body limit (413), one log line per request, idle-connection bookkeeping.

Everything a request needs before a route runs lives here, so the routes stay plain.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger
from twisted.web.http import REQUEST_ENTITY_TOO_LARGE
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

log = Logger(namespace="ccserver.http")


class _Discard(io.BytesIO):
    """A body buffer that drops what it is given: the request is refused already."""

    def write(self, data: bytes) -> int:  # type: ignore[override]  # only bytes arrive, not any Buffer
        return len(data)


class CCRequest(Request):
    """A request that knows when it started, who it was for, and whether its body was too big."""

    #: set by the authentication guard; only a user name, never a secret
    ccserver_user: str = "-"
    too_large: bool = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.started = time.monotonic()
        self._body_bytes = 0

    def _limit(self) -> int:
        # the channel's site is set by the factory (HTTPChannel does not declare it)
        return getattr(getattr(self.channel, "site", None), "max_body_bytes", 0) if self.channel else 0

    def gotLength(self, length: int | None) -> None:
        limit = self._limit()
        if limit and length is not None and length > limit:
            self.too_large = True
            self.content = _Discard()  # type: ignore[assignment]  # Twisted declares an untyped `content = None`
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.too_large:
            return
        self._body_bytes += len(data)
        limit = self._limit()
        if limit and self._body_bytes > limit:
            self.too_large = True
            self.content.close()  # type: ignore[attr-defined]  # Twisted declares an untyped `content = None`
            self.content = _Discard()  # type: ignore[assignment]  # Twisted declares an untyped `content = None`
            return
        super().handleContentChunk(data)

    def process(self) -> None:
        if self.too_large:
            self.setResponseCode(REQUEST_ENTITY_TOO_LARGE)
            self.setHeader(b"content-type", b"application/json")
            limit = self._limit()
            body = {"error": f"request body is larger than the limit of {limit} bytes (max_body_bytes)"}
            self.write(json.dumps(body).encode())
            self.finish()
            return
        super().process()


class CCSite(Site):
    requestFactory = CCRequest

    def __init__(
        self,
        resource: IResource,
        *,
        max_body_bytes: int,
        client_address: Callable[[Request], str] | None = None,
    ) -> None:
        # the API speaks JSON only: no form or multipart parsing of POST bodies (it also
        # spares a costly content-type parse per request)
        super().__init__(resource, parsePOSTFormSubmission=False)
        self.max_body_bytes = max_body_bytes
        self.client_address = client_address or (lambda r: _peer(r))
        # buildProtocol sets channel.site; keep a handle on open channels for shutdown
        self.channels: set[Any] = set()

    def buildProtocol(self, addr: Any) -> Any:
        channel = super().buildProtocol(addr)
        if channel is not None:
            channels = self.channels
            channels.add(channel)
            lost = channel.connectionLost

            def connectionLost(reason: Any) -> None:
                channels.discard(channel)
                lost(reason)

            channel.connectionLost = connectionLost
        return channel

    def log(self, request: Request) -> None:  # type: ignore[override]  # a Site only makes server.Requests
        # the query string is left out: nothing in ccserver's API uses one, and a client
        # could put a secret there
        path = request.path.decode("latin-1", "replace")
        log.info(
            "{method} {path} {status} user={user} client={client} {duration_ms:.1f}ms",
            method=request.method.decode("latin-1", "replace"),
            path=path,
            status=request.code,
            user=getattr(request, "ccserver_user", "-"),
            client=self.client_address(request),
            duration_ms=(time.monotonic() - getattr(request, "started", time.monotonic())) * 1000,
        )


def _peer(request: Request) -> str:
    address = request.getClientAddress()
    return getattr(address, "host", None) or str(address)
