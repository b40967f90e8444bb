"""The start-up recovery on half-written states, on both storage backends (no Docker needed)."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from bson import ObjectId
from twisted.internet.task import Clock

from ccserver import states
from ccserver.documents import MASK
from ccserver.lifecycle import Lifecycle
from ccserver.scheduling.recovery import Recovery
from ccserver.vault import Vault

APP = "application_containers"


def clock_at(t: float) -> Clock:
    clock = Clock()
    clock.advance(t)
    return clock


async def group(
    store: Any,
    n: int,
    stored: int | None = None,
    state: int = states.WAITING,
    task_state: int = states.WAITING,
    t: float = 100.0,
) -> tuple[ObjectId, list[ObjectId]]:
    gid, ids = ObjectId(), [ObjectId() for _ in range(n)]
    await store.insert_one(
        "task_groups",
        {
            "_id": gid,
            "state": state,
            "created_at": t,
            "transitions": [],
            "username": "alice",
            "task_ids": ids,
            "tasks_count": n,
        },
    )
    docs = [
        {
            "_id": i,
            "state": task_state,
            "created_at": t,
            "transitions": [{"timestamp": t, "state": task_state}],
            "username": "alice",
            "trials": 0,
            "task_group_id": [gid],
            "application_container_description": {"image": "x", "container_ram": 64},
        }
        for i in ids[: n if stored is None else stored]
    ]
    if docs:
        await store.insert_many("tasks", docs)
    return gid, ids


async def app(store: Any, task_id: ObjectId, state: int, callbacks: int = 0, t: float = 100.0) -> ObjectId:
    cid = ObjectId()
    await store.insert_one(
        APP,
        {
            "_id": cid,
            "state": state,
            "created_at": t,
            "transitions": [{"timestamp": t, "state": state}],
            "username": "alice",
            "task_id": [task_id],
            "data_container_ids": [],
            "cluster_node": "local",
            "callbacks": [
                {"callback_type": i, "container_id": cid, "content": {"state": 3, "description": "ok"}}
                for i in range(callbacks)
            ],
            "callback_key": "k" * 48,
            "container_ram": 64,
        },
    )
    return cid


def recovery(store: Any, now: float = 1000.0) -> tuple[Recovery, Lifecycle]:
    clock = clock_at(now)
    life = Lifecycle(store, clock, max_task_trials=3, vault=Vault(store, b"k" * 32))
    return Recovery(store, life, clock), life


@pytest_twisted.ensureDeferred
async def test_an_unanswered_submission_goes_entirely_and_an_answered_one_stays(store: Any) -> None:
    partial, _ = await group(store, 3, stored=1)
    empty, _ = await group(store, 2, stored=0)
    complete, _ = await group(store, 2)
    late, _ = await group(store, 2, stored=0, t=2000.0)  # being written by this process
    orphan = ObjectId()
    await store.insert_one(
        "tasks",
        {
            "_id": orphan,
            "state": states.WAITING,
            "created_at": 100.0,
            "task_group_id": [ObjectId()],
            "username": "alice",
        },
    )
    r, _ = recovery(store)
    report = await r.startup(1000.0)
    groups = {g["_id"] for g in await store.find("task_groups", {})}
    assert groups == {complete, late}
    assert {t["task_group_id"][0] for t in await store.find("tasks", {})} == {complete}
    assert report.counts["unanswered submissions removed"] == 3


@pytest_twisted.ensureDeferred
async def test_an_interrupted_placement_is_completed(store: Any) -> None:
    gid, (tid,) = await group(store, 1)
    cid = await app(store, tid, states.CREATED)
    r, _ = recovery(store)
    await r.startup(1000.0)
    task = await store.find_one("tasks", {"_id": tid})
    assert task["state"] == states.PROCESSING
    assert (await store.find_one("task_groups", {"_id": gid}))["state"] == states.PROCESSING
    assert (await store.find_one(APP, {"_id": cid}))["state"] == states.CREATED
    # a second pass changes nothing
    await r.startup(1000.0)
    assert len((await store.find_one("tasks", {"_id": tid}))["transitions"]) == len(task["transitions"])


@pytest_twisted.ensureDeferred
async def test_two_live_application_containers_of_one_task_become_one(store: Any) -> None:
    _, (tid,) = await group(store, 1, task_state=states.PROCESSING)
    running = await app(store, tid, states.PROCESSING)
    extra = await app(store, tid, states.CREATED)
    r, _ = recovery(store)
    await r.startup(1000.0)
    assert (await store.find_one(APP, {"_id": running}))["state"] == states.PROCESSING
    extra_doc = await store.find_one(APP, {"_id": extra})
    assert extra_doc["state"] == states.CANCELLED


@pytest_twisted.ensureDeferred
async def test_a_success_recorded_on_the_container_only_is_completed_once(store: Any) -> None:
    gid, (tid,) = await group(store, 1, task_state=states.PROCESSING)
    await app(store, tid, states.SUCCESS)
    r, _ = recovery(store)
    await r.startup(1000.0)
    await r.startup(1000.0)
    task = await store.find_one("tasks", {"_id": tid})
    assert task["state"] == states.SUCCESS
    assert [t["state"] for t in task["transitions"]].count(states.SUCCESS) == 1
    assert (await store.find_one("task_groups", {"_id": gid}))["state"] == states.SUCCESS


@pytest_twisted.ensureDeferred
async def test_a_container_that_sent_its_results_succeeds(store: Any) -> None:
    _, (tid,) = await group(store, 1, task_state=states.PROCESSING)
    cid = await app(store, tid, states.PROCESSING, callbacks=4)
    r, _ = recovery(store)
    await r.startup(1000.0)
    assert (await store.find_one(APP, {"_id": cid}))["state"] == states.SUCCESS
    assert (await store.find_one("tasks", {"_id": tid}))["state"] == states.SUCCESS


@pytest_twisted.ensureDeferred
async def test_a_failure_recorded_on_the_container_only_counts_as_a_trial(store: Any) -> None:
    _, (tid,) = await group(store, 1, task_state=states.PROCESSING)
    await app(store, tid, states.FAILED)
    r, _ = recovery(store)
    await r.startup(1000.0)
    task = await store.find_one("tasks", {"_id": tid})
    assert task["state"] == states.WAITING and task["trials"] == 1


@pytest_twisted.ensureDeferred
async def test_the_periodic_pass_leaves_fresh_ends_alone(store: Any) -> None:
    _, (tid,) = await group(store, 1, task_state=states.PROCESSING)
    await app(store, tid, states.FAILED, t=990.0)  # ended 10 s ago: its own path may be under way
    r, _ = recovery(store, now=1000.0)
    await r.periodic()
    assert (await store.find_one("tasks", {"_id": tid}))["state"] == states.PROCESSING


@pytest_twisted.ensureDeferred
async def test_a_group_whose_tasks_all_ended_is_finished(store: Any) -> None:
    gid, ids = await group(store, 2, state=states.PROCESSING, task_state=states.CANCELLED)
    await store.update_one("tasks", {"_id": ids[0]}, {"$set": {"registry_auth": {"password": "hunter2"}}})
    r, _ = recovery(store)
    await r.startup(1000.0)
    assert (await store.find_one("task_groups", {"_id": gid}))["state"] == states.FAILED
    assert (await store.find_one("tasks", {"_id": ids[0]}))["registry_auth"]["password"] == MASK
