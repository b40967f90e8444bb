"""Cancel, time limits, dead nodes and notifications of TES tasks, on the real Docker engine."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted

from tests.conftest import STORE_BACKENDS
from tests.e2e.harness import Harness, wait_for
from tests.tes.runner.conftest import executor, insert_task, leftovers, tes_harness, wait_state

ENDED = ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED")


async def cancel(h: Harness, task_id: Any) -> None:
    """What the TES API does: INITIALIZING/RUNNING → CANCELING (compare-and-set), then a wake-up."""
    changed = await h.root.store.update_one(
        "tes_tasks",
        {"_id": task_id, "state": {"$in": ["INITIALIZING", "RUNNING"]}},
        {"$set": {"state": "CANCELING"}, "$push": {"transitions": {"state": "CANCELING", "timestamp": 0.0}}},
    )
    assert changed == 1
    h.root.wakeup()


@pytest_twisted.ensureDeferred
async def test_cancel_of_a_sleeping_task_removes_its_containers_and_volumes(tes: Harness) -> None:
    task_id = await insert_task(
        tes.root.store,
        [executor("sleep", "300"), executor("echo", "never")],
        volumes=["/work"],
        inputs=[{"path": "/in/a.txt", "content": "x"}],
    )
    await wait_state(tes, task_id, ("RUNNING",))
    await wait_for(lambda: leftovers(tes, task_id)[0], bool, 30, "the executor container")
    containers, volumes = leftovers(tes, task_id)
    assert len(containers) == 1 and len(volumes) == 2  # /work and /in
    started = tes.root.reactor.seconds()
    await cancel(tes, task_id)
    doc = await wait_state(tes, task_id, ENDED, timeout=60)
    assert doc["state"] == "CANCELED", doc
    assert tes.root.reactor.seconds() - started < 30  # not the 300 s of the sleep
    assert leftovers(tes, task_id) == ([], [])
    assert [t["state"] for t in doc["transitions"]][-2:] == ["CANCELING", "CANCELED"]
    assert doc["trials"] == 1


@pytest_twisted.ensureDeferred
async def test_a_canceling_task_without_an_attempt_is_swept_and_canceled(tes: Harness) -> None:
    """As after a restart: the task is CANCELING but no attempt of this process runs it."""
    task_id = await insert_task(
        tes.root.store, [executor("busybox", "true")], state="CANCELING", node="local", trials=1
    )
    daemon = tes.root.identity.value
    from ccserver.tes import docker_tes

    labels = docker_tes.labels(daemon, str(task_id), 1)
    tes.engine.api.create_volume(name=docker_tes.volume_name(str(task_id), 1, 0), labels=labels)
    assert leftovers(tes, task_id)[1]
    tes.root.wakeup()
    doc = await wait_state(tes, task_id, ENDED, timeout=30)
    assert doc["state"] == "CANCELED"
    assert leftovers(tes, task_id) == ([], [])


@pytest.mark.parametrize("backend", STORE_BACKENDS)
@pytest_twisted.ensureDeferred
async def test_running_longer_than_its_limit_is_a_system_error_retried(
    request: pytest.FixtureRequest, tmp_path: Any, engine: Any, gateway: str, daemon_log: Any, backend: str
) -> None:
    async with tes_harness(
        request,
        tmp_path,
        engine,
        gateway,
        backend,
        tes={"running_timeout_seconds": 2},
        defaults={"error_handling": {"max_task_trials": 2}},
    ) as h:
        task_id = await insert_task(h.root.store, [executor("sleep", "300")])
        doc = await wait_state(h, task_id, ENDED, timeout=90)
        assert doc["state"] == "SYSTEM_ERROR", doc
        assert doc["trials"] == 2 and len(doc["logs"]) == 2
        for task_log in doc["logs"]:
            assert any("stayed RUNNING longer than 2 s" in line for line in task_log["system_logs"])
            assert task_log["end_time"]


@pytest.mark.parametrize("backend", ["embedded"])
@pytest_twisted.ensureDeferred
async def test_initializing_longer_than_its_limit_is_a_system_error_retried(
    request: pytest.FixtureRequest, tmp_path: Any, engine: Any, gateway: str, daemon_log: Any, backend: str
) -> None:
    async with tes_harness(
        request,
        tmp_path,
        engine,
        gateway,
        backend,
        tes={"initializing_timeout_seconds": 0.001},
        defaults={"error_handling": {"max_task_trials": 2}},
    ) as h:
        task_id = await insert_task(h.root.store, [executor("echo", "never")])
        doc = await wait_state(h, task_id, ENDED, timeout=60)
        assert doc["state"] == "SYSTEM_ERROR", doc
        assert doc["trials"] == 2
        for task_log in doc["logs"]:
            assert task_log["logs"] == []
            assert any("stayed INITIALIZING longer than 0.001 s" in line for line in task_log["system_logs"])


@pytest_twisted.ensureDeferred
async def test_a_dead_node_fails_the_attempt_into_a_retry(tes: Harness) -> None:
    task_id = await insert_task(tes.root.store, [executor("sh", "-c", "sleep 4; echo ok")])
    await wait_state(tes, task_id, ("RUNNING",))
    await wait_for(lambda: leftovers(tes, task_id)[0], bool, 30, "the executor container")
    # what the cluster tells its listeners when a node stops answering
    tes.root.tes_runner.node_dead("local")
    doc = await wait_state(tes, task_id, ENDED, timeout=90)
    assert doc["state"] == "COMPLETE", doc
    assert doc["trials"] == 2
    first, second = doc["logs"]
    assert any("node local is dead" in line for line in first["system_logs"])
    assert second["logs"][0]["stdout"] == "ok\n"


@pytest_twisted.ensureDeferred
async def test_the_notify_tag_posts_the_end_of_the_task(tes: Harness) -> None:
    task_id = await insert_task(
        tes.root.store,
        [executor("echo", "hi")],
        # a key with a dot cannot be a field name on MongoDB: the tag is in tag_list there
        tag_list=[{"key": "ccserver.notify", "value": f"{tes.archive_url}/notify"}],
    )
    await wait_state(tes, task_id, ENDED)
    found = await wait_for(lambda: tes.archive.notifications, bool, 30, "the notification")
    assert found == [{"id": str(task_id), "state": "COMPLETE"}]


@pytest_twisted.ensureDeferred
async def test_the_log_tails_are_updated_while_the_executor_runs(tes: Harness) -> None:
    task_id = await insert_task(tes.root.store, [executor("sh", "-c", "sleep 1; echo early; sleep 300")])

    async def tail() -> Any:
        doc = await tes.root.store.find_one("tes_tasks", {"_id": task_id})
        logs = doc["logs"][0]["logs"] if doc and doc["logs"] else []
        return (doc["state"], logs[0]["stdout"], logs[0]["exit_code"]) if logs else None

    assert await wait_for(tail, lambda t: t is not None and t[1] == "early\n", 30, "the running tail") == (
        "RUNNING",
        "early\n",
        None,
    )
    await cancel(tes, task_id)
    assert (await wait_state(tes, task_id, ENDED))["state"] == "CANCELED"


@pytest_twisted.ensureDeferred
async def test_leftovers_of_ended_tasks_are_removed_when_a_node_is_found_healthy(tes: Harness) -> None:
    from ccserver.tes import docker_tes

    task_id = await insert_task(tes.root.store, [executor("busybox", "true")], state="COMPLETE", trials=1)
    labels = docker_tes.labels(tes.root.identity.value, str(task_id), 1)
    tes.engine.api.create_volume(name=docker_tes.volume_name(str(task_id), 1, 0), labels=labels)
    tes.engine.api.create_container(
        "ccserver-test/busybox:1", ["true"], name=docker_tes.container_name(str(task_id), 1, 0), labels=labels
    )
    # another daemon's leftovers are not ours
    foreign = {**labels, docker_tes.DAEMON_LABEL: "another-daemon"}
    other = docker_tes.volume_name(str(task_id), 9, 0)
    tes.engine.api.create_volume(name=other, labels=foreign)
    try:
        tes.root.tes_runner.node_healthy("local")
        await wait_for(lambda: leftovers(tes, task_id), lambda found: found == ([], []), 30, "the sweep")
        assert tes.engine.api.inspect_volume(other)["Name"] == other
    finally:
        tes.engine.api.remove_volume(other)
