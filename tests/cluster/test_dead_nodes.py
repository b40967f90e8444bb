"""Dead nodes (cc-protocol §8.9; docs/cluster.rst): found dead within the documented bound,
their tasks retried elsewhere, announced by dead_node_notification, and used again once they
are back (by the heartbeat alone, or at once by POST /nodes)."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import pytest
import pytest_twisted
from bson import ObjectId
from twisted.internet import reactor

from ccserver import states
from ccserver.cluster.docker_ops import DAEMON_LABEL, KIND_LABEL
from ccserver.cluster.service import HEALTH_SLACK, EventReader
from tests.cluster.conftest import HEARTBEAT, Engines, MakeCluster, ccserver_containers, unix_node
from tests.conftest import STORE_BACKENDS
from tests.e2e.harness import NOINPUT_IMAGE, Harness, app_task, sleep, wait_for

#: what the test machine may add to the documented bound (a loaded reactor, polling)
MEASURING_SLACK = 3.0


def sleeping_task(harness: Harness, seconds: float) -> dict[str, Any]:
    task = app_task(
        harness.archive_url, uuid.uuid4().hex[:10], [], params=["--sleep", str(seconds)], results=["parameters"]
    )
    task["application_container_description"]["image"] = NOINPUT_IMAGE
    return task


async def nodes_of(harness: Harness) -> tuple[set[str], dict[str, str]]:
    code, body = await harness.get("/nodes")
    assert code == 200, body
    return {n["name"] for n in body["healthy_nodes"]}, {d["name"]: d["description"] for d in body["dead_nodes"]}


async def wait_dead(harness: Harness, name: str, timeout: float) -> dict[str, str]:
    _, dead = await wait_for(
        lambda: nodes_of(harness),
        lambda r: name in r[1],
        timeout,
        f"node {name} to be listed under dead_nodes",
        interval=0.1,
    )
    return dead


async def wait_healthy(harness: Harness, name: str, timeout: float) -> None:
    await wait_for(
        lambda: nodes_of(harness),
        lambda r: name in r[0],
        timeout,
        f"node {name} to be listed under healthy_nodes",
        interval=0.1,
    )


@pytest.mark.parametrize("backend", STORE_BACKENDS)
@pytest_twisted.ensureDeferred
async def test_a_killed_node_is_dead_its_tasks_finish_elsewhere_and_it_comes_back(
    cluster: MakeCluster, running_engines: Engines, backend: str
) -> None:
    victim = running_engines.e2
    harness = await cluster(backend, {"e1": unix_node(running_engines.e1), "e2": unix_node(victim)})
    code, body = await harness.post("/tasks", {"tasks": [sleeping_task(harness, 20) for _ in range(4)]})
    assert code == 200, body
    ids = [ObjectId(t["_id"]) for t in body["tasks"]]
    apps = await wait_for(
        lambda: harness.root.store.find("application_containers", {"task_id": {"$in": ids}}),
        lambda found: len(found) == 4 and all(a["state"] == states.PROCESSING for a in found),
        120,
        "four application containers to run",
    )
    on_victim = {a["task_id"][0] for a in apps if a["cluster_node"] == "e2"}
    assert len(on_victim) == 2  # spread over two equal nodes

    killed_at = reactor.seconds()
    victim.kill()
    dead = await wait_dead(harness, "e2", 60)
    took = reactor.seconds() - killed_at
    bound = HEARTBEAT + harness.root.config.docker.api_timeout + HEALTH_SLACK
    print(f"killed node listed as dead after {took:.2f} s (bound {bound} s)")
    assert took <= bound + MEASURING_SLACK
    assert "not running" in dead["e2"] and victim.socket in dead["e2"], dead["e2"]
    assert {d["name"] for d in await harness.root.store.find("dead_nodes", {})} == {"e2"}

    # dead_node_notification: {"name": node}, with its basic auth
    notifications = harness.notifications.archive  # type: ignore[attr-defined]
    await wait_for(lambda: notifications.notifications, bool, 30, "the dead-node notification")
    assert notifications.notifications == [{"name": "e2"}]
    assert notifications.notification_auth == ["Basic " + base64.b64encode(b"cc:dead-pw").decode()]

    # every task ends well; those of the dead node used a second trial, on e1
    for task_id in ids:
        task = await harness.wait_task(str(task_id), states.END_STATES, timeout=180)
        assert task["state"] == states.SUCCESS, task["transitions"]
        if task_id in on_victim:
            assert task["trials"] == 1, task["transitions"]
            assert any(
                t["state"] == states.WAITING
                and "trial 1 of 3" in t["description"]
                and "node e2 is dead" in t["description"]
                for t in task["transitions"]
            ), task["transitions"]
            last = await harness.root.store.find("application_containers", {"task_id": task_id})
            assert [a["cluster_node"] for a in sorted(last, key=lambda a: a["created_at"])] == ["e2", "e1"]
        else:
            assert task["trials"] == 0

    # the engine comes back: the heartbeat alone makes the node healthy again (after an
    # inspection container ran there)
    victim.start()
    back_at = reactor.seconds()
    await wait_healthy(harness, "e2", 60)
    print(f"restarted node healthy again after {reactor.seconds() - back_at:.2f} s")
    assert await harness.root.store.find("dead_nodes", {}) == []
    # and is used again
    code, body = await harness.post("/tasks", {"tasks": [sleeping_task(harness, 0) for _ in range(2)]})
    assert code == 200, body
    for entry in body["tasks"]:
        task = await harness.wait_task(entry["_id"], states.END_STATES, timeout=120)
        assert task["state"] == states.SUCCESS, task["transitions"]


@pytest_twisted.ensureDeferred
async def test_post_nodes_revives_a_dead_node_and_its_event_stream(
    cluster: MakeCluster, running_engines: Engines
) -> None:
    """No heartbeat and no periodic reconciliation here: the kill is noticed through the
    node's event stream, the return only through ``POST /nodes``, and a container that ends
    afterwards only through the new event stream."""
    victim = running_engines.e2
    harness = await cluster(
        "embedded",
        {"e1": unix_node(running_engines.e1), "e2": unix_node(victim)},
        docker_settings={"heartbeat_seconds": 3600},
        server_settings={"scheduling_interval_seconds": 3600},
    )
    node = harness.root.cluster.nodes["e2"]
    await wait_for(
        lambda: isinstance(node.events, EventReader) and node.events._stream is not None,
        bool,
        30,
        "the event stream of e2 to be open",
    )
    killed_at = reactor.seconds()
    victim.kill()
    await wait_dead(harness, "e2", 30)
    print(f"killed node found dead through its event stream after {reactor.seconds() - killed_at:.2f} s")
    victim.start()
    await sleep(2 * HEARTBEAT)
    healthy, dead = await nodes_of(harness)
    assert "e2" in dead and "e2" not in healthy  # nothing checks it on its own here

    code, _ = await harness.post("/nodes", {"nodes": [{"name": "e2"}]}, user="alice")
    assert code == 403
    code, answer = await harness.post("/nodes", {"nodes": [{"name": "e2"}]}, user="admin")
    assert (code, answer) == (200, {})
    healthy, dead = await nodes_of(harness)
    assert "e2" in healthy and dead == {}

    # the event stream was opened again: a container of ours (our daemon label) that ends there
    # is noticed and removed (its name is an id the store does not know)
    await wait_for(
        lambda: isinstance(node.events, EventReader) and node.events._stream is not None,
        bool,
        30,
        "the event stream of e2 to be open again",
    )
    client = victim.client()
    try:
        name = str(ObjectId())
        labels = {KIND_LABEL: "application", DAEMON_LABEL: harness.root.identity.value}
        client.containers.run(NOINPUT_IMAGE, ["true"], name=name, labels=labels, detach=True)
        await wait_for(
            lambda: name in ccserver_containers(client),
            lambda present: not present,
            30,
            "the ended container to be removed through the event stream",
        )
    finally:
        client.close()


@pytest_twisted.ensureDeferred
async def test_a_hanging_node_is_dead_within_the_bound(cluster: MakeCluster, running_engines: Engines) -> None:
    """A dockerd that accepts connections but answers nothing (SIGSTOP) is found dead by the
    heartbeat's timeout: at most heartbeat_seconds + api_timeout + HEALTH_SLACK later."""
    victim = running_engines.e3
    api_timeout = 3.0
    harness = await cluster(
        "embedded",
        {"e1": unix_node(running_engines.e1), "e3": unix_node(victim)},
        docker_settings={"api_timeout": api_timeout},
    )
    paused_at = reactor.seconds()
    victim.pause()
    try:
        dead = await wait_dead(harness, "e3", 60)
        took = reactor.seconds() - paused_at
        bound = HEARTBEAT + api_timeout + HEALTH_SLACK
        print(f"hanging node listed as dead after {took:.2f} s (bound {bound} s)")
        assert api_timeout <= took <= bound + MEASURING_SLACK
        assert "did not answer within 3 s" in dead["e3"], dead["e3"]
        healthy, _ = await nodes_of(harness)
        assert healthy == {"e1"}
    finally:
        victim.resume()
    await wait_healthy(harness, "e3", 60)


@pytest_twisted.ensureDeferred
async def test_a_node_missing_at_start_up_does_not_stop_the_daemon(
    cluster: MakeCluster, running_engines: Engines, tmp_path: Any
) -> None:
    missing = f"unix://{tmp_path}/no-engine-here.sock"
    # the missing node comes first: nothing of the start-up depends on the first node
    harness = await cluster(
        "embedded", {"gone": {"base_url": missing}, "e1": unix_node(running_engines.e1)}, wait_healthy=False
    )
    healthy, dead = await wait_for(
        lambda: nodes_of(harness), lambda r: r[0] == {"e1"} and "gone" in r[1], 30, "e1 healthy and gone dead"
    )
    assert "not running" in dead["gone"] and "no-engine-here.sock" in dead["gone"], dead["gone"]
    notifications = harness.notifications.archive  # type: ignore[attr-defined]
    await wait_for(lambda: notifications.notifications, bool, 30, "the dead-node notification")
    assert notifications.notifications == [{"name": "gone"}]
    code, body = await harness.post("/tasks", sleeping_task(harness, 0))
    assert code == 200, body
    task = await harness.wait_task(body["_id"], states.END_STATES, timeout=120)
    assert task["state"] == states.SUCCESS, task["transitions"]
