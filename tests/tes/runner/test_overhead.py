"""What one trivial TES task costs the daemon, counted on the real engine and the real stores
(issue 10, bench/tes.py): the Docker calls of its attempt and the store round trips from its
claim to its end.  A task without inputs, outputs and volumes makes no staging call and lists
nothing on the engine: its container is created, started, inspected, read and removed by name."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest_twisted

from tests.e2e.harness import Harness
from tests.scheduling.test_round_trips import CountingStore
from tests.tes.runner.conftest import executor, insert_task, leftovers, wait_state

ENDED = ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED")

#: create, start, the state when it started, the state and the tails when it ended, the removal
DOCKER_CALLS = {"create_executor": 1, "start": 1, "state": 2, "output_tails": 1, "remove_named": 1}
#: the runner's writes and reads of the task (``update_one`` and ``find_one``; its periodic
#: ``find`` of the live tasks is not the task's): the claim, the claimed document read, RUNNING
#: with executor 0 recorded, the running ExecutorLog (not when its end came first), the final
#: one, the end.  Before issue 10: also a write of the executor record and one of the empty outputs.
STORE_ROUND_TRIPS = 6


class CountingCalls:
    """The cluster's ``call``, with the TES functions run on the Docker pool counted."""

    def __init__(self, call: Any) -> None:
        self._call = call
        self.calls: Counter[str] = Counter()

    def __call__(self, node: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(fn, "__module__", "") in ("ccserver.tes.docker_tes", "ccserver.tes.stager"):
            self.calls[fn.__name__] += 1  # the TES runner's (not the health checks')
        return self._call(node, fn, *args, **kwargs)


@pytest_twisted.ensureDeferred
async def test_a_trivial_task_costs_few_docker_calls_and_store_round_trips(tes: Harness) -> None:
    runner = tes.root.tes_runner
    # the image is known present first, as it is after the first task of a run
    warm = await insert_task(tes.root.store, [executor("sh", "-c", "true")])
    assert (await wait_state(tes, warm, ENDED))["state"] == "COMPLETE"
    counted_store = CountingStore(runner.store)
    counted_calls = CountingCalls(runner.cluster.call)
    runner.store = counted_store
    runner.cluster.call = counted_calls  # type: ignore[method-assign]
    try:
        task_id = await insert_task(tes.root.store, [executor("sh", "-c", "true")])
        doc = await wait_state(tes, task_id, ENDED)
    finally:
        del runner.cluster.call
        runner.store = tes.root.store
    assert doc["state"] == "COMPLETE", doc
    assert doc["logs"][0]["logs"][0]["exit_code"] == 0
    assert doc["attempt"]["executor"] == 0  # recorded with the move to RUNNING
    assert leftovers(tes, task_id) == ([], [])
    calls = dict(counted_calls.calls)
    assert "stage_in" not in calls and "stage_out" not in calls, calls
    assert "remove_task_leftovers" not in calls and "create_volume" not in calls, calls
    # the state of the running executor is read only when its end has not been seen yet
    assert calls.get("state", 0) in (1, 2), calls
    assert {k: v for k, v in calls.items() if k != "state"} == {
        k: v for k, v in DOCKER_CALLS.items() if k != "state"
    }, calls
    task_round_trips = counted_store.calls["update_one"] + counted_store.calls["find_one"]
    assert task_round_trips <= STORE_ROUND_TRIPS, dict(counted_store.calls)


class RecordingStore:
    """The real store, with the collection, filter and projection of every ``find`` kept."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.finds: list[tuple[str, Any, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def find(self, collection: str, filter: Any, **kwargs: Any) -> Any:
        self.finds.append((collection, filter, kwargs.get("projection")))
        return self._store.find(collection, filter, **kwargs)


@pytest_twisted.ensureDeferred
async def test_a_round_reads_only_the_placement_fields_of_the_queue(tes: Harness) -> None:
    """A round runs at every task's end: it must not read every queued task's whole document
    (executors, inputs, logs), only what placement needs; the runner reads the one it claims."""
    scheduler = tes.root.scheduler
    recording = RecordingStore(scheduler.store)
    scheduler.store = recording
    try:
        task_id = await insert_task(tes.root.store, [executor("sh", "-c", "echo " + "x" * 1000)])
        doc = await wait_state(tes, task_id, ENDED)
    finally:
        scheduler.store = tes.root.store
    assert doc["state"] == "COMPLETE", doc
    assert doc["logs"][0]["logs"][0]["stdout"] == "x" * 1000 + "\n"
    queue_reads = [p for c, f, p in recording.finds if c == "tes_tasks" and f == {"state": "QUEUED"}]
    assert queue_reads, recording.finds
    assert all(p == {"created_at": 1, "ram_mb": 1, "cpus": 1, "engine_only": 1} for p in queue_reads), queue_reads
