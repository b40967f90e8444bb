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


class QueryCache:
    def __init__(self, clock: Any, max_age: float = 1.0, size: int = 256) -> None:
        self.clock = clock
        self.max_age = max_age
        self.size = size
        self._entries: OrderedDict[tuple[str, str | None, str], tuple[int, float, bytes]] = OrderedDict()

    @staticmethod
    def key(collection: str, scope: str | None, pipeline: Any) -> tuple[str, str | None, str]:
        return collection, scope, json.dumps(pipeline, sort_keys=True, default=repr)

    def get(self, key: tuple[str, str | None, str], generation: int) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        stored_generation, at, body = entry
        if stored_generation != generation or self.clock.seconds() - at > self.max_age:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return body

    def put(self, key: tuple[str, str | None, str], generation: int, body: bytes) -> None:
        if self.max_age <= 0:
            return
        self._entries[key] = (generation, self.clock.seconds(), body)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
