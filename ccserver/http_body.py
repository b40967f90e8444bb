"""Reading a whole HTTP response body through Twisted's ``Agent``, with a size bound.

Used where an answer is parsed whole (the Docker engines' answers of the live-log follower,
the Kubernetes API's): a body beyond the bound is refused and its connection dropped, so a
peer cannot make the daemon hold an unbounded answer.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IResponse


class _Collect(Protocol):
    """A body, read whole, refused beyond ``limit`` bytes (the connection is dropped)."""

    def __init__(self, limit: int, error: Callable[[str], Exception]) -> None:
        self.limit = limit
        self.error = error
        self.parts: list[bytes] = []
        self.size = 0
        self.done: Deferred[bytes] = Deferred(self._cancel)

    def _cancel(self, _: Deferred[bytes]) -> None:
        if self.transport is not None:
            self.transport.stopProducing()  # type: ignore[attr-defined]  # a producer: the body's transport

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted's name)
        self.size += len(data)
        if self.size > self.limit:
            if not self.done.called:
                self.done.errback(self.error(f"answer larger than {self.limit} bytes"))
            self._cancel(self.done)
            return
        self.parts.append(data)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]  # noqa: N802
        if self.done.called:
            return
        if reason is not None and reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self.parts))
        else:
            self.done.errback(reason or self.error("connection lost"))


def read_bounded(response: IResponse, limit: int, error: Callable[[str], Exception]) -> Deferred[bytes]:
    """The whole body of ``response``; ``error(text)`` is the exception when it is larger
    than ``limit`` bytes or the connection is lost before its end.  Cancelling the Deferred
    drops the connection."""
    collect = _Collect(limit, error)
    response.deliverBody(collect)
    return collect.done
