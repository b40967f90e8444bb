"""Paging over 100,000 tasks on the embedded store stays fast: the first page, a page deep in
the list and a filtered page cost about the same, because each walks the created_at index
from the cursor instead of sorting every task (the store's ``find(sort=...)`` would decode
all 100,000)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_twisted
from bson import ObjectId
from twisted.internet import reactor

from ccserver import states
from ccserver.config import EmbeddedConfig
from ccserver.dashboard import listing
from ccserver.storage.embedded import EmbeddedStore

TASKS = 100_000
#: one page may take this long on a loaded shared machine (it takes a few ms when idle)
PAGE_SECONDS = 0.5


@pytest_twisted.async_yield_fixture(scope="module")
async def big_store(tmp_path_factory: pytest_twisted.pytest.TempPathFactory) -> AsyncIterator[EmbeddedStore]:
    path: Path = tmp_path_factory.mktemp("big") / "ccserver.sqlite3"
    store = EmbeddedStore(EmbeddedConfig(path=str(path), synchronous="normal"), reactor)
    await store.startService()
    chunk = 10_000
    for start in range(0, TASKS, chunk):
        await store.insert_many(
            "tasks",
            [
                {
                    "_id": ObjectId(),
                    "username": ("alice", "bob", "carol", "dave")[i % 4],
                    # one task in 100 is still waiting, the rest ended
                    "state": states.WAITING if i % 100 == 0 else states.SUCCESS,
                    "created_at": 1_000_000.0 + i // 10,  # ten tasks share each second
                    "application_container_description": {"image": f"img/{i % 7}", "container_ram": 64},
                    "transitions": [],
                }
                for i in range(start, start + chunk)
            ],
        )
    yield store
    await store.stopService()


async def _timed(store: EmbeddedStore, filters: listing.Filters, after: object, limit: int = 50) -> tuple[float, dict]:
    started = time.monotonic()
    page = await listing.page(store, filters, after, limit)  # type: ignore[arg-type]
    return time.monotonic() - started, page


@pytest_twisted.ensureDeferred
async def test_first_deep_and_filtered_pages_are_fast(big_store: EmbeddedStore) -> None:
    seconds, first = await _timed(big_store, listing.Filters(), None)
    assert len(first["tasks"]) == 50 and first["tasks"][0]["created_at"] == 1_000_000.0 + (TASKS - 1) // 10
    assert seconds < PAGE_SECONDS, seconds

    # page 1,000 (after 50,000 rows): the cursor of a row in the middle
    middle = await big_store.find("tasks", {"created_at": 1_000_000.0 + 5000}, limit=1)
    after = (middle[0]["created_at"], ObjectId("0" * 24))
    seconds, deep = await _timed(big_store, listing.Filters(), after)
    assert len(deep["tasks"]) == 50 and deep["tasks"][0]["created_at"] == 1_000_000.0 + 4999
    assert seconds < PAGE_SECONDS, seconds

    # index probes for state and user: 1 task in 100 is waiting, a quarter of them alice's
    seconds, waiting = await _timed(big_store, listing.Filters(state="waiting", username="alice"), after)
    assert len(waiting["tasks"]) == 50
    assert {(r["state"], r["username"]) for r in waiting["tasks"]} == {("waiting", "alice")}
    assert seconds < 2 * PAGE_SECONDS, seconds

    # the next pages follow on without a gap or a repeat
    cursor = listing.parse_cursor(first["next"])
    seconds, second = await _timed(big_store, listing.Filters(), cursor)
    assert seconds < PAGE_SECONDS, seconds
    ids = [r["id"] for r in first["tasks"] + second["tasks"]]
    assert len(set(ids)) == 100
    newest = await big_store.find("tasks", {"created_at": {"$gte": 1_000_000.0 + (TASKS - 1) // 10 - 9}})
    assert {str(d["_id"]) for d in newest} == set(ids)


@pytest_twisted.ensureDeferred
async def test_a_filter_without_index_is_bounded_and_goes_on(big_store: EmbeddedStore) -> None:
    # no task has this image: the scan stops at its bound and says where the next page starts
    seconds, page = await _timed(big_store, listing.Filters(image="img/none"), None)
    assert page["tasks"] == [] and page["scanned_to_limit"] is True and page["next"] is not None
    assert seconds < 4 * PAGE_SECONDS, seconds
    value, _ = listing.parse_cursor(page["next"])
    assert value == 1_000_000.0 + (TASKS - listing.SCAN_LIMIT) // 10
