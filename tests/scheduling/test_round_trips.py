"""What a task's end costs in store round trips, counted on the real stores (embedded and
FerretDB): from the application container's callback 3 to its group's end, and a cancel
through the API's path (issue 9: "a handful of store round trips, not a dozen").

Before issue 9 a task that succeeded cost 12 round trips from callback 3 to the group's end
(a read before every container end, the container's task id read again, the task's vault
entry deleted though it kept none, the group read three times); the bounds below are what is
left: each is a read or a compare-and-set write the end needs."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest_twisted
from bson import ObjectId
from twisted.internet.task import Clock

from ccserver import states, tasks
from ccserver.callbacks import Callbacks
from ccserver.kinds import APPLICATION
from ccserver.lifecycle import Lifecycle
from ccserver.storage.base import Store
from ccserver.vault import Vault

APP = APPLICATION.documents
KEY = b"k" * 32
#: the store calls that go to the database
CALLS = (
    "find_one",
    "find",
    "count",
    "insert_one",
    "insert_many",
    "update_one",
    "update_many",
    "delete_many",
    "aggregate",
)

#: callback 3 → group ended: read the container (its key), end it with the callback recorded
#: in the same write, end the task, read the task (notifications, group), read one live task
#: of the group (none), read one task of it that succeeded, end the group; each read stops at
#: its first match, so the cost does not grow with the group (a task whose group goes on stops
#: after the live task it found: two fewer)
SUCCESS_ROUND_TRIPS = 7


class CountingStore:
    """The real store, with every database call counted (by method name)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if name not in CALLS:
            return attribute

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attribute(*args, **kwargs)

        return counted

    @property
    def total(self) -> int:
        return sum(self.calls.values())


async def seed(store: Store, tasks_in_group: int) -> tuple[ObjectId, list[ObjectId], ObjectId]:
    """A group of processing tasks; the first has an application container that sent
    callbacks 0 to 2."""
    gid, ids = ObjectId(), [ObjectId() for _ in range(tasks_in_group)]
    await store.insert_one(
        "task_groups",
        {"_id": gid, "state": states.PROCESSING, "task_ids": ids, "transitions": [], "username": "alice"},
    )
    await store.insert_many(
        "tasks",
        [
            {
                "_id": i,
                "state": states.PROCESSING,
                "trials": 0,
                "task_group_id": [gid],
                "transitions": [],
                "username": "alice",
                "created_at": 0.0,
                "application_container_description": {"image": "x", "container_ram": 64},
            }
            for i in ids
        ],
    )
    done = {"state": states.SUCCESS, "description": "ok"}
    app = await store.insert_one(
        APP,
        {
            "state": states.PROCESSING,
            "task_id": [ids[0]],
            "data_container_ids": [],
            "username": "alice",
            "transitions": [],
            "callbacks": [{"callback_type": n, "container_id": None, "content": done} for n in range(3)],
            "cluster_node": "local",
            "container_ram": 64,
        },
    )
    return gid, ids, app


def callbacks_on(store: Any) -> tuple[Callbacks, Vault]:
    vault = Vault(store, KEY)
    clock = Clock()
    clock.advance(RECEIVED)
    lifecycle = Lifecycle(store, clock, max_task_trials=3, vault=vault)
    callbacks = Callbacks(store, lifecycle, None, wake=lambda: None, vault=vault, clock=clock)  # type: ignore[arg-type]
    return callbacks, vault


#: the clock's time when the callbacks arrive
RECEIVED = 1234.5


def callback_3(vault: Vault, app: ObjectId) -> dict[str, Any]:
    return {
        "callback_type": 3,
        "container_id": app,
        "callback_key": vault.callback_key(APP, app),
        "content": {"state": states.SUCCESS, "description": "Results sent."},
    }


@pytest_twisted.ensureDeferred
async def test_a_task_that_succeeds_costs_a_handful_of_round_trips_to_its_groups_end(store: Store) -> None:
    gid, (tid,), app = await seed(store, 1)
    counting = CountingStore(store)
    callbacks, vault = callbacks_on(counting)
    assert await callbacks.handle(APP, callback_3(vault, app)) == {}
    assert counting.total <= SUCCESS_ROUND_TRIPS, counting.calls
    # and it all happened: the callback recorded, container, task and group ended
    container = await store.find_one(APP, {"_id": app})
    assert container is not None and container["state"] == states.SUCCESS
    assert [c["callback_type"] for c in container["callbacks"]] == [0, 1, 2, 3]
    assert container["callbacks"][3]["received_at"] == RECEIVED  # when it arrived (bench/tasks.py reports it)
    assert [t["state"] for t in container["transitions"]] == [states.SUCCESS]
    task = await store.find_one("tasks", {"_id": tid})
    assert task is not None and task["state"] == states.SUCCESS
    group = await store.find_one("task_groups", {"_id": gid})
    assert group is not None and group["state"] == states.SUCCESS


