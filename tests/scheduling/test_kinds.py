"""A fifth kind of container (as a TES executor will be) joins the life cycle, the cancel
and the placement's reservations by being described, not by new branches (issue 9)."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from bson import ObjectId
from twisted.internet.task import Clock

from ccserver import config as configuration
from ccserver import states
from ccserver.kinds import APPLICATION, DATA, DEFAULT_KINDS, INSPECTION, Image, Kind, Kinds
from ccserver.lifecycle import Lifecycle
from ccserver.scheduling import rounds
from ccserver.storage.base import Store
from ccserver.vault import Vault

EXECUTOR = Kind(
    name="test-executor",
    collection="test_executor_containers",
    task_field="task_id",
    image_of=lambda config, task: Image("ccserver-test/noinput", "run"),
)
KINDS = DEFAULT_KINDS.adding(EXECUTOR)


def test_kinds_are_looked_up_by_collection_and_label() -> None:
    assert DEFAULT_KINDS["application_containers"] is APPLICATION
    assert DEFAULT_KINDS.of("data_containers") is DATA and DEFAULT_KINDS.of("tasks") is None
    assert DEFAULT_KINDS.named("inspection") is INSPECTION and INSPECTION.collection is None
    assert list(DEFAULT_KINDS.needing(DATA)) == [APPLICATION]
    assert KINDS.collections() == ("application_containers", "data_containers", "test_executor_containers")
    assert DEFAULT_KINDS.collections() == ("application_containers", "data_containers")  # unchanged
    with pytest.raises(ValueError, match="registered already"):
        Kinds(APPLICATION, APPLICATION)
    with pytest.raises(ValueError, match="belongs to kind"):
        KINDS.adding(Kind(name="other", collection="data_containers"))
    with pytest.raises(ValueError):
        INSPECTION.documents  # noqa: B018


async def seed(store: Store) -> tuple[ObjectId, ObjectId, ObjectId]:
    gid, tid = ObjectId(), ObjectId()
    await store.insert_one("task_groups", {"_id": gid, "state": states.PROCESSING, "transitions": []})
    await store.insert_one(
        "tasks",
        {
            "_id": tid,
            "state": states.PROCESSING,
            "trials": 0,
            "task_group_id": [gid],
            "transitions": [],
            "application_container_description": {"image": "x", "container_ram": 64},
        },
    )
    executor = await store.insert_one(
        EXECUTOR.documents,
        {"state": states.PROCESSING, "task_id": [tid], "transitions": [], "cluster_node": "n1", "container_ram": 300},
    )
    return gid, tid, executor


@pytest_twisted.ensureDeferred
async def test_a_new_kind_that_fails_fails_its_tasks_trial(store: Store) -> None:
    _, tid, executor = await seed(store)
    life = Lifecycle(store, Clock(), max_task_trials=3, vault=Vault(store, b"k" * 32), kinds=KINDS)
    assert await life.container_failed(EXECUTOR.documents, executor, "exit 1")
    task = await store.find_one("tasks", {"_id": tid})
    assert task is not None and task["state"] == states.WAITING and task["trials"] == 1
    assert task["transitions"][-1]["caused_by"] == {"test-executor_container_id": executor}


@pytest_twisted.ensureDeferred
async def test_a_cancel_cancels_the_containers_of_every_kind(store: Store) -> None:
    gid, tid, executor = await seed(store)
    life = Lifecycle(store, Clock(), max_task_trials=3, vault=Vault(store, b"k" * 32), kinds=KINDS)
    assert await life.task_cancelled(tid)
    container = await store.find_one(EXECUTOR.documents, {"_id": executor})
    assert container is not None and container["state"] == states.CANCELLED
    assert (await store.find_one("task_groups", {"_id": gid}) or {})["state"] == states.FAILED


class Capacities:
    def capacities(self) -> list[tuple[str, int]]:
        return [("n1", 1000)]

    def traits(self) -> dict[str, tuple[bool, bool, bool]]:
        return {}

    def cpu_totals(self) -> dict[str, int | None]:
        return {"n1": None}


@pytest_twisted.ensureDeferred
async def test_placement_reserves_the_ram_of_every_kind(store: Store) -> None:
    await seed(store)
    await store.insert_one(
        "tasks",
        {
            "state": states.WAITING,
            "created_at": 1.0,
            "task_group_id": [ObjectId()],
            "application_container_description": {"image": "x", "container_ram": 800},
        },
    )
    cfg = configuration.from_dict({}, "<test>")
    cluster: Any = Capacities()
    # the executor's 300 MB leave 700: the 800 MB task must wait
    assert not (await rounds.decide(cfg, store, cluster, None, KINDS)).placed
    # the 0.10 kinds alone do not see it (which is why the kinds are passed)
    assert len((await rounds.decide(cfg, store, cluster, None, DEFAULT_KINDS)).placed) == 1


@pytest_twisted.ensureDeferred
async def test_live_container_documents_of_an_older_ccserver_are_masked_at_the_start(store: Store) -> None:
    """Their end no longer reads them (one compare-and-set write), so what an older ccserver
    stored unmasked in a live container document is masked by the start-up recovery."""
    from ccserver.documents import MASK
    from ccserver.scheduling.recovery import Recovery

    spec = {"connector_type": "http", "connector_access": {"url": "u", "password": "hunter2"}}
    dc = await store.insert_one(
        DATA.documents, {"state": states.PROCESSING, "input_files": [spec], "transitions": [], "callbacks": []}
    )
    clock = Clock()
    clock.advance(1000)
    life = Lifecycle(store, clock, max_task_trials=3, vault=Vault(store, b"k" * 32))
    report = await Recovery(store, life, clock).startup(1000.0)
    assert report.counts["container documents masked"] == 1
    doc = await store.find_one(DATA.documents, {"_id": dc})
    assert doc is not None and doc["input_files"][0]["connector_access"]["password"] == MASK
    assert doc["input_files"][0]["connector_access"]["url"] == "u"
