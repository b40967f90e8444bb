"""Bounded thread pools that start and stop with the service tree.

All blocking work (Docker SDK calls, password hashing) goes through one of these pools with
``deferToThreadPool``; the reactor thread never blocks.  Each concern has its own pool so
that one cannot starve the other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThread, deferToThreadPool
from twisted.python.threadpool import ThreadPool

T = TypeVar("T")


class ThreadPoolService(Service):
    """A ``ThreadPool`` of at most ``size`` threads, named for logs and debuggers."""

    def __init__(self, reactor: IReactorThreads, name: str, size: int) -> None:
        self.reactor = reactor
        self.name = name  # type: ignore[assignment]  # Twisted's Service has an untyped `name = None`
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
        return deferToThreadPool(self.reactor, self.pool, fn, *args, **kwargs)
