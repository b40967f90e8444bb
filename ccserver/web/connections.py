"""How many connections the daemon holds, and which one gives way when a new one comes.

Pure bookkeeping, free of Twisted: the site asks :meth:`ConnectionTable.admit` before it
builds a protocol and applies the answer (close these connections, or refuse the new one).

The policy: a connection with a request being processed is never closed for another one.
Among the others, the one that has waited longest for its next request (since it was opened
or since its last answer) goes first: a keep-alive client that just got an answer stays, an
idle or slowloris connection that never completes a request leaves.  So a flood of idle
connections from any address, the normal client's own included, cannot lock a client out.
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

C = TypeVar("C", bound=Hashable)

#: open files kept for everything but client connections (store, log, Docker sockets,
#: thread pools, pipes, listeners): at least this many (an idle daemon holds about 20), or an
#: eighth of the limit
MIN_RESERVED_FILES = 48


@dataclass(frozen=True)
class Budget:
    """``cap``: connections held before the longest-idle one is closed for a new one;
    ``ceiling``: sockets open at all (those being closed included) before a new connection is
    refused outright; ``wanted``: the configured ``max_connections``."""

    cap: int
    ceiling: int
    wanted: int

    @property
    def lowered(self) -> bool:
        return self.cap < self.wanted


def budget(max_connections: int, open_files: int | None) -> Budget:
    """Connection limits that keep ``accept()`` clear of EMFILE under ``open_files``
    (``RLIMIT_NOFILE``; ``None`` for unlimited).

    The ``ceiling`` sits below the file limit by the files the rest of the daemon needs; the
    room between ``cap`` and ``ceiling`` is for connections draining after an error answer
    (413, 431...), which count until their socket is closed."""
    if open_files is None:
        return Budget(max_connections, max_connections + max(8, max_connections // 8), max_connections)
    reserve = max(MIN_RESERVED_FILES, open_files // 8)
    ceiling = max(2, open_files - reserve)
    slack = max(1, math.ceil(ceiling / 8))
    cap = max(1, min(max_connections, ceiling - slack))
    return Budget(cap, ceiling, max_connections)


def files_for(max_connections: int) -> int:
    """The smallest open-file limit whose :func:`budget` holds ``max_connections``."""
    files = max_connections + MIN_RESERVED_FILES
    while budget(max_connections, files).cap < max_connections:
        files += max(1, (max_connections - budget(max_connections, files).cap) // 2)
    return files


class ConnectionTable(Generic[C]):
    """Open connections in the order they became ready for a request (oldest first).

    ``busy(connection)`` says whether a request on it is being processed; ``exempt(host)``
    whether ``max_per_client`` skips that address (a trusted proxy speaks for many clients)."""

    def __init__(
        self,
        budget: Budget,
        max_per_client: int,
        busy: Callable[[C], bool],
        exempt: Callable[[str], bool] = lambda host: False,
    ) -> None:
        self.budget = budget
        self.max_per_client = max_per_client
        self.busy = busy
        self.exempt = exempt
        self._live: OrderedDict[C, str] = OrderedDict()
        #: answered with an error and draining, oldest first: only their sockets count
        self._closing: OrderedDict[C, None] = OrderedDict()
        self._per_host: Counter[str] = Counter()

    def __len__(self) -> int:
        """Connections held, those being closed included."""
        return len(self._live) + len(self._closing)

    def __iter__(self) -> Iterator[C]:
        return iter([*self._live, *self._closing])

    def live(self, host: str | None = None) -> int:
        return len(self._live) if host is None else self._per_host[host]

    def admit(self, host: str) -> list[C] | None:
        """The connections to close (at once) so that one more from ``host`` fits, often none;
        ``None``: refuse it, every connection that could give way is processing a request."""
        victims: list[C] = []
        if not self.exempt(host) and self._per_host[host] >= self.max_per_client:
            victim = self._longest_idle(host, victims)
            if victim is None:
                return None
            victims.append(victim)
        if len(self._live) - len(victims) >= self.budget.cap:
            victim = self._longest_idle(None, victims)
            if victim is None:
                return None
            victims.append(victim)
        if len(self) - len(victims) >= self.budget.ceiling:
            victim = next((c for c in self._closing if c not in victims), None)
            if victim is None:
                return None
            victims.append(victim)
        return victims

    def _longest_idle(self, host: str | None, skip: list[C]) -> C | None:
        for connection, its_host in self._live.items():
            if (host is None or its_host == host) and connection not in skip and not self.busy(connection):
                return connection
        return None

    def add(self, connection: C, host: str) -> None:
        self._live[connection] = host
        self._per_host[host] += 1

    def ready(self, connection: C) -> None:
        """``connection`` answered a request and waits for the next one: last in line."""
        if connection in self._live:
            self._live.move_to_end(connection)

    def closing(self, connection: C) -> None:
        """``connection`` is draining after an error answer: it no longer counts against the
        caps, only against the ceiling."""
        host = self._live.pop(connection, None)
        if host is not None:
            self._forget_host(host)
            self._closing[connection] = None

    def remove(self, connection: C) -> None:
        """``connection`` is closed: its socket is free."""
        self._closing.pop(connection, None)
        host = self._live.pop(connection, None)
        if host is not None:
            self._forget_host(host)

    def _forget_host(self, host: str) -> None:
        self._per_host[host] -= 1
        if self._per_host[host] <= 0:
            del self._per_host[host]
