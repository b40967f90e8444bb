"""Bounded thread pools that start and stop with the service tree.

All blocking work (Docker SDK calls, password hashing) goes through one of these pools with
``deferToThreadPool``; the reactor thread never blocks.  Each concern has its own pool so
that one cannot starve the other.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

log = Logger(namespace="ccserver.threads")

T = TypeVar("T")


class QueueTimeout(Exception):
    """Work waited in a pool's queue past its deadline and was dropped unstarted."""


class DaemonThreadPool(ThreadPool):
    """A ``ThreadPool`` whose threads do not keep the process alive: a Docker call that hangs
    in the kernel (an engine that stopped answering, a pull from a registry that never
    answers) must not hold up the exit once shutdown has given up on it."""

    threadFactory = functools.partial(threading.Thread, daemon=True)  # type: ignore[assignment]  # a Thread factory all the same


class ThreadPoolService(Service):
    """A ``ThreadPool`` of at most ``size`` threads, named for logs and debuggers.

    Stopping waits for the work under way for at most ``stop_timeout`` seconds; what is still
    running then is abandoned (its threads are daemon threads)."""

    def __init__(self, reactor: IReactorThreads, name: str, size: int, stop_timeout: float = 10.0) -> None:
        self.reactor = reactor
        self.name = name  # type: ignore[assignment]  # Twisted's Service has an untyped `name = None`
        self.stop_timeout = stop_timeout
        self.pool = DaemonThreadPool(minthreads=0, maxthreads=size, name=f"ccserver-{name}")

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        # Joining blocks until the queued work is done: it runs in a thread of its own (not
        # the reactor's pool, which Twisted joins without a bound at exit), and the wait for
        # it is bounded.
        pool = self.pool
        self.pool = DaemonThreadPool(minthreads=0, maxthreads=pool.max, name=pool.name)
        stopped: Deferred[None] = Deferred()

        def join() -> None:
            pool.stop()
            self.reactor.callFromThread(lambda: None if stopped.called else stopped.callback(None))

        threading.Thread(target=join, name=f"{pool.name}-stop", daemon=True).start()

        def abandon() -> None:
            if not stopped.called:
                log.warn(
                    "{name}: work still running after {s} s at shutdown is abandoned",
                    name=self.name,
                    s=self.stop_timeout,
                )
                stopped.callback(None)

        call = self.reactor.callLater(self.stop_timeout, abandon)  # type: ignore[attr-defined]

        def done(result: Any) -> Any:
            if call.active():
                call.cancel()
            return result

        stopped.addBoth(done)
        return stopped

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        return deferToThreadPool(self.reactor, self.pool, fn, *args, **kwargs)

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
