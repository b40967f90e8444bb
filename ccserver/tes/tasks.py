"""The TES tasks of the store: submit, look up, list and cancel, each for one user.

Standard users see only their own tasks: a task of someone else is answered like one that
does not exist (404), so ids cannot be probed.  Admins see every task.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from bson import ObjectId
from bson.errors import InvalidId
from twisted.logger import Logger

from ccserver.auth.guard import User
from ccserver.errors import NotFound
from ccserver.storage.base import Document, StorageError, Store
from ccserver.tes import listing, states
from ccserver.tes.submission import Prepared
from ccserver.vault import Vault

log = Logger(namespace="ccserver.tes")

COLLECTION = states.COLLECTION
#: compare-and-set attempts of a cancel racing with the runner's own transitions
CANCEL_ATTEMPTS = 8
MINIMAL_PROJECTION = {"_id": 1, "state": 1, "created_at": 1}


class Clock(Protocol):
    def seconds(self) -> float: ...


class UnknownTesTask(NotFound):
    """No such task, or (answered alike) someone else's."""


def parse_id(task_id: str) -> ObjectId:
    try:
        return ObjectId(task_id)
    except (InvalidId, TypeError):
        raise UnknownTesTask(f"no such task: {task_id[:40]!r}") from None


def _scope(user: User) -> dict[str, Any]:
    return {} if user.is_admin else {"username": user.username}


class TesTasks:
    def __init__(self, store: Store, vault: Vault, clock: Clock, wakeup: Callable[[], None]) -> None:
        self.store = store
        self.vault = vault
        self.clock = clock
        #: asks the runner (through ccserver.wiring.Wakeup) to look at the tasks soon
        self.wakeup = wakeup

    async def submit(self, prepared: Prepared) -> str:
        """Store a prepared task (its secrets first, in the vault); its id.

        Once the task may be stored, this never fails: an insert that failed in a way that
        leaves it unknown whether the task was written is checked by reading it back, because
        a client that gets a 5xx submits again (py-tes 1.1 even on another base path)."""
        doc = prepared.document
        if prepared.secrets is not None:
            await self.vault.keep([prepared.secrets])
        try:
            await self.store.insert_one(COLLECTION, doc)
        except StorageError:
            if await self._stored(doc["_id"]):
                log.warn("a TES task was stored although its insert reported an error: {id}", id=str(doc["_id"]))
            else:
                if prepared.secrets is not None:
                    await self.vault.forget([doc["_id"]])
                raise
        self.wakeup()
        return str(doc["_id"])

    async def _stored(self, task_id: ObjectId) -> bool:
        try:
            return await self.store.find_one(COLLECTION, {"_id": task_id}, projection={"_id": 1}) is not None
        except StorageError:
            return False

    async def get(self, user: User, task_id: str, minimal: bool = False) -> Document:
        oid = parse_id(task_id)
        projection = MINIMAL_PROJECTION if minimal else None
        doc = await self.store.find_one(COLLECTION, {"_id": oid, **_scope(user)}, projection=projection)
        if doc is None:
            raise UnknownTesTask(f"no such task: {task_id}")
        return doc

    async def list(
        self, user: User, query: listing.Query, minimal: bool = False, legacy: bool = False
    ) -> tuple[list[Document], str | None]:
        """One page of ``user``'s tasks, newest first, and the token of the next page (``None``
        on the last one)."""
        found = await self.store.find(
            COLLECTION,
            listing.mongo_filter(query, None if user.is_admin else user.username, legacy),
            sort=listing.SORT,
            limit=query.page_size + 1,
            projection=MINIMAL_PROJECTION if minimal else None,
        )
        page = found[: query.page_size]
        token = None
        if len(found) > query.page_size:
            last = page[-1]
            token = listing.encode_token(last["created_at"], last["_id"])
        return page, token

    async def cancel(self, user: User, task_id: str) -> None:
        """QUEUED → CANCELED at once; INITIALIZING, RUNNING, PAUSED → CANCELING (the runner
        removes the containers, then CANCELED); anything else stays as it is."""
        oid = parse_id(task_id)
        for _ in range(CANCEL_ATTEMPTS):
            doc = await self.store.find_one(COLLECTION, {"_id": oid, **_scope(user)}, projection={"state": 1})
            if doc is None:
                raise UnknownTesTask(f"no such task: {task_id}")
            state = doc["state"]
            now = self.clock.seconds()
            if state == states.QUEUED:
                target, extra = states.CANCELED, {"ended_at": now}
            elif state in states.ACTIVE:
                target, extra = states.CANCELING, {}
            else:
                return  # already canceling or ended
            transition = {"state": target, "timestamp": now, "description": f"canceled by {user.username}"}
            matched = await self.store.update_one(
                COLLECTION,
                {"_id": oid, "state": state},
                {"$set": {"state": target, **extra}, "$push": {"transitions": transition}},
            )
            if matched:
                if target == states.CANCELED:
                    await self.vault.forget([oid])
                else:
                    self.wakeup()
                return
        log.warn("cancel of TES task {id} kept racing with its transitions; left as it is", id=task_id)
