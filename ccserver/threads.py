"""Bounded thread pools that start and stop with the service tree.

All blocking work (Docker SDK calls, password hashing) goes through one of these pools with
``deferToThreadPool``; the reactor thread never blocks.  Each concern has its own pool so
that one cannot starve the other.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThread, deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

T = TypeVar("T")


class QueueTimeout(Exception):
    """Work waited in a pool's queue past its deadline and was dropped unstarted."""


class ThreadPoolService(Service):
    """A ``ThreadPool`` of at most ``size`` threads, named for logs and debuggers."""

    def __init__(self, reactor: IReactorThreads, name: str, size: int) -> None:
        self.reactor = reactor
        self.name = name
        self.pool = ThreadPool(minthreads=0, maxthreads=size, name=f"ccserver-{name}")

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        # Joining waits for queued work; do it on the reactor's own pool, which Twisted
        # stops only after the 'before shutdown' triggers (where this runs) have fired.
        pool = self.pool
        self.pool = ThreadPool(minthreads=0, maxthreads=pool.max, name=pool.name)
        return deferToThread(pool.stop)

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        return deferToThreadPool(self.reactor, self.pool, fn, *args, **kwargs)  # type: ignore[arg-type]

    def run_started_within(self, seconds: float, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        """``fn(*args)`` in the pool, or :class:`QueueTimeout` if no thread has taken it up within
        ``seconds`` (it then never runs).  Once started, it runs to its end: a thread cannot be
        interrupted, and what it computes is bounded by the input it was given."""
        lock = threading.Lock()
        state = {"started": False, "dropped": False}
        out: Deferred[T] = Deferred()

        def job() -> Any:
            with lock:
                if state["dropped"]:
                    return None
                state["started"] = True
            return fn(*args)

        def expire() -> None:
            with lock:
                if state["started"]:
                    return
                state["dropped"] = True
            out.errback(QueueTimeout(f"no {self.name} thread was free within {seconds:g} s"))

        timer = self.reactor.callLater(seconds, expire)  # type: ignore[attr-defined]

        def done(result: Any) -> None:
            if timer.active():
                timer.cancel()
            if not out.called:
                out.callback(result) if not isinstance(result, Failure) else out.errback(result)

        self.run(job).addBoth(done)
        return out
