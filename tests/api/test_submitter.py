"""The Submitter's unanswered submissions: removed when a write fails, and retried by the
Submitter itself while the database cannot remove them (on both backends)."""

from __future__ import annotations

import time
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock, deferLater

from ccserver.storage.base import StorageUnavailable, Store
from ccserver.tasks import Submitter
from ccserver.vault import Vault
from tests.api.conftest import sample_task

WAIT_SECONDS = 20.0


class _Outage:
    """The real store, but the tasks' insert fails (the submission gets no answer) and, while
    ``down``, every removal fails too (the database went away)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.down = True

    def insert_many(self, collection: str, docs: Any) -> Deferred[Any]:
        if collection == "tasks":
            return fail(StorageUnavailable("the database went away"))
        return self.store.insert_many(collection, docs)

    def delete_many(self, collection: str, filter: Any) -> Deferred[int]:
        if self.down:
            return fail(StorageUnavailable("the database went away"))
        return self.store.delete_many(collection, filter)


class _User:
    username = "alice"
    is_admin = False


async def _until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {WAIT_SECONDS} s: {what}")
        await deferLater(reactor, 0.05, lambda: None)


@pytest_twisted.ensureDeferred
async def test_unanswered_submissions_are_removed_once_the_database_is_back(store: Store) -> None:
    outage, clock = _Outage(store), Clock()
    vault = Vault(store, b"k" * 32)
    submitter = Submitter(outage, clock, vault)  # type: ignore[arg-type]
    other = Submitter(store, Clock(), vault)  # type: ignore[arg-type]  # another API's, same store
    failures: list[Any] = []
    submitter.submit(_User(), sample_task()).addErrback(failures.append)
    await _until(lambda: failures, "the submission fails")
    assert failures[0].check(StorageUnavailable)
    # its group (and its secrets) went in before the tasks failed, and could not be removed
    groups = await store.find("task_groups", {})
    assert len(groups) == 1 and len(await store.find("secrets", {})) == 1
    assert submitter.leftovers == {groups[0]["_id"]}
    # the state of this submitter, not of the module: another one knows nothing of it
    assert other.leftovers == set()
    assert await other.remove_leftovers() == 0
    # retried on the submitter's clock: still down, so kept and retried again
    clock.advance(Submitter.RETRY_SECONDS)
    await _until(lambda: len(clock.getDelayedCalls()) == 1, "the next retry is due")
    assert submitter.leftovers == {groups[0]["_id"]}
    outage.down = False
    clock.advance(Submitter.RETRY_SECONDS)
    await _until(lambda: not submitter.leftovers, "the leftovers are removed")
    assert await store.find("task_groups", {}) == []
    assert await store.find("secrets", {}) == []
    assert clock.getDelayedCalls() == []  # nothing left to retry


@pytest_twisted.ensureDeferred
async def test_stop_gives_up_the_pending_retry(store: Store) -> None:
    clock = Clock()
    submitter = Submitter(_Outage(store), clock, Vault(store, b"k" * 32))  # type: ignore[arg-type]
    failures: list[Any] = []
    submitter.submit(_User(), sample_task()).addErrback(failures.append)
    await _until(lambda: failures, "the submission fails")
    assert len(clock.getDelayedCalls()) == 1
    submitter.stop()
    assert clock.getDelayedCalls() == []
