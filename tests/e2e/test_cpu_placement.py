"""``tes.legacy_cpu_placement``: 0.10 tasks placed by CPUs too, on the real engine.

Each task needs ``tes.legacy_container_cpus`` free CPUs, here half the engine's, so at most two
application containers are live (and so running) at once however many tasks wait; the others
wait in the queue and all succeed.  Placement does not depend on the store: the embedded one
only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_twisted
from bson import ObjectId
from twisted.internet import reactor
from twisted.internet.threads import deferToThread

from ccserver import states
from ccserver.cluster.docker_ops import DAEMON_LABEL, KIND_LABEL
from tests.e2e.conftest import e2e_config, running
from tests.e2e.harness import NOINPUT_IMAGE, Harness, app_task, sleep

TASKS = 5


@pytest_twisted.async_yield_fixture
async def two_at_once(
    request: pytest.FixtureRequest, tmp_path: Any, engine: Any, gateway: str, daemon_log: Any
) -> AsyncIterator[Harness]:
    cpus = (await deferToThread(engine.info))["NCPU"]
    config = e2e_config(
        tmp_path,
        gateway,
        "embedded",
        request,
        tes={"legacy_cpu_placement": True, "legacy_container_cpus": cpus / 2},
    )
    async with running(config, engine, gateway, daemon_log) as harness:
        yield harness


@pytest_twisted.ensureDeferred
async def test_a_node_runs_only_as_many_tasks_as_its_cpus_allow(two_at_once: Harness) -> None:
    h = two_at_once
    task = app_task(h.archive_url, "cpus", [], params=["--sleep", "2"], results=[])
    task["application_container_description"]["image"] = NOINPUT_IMAGE
    code, body = await h.post("/tasks", {"tasks": [task] * TASKS})
    assert code == 200, body
    ids = [ObjectId(t["_id"]) for t in body["tasks"]]
    labels = [f"{KIND_LABEL}=application", f"{DAEMON_LABEL}={h.root.identity.value}"]
    most_live = most_running = 0
    deadline = reactor.seconds() + 120
    while True:
        live = await h.root.store.find(
            "application_containers", {"state": {"$in": list(states.LIVE_STATES)}}, projection={"_id": 1}
        )
        running = await deferToThread(h.engine.api.containers, filters={"label": labels, "status": "running"})
        most_live, most_running = max(most_live, len(live)), max(most_running, len(running))
        ended = await h.root.store.find(
            "tasks", {"_id": {"$in": ids}, "state": {"$in": [states.SUCCESS, states.FAILED]}}
        )
        if len(ended) == TASKS:
            break
        assert reactor.seconds() < deadline, f"{len(ended)} of {TASKS} tasks ended within 120 s"
        await sleep(0.1)
    assert [t["state"] for t in ended] == [states.SUCCESS] * TASKS
    assert most_live <= 2 and most_running <= 2
    assert most_running == 2  # and it did run two at once