@pytest_twisted.ensureDeferred
async def test_a_task_that_succeeds_in_a_busy_group_leaves_it_alone(store: Store) -> None:
    gid, (tid, _other), app = await seed(store, 2)
    counting = CountingStore(store)
    callbacks, vault = callbacks_on(counting)
    await callbacks.handle(APP, callback_3(vault, app))
    # the group's first read finds a live task: no second read, no group write
    assert counting.total <= SUCCESS_ROUND_TRIPS - 2, counting.calls
    assert (await store.find_one("tasks", {"_id": tid}) or {})["state"] == states.SUCCESS
    assert (await store.find_one("task_groups", {"_id": gid}) or {})["state"] == states.PROCESSING


@pytest_twisted.ensureDeferred
async def test_a_repeated_callback_3_records_nothing_twice(store: Store) -> None:
    gid, (tid,), app = await seed(store, 1)
    callbacks, vault = callbacks_on(store)
    await callbacks.handle(APP, callback_3(vault, app))
    assert await callbacks.handle(APP, callback_3(vault, app)) == {}
    container = await store.find_one(APP, {"_id": app})
    assert container is not None and len(container["callbacks"]) == 4 and len(container["transitions"]) == 1


class Admin:
    username = "admin"
    is_admin = True


@pytest_twisted.ensureDeferred
async def test_a_cancel_goes_through_the_life_cycle_in_bulk(store: Store) -> None:
    """The API's cancel: one ownership read, then the life cycle's writes (tasks, their
    containers) and what follows the ends (the group) — no per-task writes."""
    gid, ids, app = await seed(store, 3)
    counting = CountingStore(store)
    vault = Vault(counting, KEY)  # type: ignore[arg-type]
    woken: list[None] = []
    lifecycle = Lifecycle(counting, Clock(), 3, vault, wake=lambda: woken.append(None))  # type: ignore[arg-type]
    answer = await tasks.cancel(counting, Admin(), ids, lifecycle)  # type: ignore[arg-type]
    assert answer == [{"_id": i, "state": states.CANCELLED} for i in ids]
    assert woken
    container = await store.find_one(APP, {"_id": app})
    assert container is not None and container["state"] == states.CANCELLED
    # what follows the ends runs in the background: the group ends
    for _ in range(100):  # (the test reads the real store, not the counting one)
        if (await store.find_one("task_groups", {"_id": gid}) or {})["state"] == states.FAILED:
            break
        await tasks_settle()
    assert (await store.find_one("task_groups", {"_id": gid}) or {})["state"] == states.FAILED
    assert lifecycle.finishing == 0
    # the ownership read, one update_many for the tasks and one for their containers; then
    # the cancelled tasks read once (for notifications), the group's two reads (no live task,
    # no task that succeeded) and its end: nothing per task
    assert counting.calls["update_many"] == 2 and counting.calls["update_one"] == 1, counting.calls
    assert counting.total <= CANCEL_ROUND_TRIPS, counting.calls


#: a cancel of tasks of one group, whatever their number (up to 250)
CANCEL_ROUND_TRIPS = 7


async def tasks_settle() -> None:
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    await deferLater(reactor, 0.02, lambda: None)


@pytest_twisted.ensureDeferred
async def test_a_container_end_is_one_compare_and_set_write(store: Store) -> None:
    _, _, app = await seed(store, 1)
    counting = CountingStore(store)
    lifecycle = Lifecycle(counting, Clock(), 3, Vault(counting, KEY))  # type: ignore[arg-type]
    assert await lifecycle.transition(APP, app, states.CANCELLED, "gone")
    assert counting.calls == Counter(update_one=1)
    # an end state is final: the same write matches nothing, and nothing was read
    assert not await lifecycle.transition(APP, app, states.FAILED, "late")
    assert counting.calls == Counter(update_one=2)
    container = await store.find_one(APP, {"_id": app})
    assert container is not None and [t["state"] for t in container["transitions"]] == [states.CANCELLED]


@pytest_twisted.ensureDeferred
async def test_revealing_a_document_without_secret_fields_reads_nothing(store: Store) -> None:
    counting = CountingStore(store)
    vault = Vault(counting, KEY)  # type: ignore[arg-type]
    plain = {"_id": ObjectId(), "application_container_description": {"image": "x", "container_ram": 64}}
    assert await vault.reveal(plain) is plain
    assert counting.total == 0
    secret = {"_id": ObjectId(), "registry_auth": {"username": "u", "password": "hunter2"}}
    await vault.keep([vault.conceal(secret) or {}])
    assert secret["registry_auth"]["password"] != "hunter2"
    revealed = await vault.reveal(secret)
    assert revealed["registry_auth"]["password"] == "hunter2"
    assert counting.calls == Counter(insert_many=1, find_one=1)
