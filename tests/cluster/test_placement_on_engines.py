"""Placement over several real engines: spread uses them all, binpack fills one (cc-protocol §8.2)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import pytest_twisted
from bson import ObjectId

from ccserver import states
from tests.cluster.conftest import Engines, MakeCluster, ccserver_containers, unix_node
from tests.conftest import STORE_BACKENDS
from tests.e2e.harness import NOINPUT_IMAGE, Harness, app_task, wait_for


def sleeping_task(harness: Harness, seconds: float) -> dict[str, Any]:
    task = app_task(
        harness.archive_url, uuid.uuid4().hex[:10], [], params=["--sleep", str(seconds)], results=["parameters"]
    )
    task["application_container_description"]["image"] = NOINPUT_IMAGE
    return task


async def run_batch(harness: Harness, count: int, seconds: float) -> tuple[list[dict[str, Any]], list[str]]:
    """Submit ``count`` overlapping tasks and wait until each one's first application container
    was started; (those containers, the task ids)."""
    code, body = await harness.post("/tasks", {"tasks": [sleeping_task(harness, seconds) for _ in range(count)]})
    assert code == 200, body
    ids = [ObjectId(t["_id"]) for t in body["tasks"]]

    def started(found: list[dict[str, Any]]) -> bool:
        firsts = {}
        for app in sorted(found, key=lambda a: a["created_at"]):
            firsts.setdefault(app["task_id"][0], app)
        return len(firsts) == count and all(
            any(t["state"] == states.PROCESSING for t in a["transitions"]) for a in firsts.values()
        )

    apps = await wait_for(
        lambda: harness.root.store.find("application_containers", {"task_id": {"$in": ids}}),
        started,
        120,
        f"{count} application containers to start",
    )
    firsts: dict[Any, dict[str, Any]] = {}
    for app in sorted(apps, key=lambda a: a["created_at"]):
        firsts.setdefault(app["task_id"][0], app)
    return list(firsts.values()), [t["_id"] for t in body["tasks"]]


def three_nodes(engines: Engines) -> dict[str, dict[str, Any]]:
    return {e.name: unix_node(e) for e in (engines.e1, engines.e2, engines.e3)}


def assert_running_where_placed(engines: Engines, apps: list[dict[str, Any]]) -> None:
    clients = {e.name: e.client() for e in (engines.e1, engines.e2, engines.e3)}
    try:
        present = {node: set(ccserver_containers(client)) for node, client in clients.items()}
    finally:
        for client in clients.values():
            client.close()
    for app in apps:
        if app["state"] == states.PROCESSING:  # still running: its container is on its node
            assert str(app["_id"]) in present[app["cluster_node"]], (app["cluster_node"], present)


@pytest.mark.parametrize("backend", STORE_BACKENDS)
@pytest_twisted.ensureDeferred
async def test_spread_uses_all_three_engines(cluster: MakeCluster, running_engines: Engines, backend: str) -> None:
    harness = await cluster(backend, three_nodes(running_engines), allocation="spread")
    apps, ids = await run_batch(harness, 6, 6)
    assert sorted(a["cluster_node"] for a in apps) == ["e1", "e1", "e2", "e2", "e3", "e3"]
    assert_running_where_placed(running_engines, apps)
    code, nodes = await harness.get("/nodes")
    assert code == 200
    assert sorted(n["name"] for n in nodes["healthy_nodes"]) == ["e1", "e2", "e3"]
    assert nodes["dead_nodes"] == []
    for task_id in ids:
        task = await harness.wait_task(task_id, states.END_STATES, timeout=120)
        assert task["state"] == states.SUCCESS, task["transitions"]
        assert task["trials"] == 0


@pytest.mark.parametrize("backend", STORE_BACKENDS)
@pytest_twisted.ensureDeferred
async def test_binpack_uses_one_engine(cluster: MakeCluster, running_engines: Engines, backend: str) -> None:
    harness = await cluster(backend, three_nodes(running_engines), allocation="binpack")
    apps, ids = await run_batch(harness, 4, 3)
    assert len({a["cluster_node"] for a in apps}) == 1, [a["cluster_node"] for a in apps]
    assert_running_where_placed(running_engines, apps)
    for task_id in ids:
        task = await harness.wait_task(task_id, states.END_STATES, timeout=120)
        assert task["state"] == states.SUCCESS, task["transitions"]
