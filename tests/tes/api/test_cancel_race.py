"""Cancel is a compare-and-set on the state: a runner transition between its read and its
write is not overwritten (on every backend)."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from twisted.internet import reactor

from ccserver.auth.guard import User
from ccserver.storage.base import Store
from ccserver.tes.submission import Storage, prepare
from ccserver.tes.tasks import TesTasks
from ccserver.vault import Vault
from tests.tes.api.conftest import sample_tes_task


class RunnerStartsMeanwhile:
    """A real store; just before the first cancel write, "the runner" moves the task on."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.moved = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def update_one(self, collection: str, filter: Any, update: Any) -> int:
        if not self.moved:
            self.moved = True
            await self.store.update_one(
                collection,
                {"_id": filter["_id"], "state": "QUEUED"},
                {"$set": {"state": "INITIALIZING"}, "$push": {"transitions": {"state": "INITIALIZING"}}},
            )
        return int(await self.store.update_one(collection, filter, update))


@pytest_twisted.ensureDeferred
async def test_a_task_that_started_meanwhile_goes_to_canceling_not_canceled(store: Store) -> None:
    woken: list[int] = []
    racing = RunnerStartsMeanwhile(store)
    tasks = TesTasks(racing, Vault(store, b"k" * 32), reactor, lambda: woken.append(1))  # type: ignore[arg-type]
    prepared = prepare("alice", sample_tes_task(), reactor.seconds(), Storage())
    await store.insert_one("tes_tasks", prepared.document)
    await tasks.cancel(User("alice", False), str(prepared.document["_id"]))
    doc = await store.find_one("tes_tasks", {"_id": prepared.document["_id"]})
    assert doc is not None and racing.moved
    assert doc["state"] == "CANCELING"
    assert [t["state"] for t in doc["transitions"]] == ["QUEUED", "INITIALIZING", "CANCELING"]
    assert woken == [1]
