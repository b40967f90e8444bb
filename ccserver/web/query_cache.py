"""Rendered answers of ``.../query`` requests, reused while their collection is unchanged.

Dashboards (CC-UI among them) poll the same queries again and again.  An answer is reused only
if the store's generation of the collection (:meth:`Store.generation`, which moves with every
write this daemon makes) is still the one it was computed at, and for at most ``max_age``
seconds, which bounds staleness when something else writes to a shared MongoDB database.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

from twisted.internet.defer import Deferred

Key = tuple[str, str | None, str]


class QueryCache:
    def __init__(self, clock: Any, max_age: float = 1.0, size: int = 256) -> None:
        self.clock = clock
        self.max_age = max_age
        self.size = size
        self._entries: OrderedDict[Key, tuple[int, float, bytes]] = OrderedDict()
        #: queries being run now, and the identical requests waiting for their answer
        self._running: dict[tuple[Key, int], list[Deferred[bytes]]] = {}

    @staticmethod
    def key(collection: str, scope: str | None, pipeline: Any) -> Key:
        return collection, scope, json.dumps(pipeline, sort_keys=True, default=repr)

    def get(self, key: Key, generation: int) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        stored_generation, at, body = entry
        if stored_generation != generation or self.clock.seconds() - at > self.max_age:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return body

    def join(self, key: Key, generation: int) -> Deferred[bytes] | None:
        """``None``: the caller runs the query (and must call :meth:`put` or :meth:`fail`);
        else a Deferred for the answer of the identical query already running, so that many
        clients asking the same thing at once cost one aggregation."""
        if self.max_age <= 0:
            return None
        waiters = self._running.get((key, generation))
        if waiters is None:
            self._running[(key, generation)] = []
            return None
        d: Deferred[bytes] = Deferred()
        waiters.append(d)
        return d

    def fail(self, key: Key, generation: int, error: BaseException) -> None:
        for d in self._running.pop((key, generation), []):
            d.errback(error)

    def put(self, key: Key, generation: int, body: bytes) -> None:
        for d in self._running.pop((key, generation), []):
            d.callback(body)
        if self.max_age <= 0:
            return
        self._entries[key] = (generation, self.clock.seconds(), body)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
