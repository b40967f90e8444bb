"""The HTTP/1.1 connection: Twisted's ``HTTPChannel`` with answers where it only hangs up.

Twisted closes the connection without a word when a line is longer than ``MAX_LENGTH``,
answers a bare 400 to a head over ``totalHeadersSize``, lets a client take as long as it
likes over a request as long as it sends a byte before the idle timeout, and reads a body of
any declared length before the site can refuse it.  This channel answers those cases with a
JSON error and closes:

* 414 for a request line, 431 for headers, over ``max_header_bytes`` (line and headers together);
* 413 as soon as the headers declare a ``Content-Length`` over ``max_body_bytes`` (or a
  chunked body grows past it), without waiting for the body;
* 408 when the head did not arrive within ``header_timeout`` seconds of its first byte, or the
  body within ``body_timeout`` seconds of the end of the head (slowloris).

The idle timeout between requests is Twisted's own (``timeOut``, reset by every read).
After such an answer the channel stops reading requests, half-closes and discards what the
client still sends for at most :data:`LINGER_SECONDS`, so that the client reads the answer
instead of a reset.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.abstract import FileDescriptor
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.tcp import Connection
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import RESPONSES, HTTPChannel

log = Logger(namespace="ccserver.http")

#: how long a refused connection is drained before it is reset
LINGER_SECONDS = 2.0


class CCChannel(HTTPChannel):
    """Limits come from the site (``configure``) when the connection is built."""

    header_timeout: float | None = None
    body_timeout: float | None = None
    max_body_bytes = 0
    #: a head of a request is being received (its first line has come)
    _receiving = False
    _refused = False
    _deadline: IDelayedCall | None = None
    _linger: IDelayedCall | None = None

    def configure(
        self, *, max_header_bytes: int, max_body_bytes: int, header_timeout: float | None, body_timeout: float | None
    ) -> None:
        # one limit for the request line and the headers together, like Twisted's
        # totalHeadersSize; a single line can be no longer than the whole
        self.MAX_LENGTH = self.totalHeadersSize = max_header_bytes
        self.max_body_bytes = max_body_bytes
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout

    @property
    def processing(self) -> bool:
        """A request on this connection is being answered."""
        return bool(self._handlingRequest)

    # --- receiving ---------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._refused:
            return  # draining: the answer is sent
        if self._deadline is None and not self._handlingRequest and self.header_timeout:
            self._deadline = self.callLater(  # type: ignore[call-arg]  # TimeoutMixin.callLater is the reactor's, typed without *args
                self.header_timeout, self._too_slow, "head", self.header_timeout, "header_timeout_seconds"
            )
        super().dataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        if self._refused:
            return
        first = not self._receiving
        if self._receivedHeaderSize + len(line) > self.totalHeadersSize:
            self._too_big(first)
            return
        if line:
            self._receiving = True
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        self._too_big(not self._receiving)

    def allHeadersReceived(self) -> None:
        self._cancel_deadline()
        limit = self.max_body_bytes
        if limit and self.length is not None and self.length > limit:
            self.refuse(
                413,
                f"request body of {self.length} bytes is larger than the limit of {limit} bytes (max_body_bytes)",
            )
            return
        super().allHeadersReceived()
        if self.length != 0 and self.body_timeout and not self._refused:
            self._deadline = self.callLater(  # type: ignore[call-arg]  # TimeoutMixin.callLater is the reactor's, typed without *args
                self.body_timeout, self._too_slow, "body", self.body_timeout, "body_timeout_seconds"
            )

    def rawDataReceived(self, data: bytes) -> None:
        if self._refused:
            return
        super().rawDataReceived(data)

    def allContentReceived(self) -> None:
        if self._refused:
            return
        self._cancel_deadline()
        self._receiving = False
        super().allContentReceived()

    def body_too_large(self) -> None:
        """A body without a declared length (chunked) grew past ``max_body_bytes``."""
        self.refuse(413, f"request body is larger than the limit of {self.max_body_bytes} bytes (max_body_bytes)")

    def requestDone(self, request: Any) -> None:
        super().requestDone(request)
        site = getattr(self, "site", None)
        if site is not None and self.persistent:
            site.connection_ready(self)

    # --- refusing ----------------------------------------------------------------------------

    def _too_big(self, request_line: bool) -> None:
        limit = self.totalHeadersSize
        if request_line:
            self.refuse(414, f"request line is longer than the limit of {limit} bytes (max_header_bytes)")
        else:
            self.refuse(431, f"request headers are larger than the limit of {limit} bytes (max_header_bytes)")

    def _too_slow(self, part: str, seconds: float, key: str) -> None:
        self._deadline = None
        self.refuse(408, f"the request {part} did not arrive within {seconds:g} s ({key})")

    def refuse(self, code: int, message: str) -> None:
        """Answer ``code`` with ``{"error": message}`` and close, whatever is still coming."""
        if self._refused or self.transport is None:
            return
        self._refused = True
        self._cancel_deadline()
        self.setTimeout(None)
        self.clearLineBuffer()
        self.setRawMode()
        body = json.dumps({"error": message}).encode()
        head = (
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
            % (code, RESPONSES.get(code, b"Error"), len(body))
        )
        self.transport.write(head + body)
        site = getattr(self, "site", None)
        if site is not None:
            site.log_refusal(self, code, getattr(self, "_command", b"-"), getattr(self, "_path", b"-"))
            site.connection_closing(self)
        transport = self.transport
        if isinstance(transport, FileDescriptor):
            # a socket of the reactor (TLS has no half-close): a FIN after the answer; the
            # reset (with unread data) waits until the client had time to read it
            transport.loseWriteConnection()
            self._linger = self.callLater(LINGER_SECONDS, transport.abortConnection)  # type: ignore[attr-defined]  # every reactor socket has it (ITCPTransport)
        else:
            transport.loseConnection()

    def close_for_another(self) -> None:
        """The site needs this connection's place for a new one (it is not processing a
        request): its socket is closed now, not on the reactor's next turn, so that the file
        descriptor is free before the listener accepts again."""
        self._cancel_deadline()
        self.setTimeout(None)
        sock = _socket_of(self.transport)
        if sock is not None:
            # the socket's own end-of-connection handler: it closes the descriptor, tells the
            # protocols above it (TLS, this channel) and ignores a second call
            sock.connectionLost(Failure(ConnectionDone("closed to admit a new connection")))
        elif self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]  # TLS and TCP transports have it

    def timeoutConnection(self) -> None:
        # Twisted logs every idle timeout at info; hundreds of idle clients would flood the log
        peer = self.transport.getPeer() if self.transport is not None else None
        log.debug("closing an idle connection from {peer}", peer=str(peer))
        if self.abortTimeout is not None:
            self._abortingCall = self.callLater(self.abortTimeout, self.forceAbortClient)
        self.loseConnection()

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        self._cancel_deadline()
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        self._linger = None
        site = getattr(self, "site", None)
        if site is not None:
            site.connection_lost(self)
        super().connectionLost(reason)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None


def _socket_of(transport: Any) -> Connection | None:
    """The TCP connection under ``transport`` (itself, or the one under TLS)."""
    for _ in range(3):
        if isinstance(transport, Connection):
            return transport
        transport = getattr(transport, "transport", None)
    return None
