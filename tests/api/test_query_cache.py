"""Reused query answers: never after a write to the collection, never past their age."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from twisted.internet.task import Clock

from ccserver.web.query_cache import QueryCache
from tests.api.conftest import ALICE, Server, sample_task


def test_entries_expire_with_the_generation_and_with_age() -> None:
    clock = Clock()
    cache = QueryCache(clock, max_age=1.0, size=2)
    key = cache.key("tasks", "alice", [{"$match": {"state": 1}}])
    cache.put(key, 7, b"answer")
    assert cache.get(key, 7) == b"answer"
    assert cache.get(key, 8) is None  # a write happened
    cache.put(key, 8, b"answer")
    clock.advance(1.5)
    assert cache.get(key, 8) is None  # too old
    # bounded size: the least recently used entry goes
    for n in range(3):
        cache.put(cache.key("tasks", None, [{"$limit": n + 1}]), 1, b"x")
    assert cache.get(cache.key("tasks", None, [{"$limit": 1}]), 1) is None
    assert cache.get(cache.key("tasks", None, [{"$limit": 3}]), 1) == b"x"
    # scopes never share answers
    assert QueryCache.key("tasks", "alice", []) != QueryCache.key("tasks", "bob", [])


def test_identical_queries_at_once_share_one_run() -> None:
    cache = QueryCache(Clock())
    key = cache.key("tasks", None, [])
    assert cache.join(key, 1) is None  # the first runs it
    waiters = [cache.join(key, 1) for _ in range(3)]
    assert all(w is not None for w in waiters)
    got: list[bytes] = []
    for w in waiters:
        w.addCallback(got.append)
    cache.put(key, 1, b"answer")
    assert got == [b"answer"] * 3
    assert cache.join(key, 1) is None  # nothing running any more
    failed: list[Any] = []
    other = cache.join(key, 1)
    assert other is not None
    other.addErrback(failed.append)
    cache.fail(key, 1, ValueError("broken"))
    assert failed and failed[0].check(ValueError)


@pytest_twisted.ensureDeferred
async def test_a_submission_is_seen_by_the_next_identical_query(api_server: Server) -> None:
    query = {"aggregate": [{"$match": {"state": 1}}, {"$project": {"_id": 1}}]}
    first = await api_server.post("/tasks/query", query, user=ALICE)
    assert first.status == 200
    again = await api_server.post("/tasks/query", query, user=ALICE)
    assert again.json == first.json
    submitted = await api_server.post("/tasks", sample_task(), user=ALICE)
    assert submitted.status == 200
    after = await api_server.post("/tasks/query", query, user=ALICE)
    assert {"_id": submitted.json["_id"]} in after.json["tasks"]
    assert len(after.json["tasks"]) == len(first.json["tasks"]) + 1
