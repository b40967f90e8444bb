"""What one part of the service tree needs from another that exists only later.

``CCServer`` builds its collaborators in order and hands each to the next one's constructor.
Two things do not fit that order: the address containers call back at is known only once the
listeners are bound, and the scheduler — which wants to hear about wake-ups and about the
engines' events — is built after the life cycle, the callbacks and the cluster that report
them.  Both are small objects made first and passed in, so that reading a constructor tells
everything an object depends on, and nothing is patched onto an object after it is built.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class CallbackAddress:
    """The base URL containers call back at; ``None`` until the daemon listens."""

    def __init__(self, value: str | None = None) -> None:
        self._value = value

    def get(self) -> str | None:
        return self._value

    def set(self, value: str) -> None:
        self._value = value


class Wakeup:
    """ "Run a scheduling round soon": asked by the life cycle, the callbacks and the cluster,
    answered by whoever subscribed (the scheduler, when it is built)."""

    def __init__(self) -> None:
        self._handlers: list[Callable[[], None]] = []

    def __call__(self) -> None:
        for handler in self._handlers:
            handler()

    def subscribe(self, handler: Callable[[], None]) -> None:
        self._handlers.append(handler)


class ClusterListener(Protocol):
    """What hears about the nodes (engines and clusters): containers that run (clusters),
    containers that ended, containers that could not run, nodes found dead or healthy."""

    def container_running(self, node: str, name: str) -> None:
        """A cluster's pod runs container ``name`` (engines do not report this: the log
        follower reads their event streams itself)."""
        ...

    def container_died(self, node: str, name: str, code: int, owner: str | None) -> None: ...

    def container_stuck(self, node: str, name: str, reason: str) -> None:
        """Container ``name`` could not run on ``node`` (a cluster's pod Pending too long, or
        an image it may not pull) and is gone already; ``reason`` says why."""
        ...

    def node_dead(self, node: str) -> None: ...

    def node_healthy(self, node: str) -> None: ...
