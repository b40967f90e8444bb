"""This daemon's identity: a random id made at its first start and kept in its own store.

Every container the daemon creates carries it as the label :data:`DAEMON_LABEL` (beside
``io.curious-containers.kind``), and the daemon only ever removes, fails or collects
containers that carry its own id.  So two daemons with separate stores can share one Docker
engine: neither takes the other's containers for leftovers.  The id lives in the store, not
in a file, because what a container belongs to is decided by the store's documents: a daemon
restarted on the same store (or a copy of it) is the same daemon.

Containers of an older ccserver carry no such label.  They are treated as this daemon's when
its store knows them (an upgrade in place: their tasks go on and are collected as before),
and left alone, with one warning per container, when it does not (they may be another
daemon's).
"""

from __future__ import annotations

import secrets
from typing import cast

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from ccserver.storage.base import StorageError, Store

log = Logger(namespace="ccserver.identity")

#: the label of every container a daemon creates: the daemon's id
DAEMON_LABEL = "io.curious-containers.daemon"

COLLECTION = "daemon"
_KIND = "identity"


class DaemonIdentity:
    """``get()`` fires with the id (read once from the store, created there when missing);
    ``value`` is the id once it was read, ``known`` the id or ``None``.

    The daemon does not wait for it to start (with the database down at start, the API still
    answers 503): whatever needs the id asks ``get()``, and a failed read (the database is
    unavailable) is not remembered, so the next ask reads again."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._value: str | None = None
        self._waiting: list[Deferred[str]] | None = None

    @property
    def known(self) -> str | None:
        return self._value

    @property
    def value(self) -> str:
        if self._value is None:
            raise RuntimeError("the daemon identity was not read from the store yet")
        return self._value

    def get(self) -> Deferred[str]:
        d: Deferred[str] = Deferred()
        if self._value is not None:
            d.callback(self._value)
            return d
        if self._waiting is None:
            self._waiting = []
            ensureDeferred(self._load()).addBoth(self._loaded)
        self._waiting.append(d)
        return d

    def _loaded(self, result: object) -> None:
        waiting, self._waiting = self._waiting or [], None
        for d in waiting:
            if isinstance(result, str):
                d.callback(result)
            else:
                d.errback(cast(Failure, result))  # a failure: not remembered, the next get() reads again

    async def _load(self) -> str:
        found = await self._read()
        if found is None:
            await self.store.insert_one(COLLECTION, {"kind": _KIND, "daemon_id": secrets.token_hex(16)})
            # read back: should two processes ever have created one at once, both keep the oldest
            found = await self._read()
            if found is None:
                raise StorageError(f"the daemon identity written to the {COLLECTION!r} collection cannot be read back")
            log.info("this daemon's identity was created and stored")
        self._value = found
        log.info("daemon identity {id} (label {label} of its containers)", id=found, label=DAEMON_LABEL)
        return found

    async def _read(self) -> str | None:
        docs = await self.store.find(COLLECTION, {"kind": _KIND}, sort=[("_id", 1)], limit=1)
        value = docs[0].get("daemon_id") if docs else None
        return value if isinstance(value, str) and value else None
