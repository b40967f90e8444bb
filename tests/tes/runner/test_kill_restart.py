"""``kill -9`` of the real daemon while a TES executor sleeps, then a restart on the same
store: the restarted daemon waits on the executor that is still running (no second container)
and the task ends COMPLETE with its output."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from bson import ObjectId
from twisted.internet import reactor, threads

from ccserver import config as configuration
from ccserver.storage import open_store
from ccserver.tes import docker_tes
from tests.conftest import STORE_BACKENDS
from tests.resilience.conftest import gateway
from tests.resilience.harness import Cluster, wait_until
from tests.tes.runner.conftest import executor, insert_task

__all__ = ["gateway"]  # the resilience tests' fixture


async def _with_store(cluster: Cluster, work: Any) -> Any:
    """Open the daemon's store in this process (while the daemon is not running, for the
    embedded one) and run ``work(store)``."""
    store = open_store(configuration.load(str(cluster.config), env={"HOME": str(cluster.tmp / "home")}), reactor)
    started = store.startService()
    if started is not None:
        await started
    try:
        return await work(store)
    finally:
        stopped = store.stopService()
        if stopped is not None:
            await stopped


def _containers(cluster: Cluster, task_id: ObjectId) -> list[dict[str, Any]]:
    labels = [f"{docker_tes.TASK_LABEL}={task_id}"]
    return list(cluster.engine.api.containers(all=True, filters={"label": labels}))


@pytest.mark.parametrize("backend", STORE_BACKENDS)
@pytest_twisted.ensureDeferred
async def test_kill_9_during_a_sleeping_executor_then_restart_completes_without_a_duplicate(
    tmp_path: Path, gateway: str, backend: str, request: pytest.FixtureRequest
) -> None:
    uri = request.getfixturevalue("ferretdb").uri if backend == "ferretdb" else None
    cluster = Cluster(tmp_path, gateway, uri, interval=1)
    try:
        task_id = await _with_store(
            cluster, lambda store: insert_task(store, [executor("sh", "-c", "sleep 8; echo done")])
        )
        since = int(time.time()) - 1
        await threads.deferToThread(cluster.start)
        await threads.deferToThread(
            wait_until,
            lambda: [c["State"] for c in _containers(cluster, task_id)],
            lambda states: states == ["running"],
            60,
            "the executor to run",
        )
        await threads.deferToThread(cluster.kill)
        assert [c["State"] for c in _containers(cluster, task_id)] == ["running"]
        await threads.deferToThread(cluster.start)
        # the task ends and its container and volumes go
        await threads.deferToThread(
            wait_until, lambda: _containers(cluster, task_id), lambda found: not found, 90, "the task to end"
        )
        assert await threads.deferToThread(cluster.terminate) == 0
        doc = await _with_store(cluster, lambda store: store.find_one("tes_tasks", {"_id": task_id}))
        assert doc["state"] == "COMPLETE", (doc, cluster.output()[-5000:])
        assert doc["trials"] == 1
        (task_log,) = doc["logs"]
        (only,) = task_log["logs"]
        assert only["exit_code"] == 0 and only["stdout"] == "done\n"
        created = cluster.engine.api.events(
            since=since,
            until=int(time.time()) + 1,
            decode=True,
            filters={"type": "container", "event": "create", "label": f"{docker_tes.TASK_LABEL}={task_id}"},
        )
        assert len(list(created)) == 1
        volumes = cluster.engine.api.volumes(filters={"label": f"{docker_tes.TASK_LABEL}={task_id}"})
        assert not volumes.get("Volumes")
    finally:
        cluster.close()
