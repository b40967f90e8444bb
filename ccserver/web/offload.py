"""Where the CPU work of a request runs: on the reactor thread when it is small, else in a pool.

Parsing, validating and turning an 8 MiB batch into documents takes seconds of CPU; on the
reactor thread that is seconds during which no other request is answered, not even ``GET /``.
:class:`RequestWork` runs such work in a small bounded pool (``server.body_threads``) when the
body is larger than ``server.inline_body_bytes``, and inline otherwise, where a thread hop
would cost more than the work.  The same functions run either way, so answers and error
messages do not depend on the path taken.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.failure import Failure

from ccserver.threads import QueueTimeout, ThreadPoolService
from ccserver.web.errors import Busy

T = TypeVar("T")

#: large work that no pool thread has taken up within this many seconds is answered 503
QUEUE_SECONDS = 30.0


class RequestWork:
    def __init__(self, pool: ThreadPoolService | None, inline_bytes: int, queue_seconds: float = QUEUE_SECONDS) -> None:
        """``pool`` None runs everything inline (a site without a pool: some unit tests)."""
        self.pool = pool
        self.inline_bytes = inline_bytes
        self.queue_seconds = queue_seconds

    def large(self, size: int) -> bool:
        return self.pool is not None and size > self.inline_bytes

    def run(self, size: int, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        """``fn(*args)`` for work about ``size`` bytes large, inline or in the pool."""
        if not self.large(size):
            return maybeDeferred(fn, *args)
        return self.run_large(fn, *args)

    def run_large(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        """``fn(*args)`` in the pool (inline without one); 503 if it waits too long for a thread."""
        if self.pool is None:
            return maybeDeferred(fn, *args)
        d = self.pool.run_started_within(self.queue_seconds, fn, *args)
        d.addErrback(_busy)
        return d


def _busy(failure: Failure) -> Failure:
    failure.trap(QueueTimeout)
    raise Busy("the server is busy with other large requests; try again later")
