"""State changes and their consequences, on both storage backends (no Docker needed)."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from bson import ObjectId
from twisted.internet.task import Clock

from ccserver import states
from ccserver.lifecycle import Lifecycle
from ccserver.vault import Vault

KEY = b"k" * 32


async def seed(store: Any, clock: Clock, tasks: int = 1, secret: bool = False) -> tuple[ObjectId, list[ObjectId]]:
    gid = ObjectId()
    ids = [ObjectId() for _ in range(tasks)]
    now = clock.seconds()
    await store.insert_one(
        "task_groups",
        {
            "_id": gid,
            "state": states.WAITING,
            "task_ids": ids,
            "transitions": [],
            "tasks_count": tasks,
            "username": "alice",
            "created_at": now,
        },
    )
    docs = []
    for i in ids:
        doc = {
            "_id": i,
            "state": states.PROCESSING,
            "trials": 0,
            "task_group_id": [gid],
            "transitions": [],
            "username": "alice",
            "created_at": now,
            "application_container_description": {"image": "x", "container_ram": 64},
        }
        if secret:
            doc["application_container_description"]["registry_auth"] = {"username": "u", "password": "hunter2"}
        docs.append(doc)
    await store.insert_many("tasks", docs)
    return gid, ids


async def app_container(store: Any, task_id: ObjectId, dcs: list[ObjectId] | None = None) -> ObjectId:
    cid = ObjectId()
    await store.insert_one(
        "application_containers",
        {
            "_id": cid,
            "state": states.PROCESSING,
            "task_id": [task_id],
            "data_container_ids": dcs or [],
            "callbacks": [],
            "callback_key": "k" * 48,
            "cluster_node": "local",
            "container_ram": 64,
            "transitions": [],
            "username": "alice",
        },
    )
    return cid


@pytest_twisted.ensureDeferred
async def test_failure_is_retried_until_max_trials_then_failed(store: Any) -> None:
    clock, woken = Clock(), []
    life = Lifecycle(store, clock, max_task_trials=2, vault=Vault(store, KEY), wake=lambda: woken.append(1))
    gid, (tid,) = await seed(store, clock)
    first = await app_container(store, tid)
    assert await life.container_failed("application_containers", first, "exit 3")
    task = await store.find_one("tasks", {"_id": tid})
    assert task["state"] == states.WAITING and task["trials"] == 1
    assert "trial 1 of 2" in task["transitions"][-1]["description"]
    # the same failure again changes nothing: the container is in an end state
    assert not await life.container_failed("application_containers", first, "exit 3")
    await store.update_one("tasks", {"_id": tid}, {"$set": {"state": states.PROCESSING}})
    second = await app_container(store, tid)
    await life.container_failed("application_containers", second, "exit 3")
    task = await store.find_one("tasks", {"_id": tid})
    assert task["state"] == states.FAILED and task["trials"] == 2
    group = await store.find_one("task_groups", {"_id": gid})
    assert group["state"] == states.FAILED
    assert woken


@pytest_twisted.ensureDeferred
async def test_success_ends_task_and_group_and_masks_secrets(store: Any) -> None:
    clock, notified = Clock(), []
    life = Lifecycle(store, clock, max_task_trials=3, vault=Vault(store, KEY), notify_task=notified.append)
    gid, (t1, t2) = await seed(store, clock, tasks=2, secret=True)
    await store.update_one("tasks", {"_id": t1}, {"$set": {"notifications": [{"connector_access": {"url": "u"}}]}})
    a1 = await app_container(store, t1)
    assert await life.application_succeeded(a1, "done")
    assert (await store.find_one("tasks", {"_id": t1}))["state"] == states.SUCCESS
    assert (await store.find_one("task_groups", {"_id": gid}))["state"] == states.WAITING
    assert [n["_id"] for n in notified] == [t1]
    await life.task_cancelled(t2)
    group = await store.find_one("task_groups", {"_id": gid})
    assert group["state"] == states.SUCCESS  # all ended, one succeeded
    ended = await store.find_one("tasks", {"_id": t1})
    assert ended["application_container_description"]["registry_auth"]["password"] == "**********"


@pytest_twisted.ensureDeferred
async def test_a_failed_data_container_fails_its_application_containers(store: Any) -> None:
    clock = Clock()
    life = Lifecycle(store, clock, max_task_trials=1, vault=Vault(store, KEY))
    gid, (tid,) = await seed(store, clock)
    dc = ObjectId()
    await store.insert_one(
        "data_containers",
        {
            "_id": dc,
            "state": states.WAITING,
            "transitions": [],
            "cluster_node": "local",
            "container_ram": 64,
            "input_files": [],
        },
    )
    app = await app_container(store, tid, [dc])
    await life.container_failed("data_containers", dc, "download failed")
    assert (await store.find_one("application_containers", {"_id": app}))["state"] == states.FAILED
    task = await store.find_one("tasks", {"_id": tid})
    assert task["state"] == states.FAILED
    assert "data container failed: download failed" in task["transitions"][-1]["description"]


@pytest_twisted.ensureDeferred
async def test_end_states_are_final(store: Any) -> None:
    clock = Clock()
    life = Lifecycle(store, clock, max_task_trials=3, vault=Vault(store, KEY))
    _, (tid,) = await seed(store, clock)
    assert await life.task_cancelled(tid)
    assert not await life.transition("tasks", tid, states.PROCESSING, "again")
    await life.task_failed(tid, "late failure", None)
    task = await store.find_one("tasks", {"_id": tid})
    assert task["state"] == states.CANCELLED and task["trials"] == 0
    assert [t["state"] for t in task["transitions"]] == [states.CANCELLED]
