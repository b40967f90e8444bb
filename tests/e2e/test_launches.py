"""Rounds never wait on Docker (issue 9, faults 1 and 4), on the real engine and a registry
that never answers: with pulls hanging, an impossible task still fails within one scheduling
interval, and a callback answers within 1 s while the Docker pool is saturated."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_twisted
import treq
from bson import ObjectId
from twisted.internet import reactor

from ccserver import states
from tests import hanging_registry
from tests.conftest import STORE_BACKENDS
from tests.e2e.conftest import e2e_config, start_harness, stop_harness
from tests.e2e.harness import Harness, app_task, wait_for
from tests.hanging_registry import HangingRegistry

INTERVAL = 3
registry = hanging_registry.registry  # the fixture


@pytest_twisted.async_yield_fixture(params=STORE_BACKENDS)
async def pulling(
    request: pytest.FixtureRequest, tmp_path: Any, engine: Any, gateway: str, daemon_log: Any, registry: HangingRegistry
) -> AsyncIterator[Harness]:
    """A ccserver that pulls images it does not have (from the hanging registry)."""
    config = e2e_config(
        tmp_path,
        gateway,
        request.param,
        request,
        server={"scheduling_interval_seconds": INTERVAL, "shutdown_timeout_seconds": 3},
        docker={"pull_policy": "if-not-present"},
    )
    harness = await start_harness(config, engine, gateway)
    try:
        yield harness
    finally:
        try:
            registry.close()  # the hanging pulls fail now
            await stop_harness(harness)
        finally:
            for name in harness.our_containers():
                engine.api.remove_container(name, force=True)
            print(f"daemon log: {daemon_log}")


def hanging_image(registry: HangingRegistry) -> str:
    return f"127.0.0.1:{registry.port}/hang/app-{uuid.uuid4().hex[:12]}:1"


async def wait_for_pulls(registry: HangingRegistry, count: int) -> None:
    await wait_for(
        lambda: [r for r in registry.requests if "/manifests/" in r],
        lambda found: len({r.split()[1] for r in found}) >= count,
        60,
        f"{count} pulls to reach the registry",
    )


async def cancel_all(h: Harness, ids: list[str]) -> None:
    code, answer = await h.post("/tasks/cancel", {"tasks": [{"_id": i} for i in ids]})
    assert code == 200, answer


@pytest_twisted.ensureDeferred
async def test_an_impossible_task_fails_within_one_interval_while_4_pulls_hang(
    pulling: Harness, registry: HangingRegistry
) -> None:
    batch = []
    for _ in range(4):
        task = app_task(pulling.archive_url, "hang", [])
        task["application_container_description"]["image"] = hanging_image(registry)
        batch.append(task)
    batch += [batch[0], batch[0]]  # two more of the first image: they share its pull
    code, body = await pulling.post("/tasks", {"tasks": batch})
    assert code == 200, body
    hanging = [t["_id"] for t in body["tasks"]]
    await wait_for_pulls(registry, 4)
    first = batch[0]["application_container_description"]["image"]
    await wait_for(
        lambda: pulling.root.scheduler.launcher.pulls_under_way(),
        lambda pulls: len(pulls) == 4 and pulls[("local", first)] == 2,
        30,
        "one pull per image, the first one awaited by two more launches",
    )
    asked = time.monotonic()
    code, body = await pulling.post("/tasks", app_task(pulling.archive_url, "big", [], ram=10_000_000))
    assert code == 200, body
    done = await pulling.wait_task(body["_id"], states.END_STATES, timeout=60)
    took = time.monotonic() - asked
    assert done["state"] == states.FAILED and "too large" in done["transitions"][-1]["description"]
    assert took <= INTERVAL, f"the impossible task failed only after {took:.1f} s (interval {INTERVAL} s)"
    # the hanging tasks are still waiting for their images, not failed by the impossible one
    for task_id in hanging:
        assert (await pulling.task(task_id))["state"] == states.PROCESSING
    await cancel_all(pulling, hanging)


@pytest_twisted.ensureDeferred
async def test_a_callback_answers_within_1_s_while_the_docker_pool_is_saturated(
    pulling: Harness, registry: HangingRegistry
) -> None:
    root = pulling.root
    pulling.archive.inputs["data.txt"] = b"some input\n"
    # the data container starts and downloads; the application container's pull hangs
    task = app_task(pulling.archive_url, "cb", ["data.txt"])
    task["application_container_description"]["image"] = hanging_image(registry)
    code, body = await pulling.post("/tasks", task)
    assert code == 200, body
    app = await wait_for(
        lambda: root.store.find_one("application_containers", {"task_id": ObjectId(body["_id"])}),
        lambda a: a is not None,
        30,
        "the application container to be placed",
    )
    dc_id = app["data_container_ids"][0]
    await wait_for(
        lambda: root.store.find_one("data_containers", {"_id": dc_id}),
        lambda dc: dc["state"] == states.PROCESSING,
        60,
        "the data container to be processing",
    )
    # an application container of the same task, using that data container, asks for its
    # settings (callback 0) while every Docker thread is busy and more calls wait
    other = {
        "_id": ObjectId(),
        "state": states.CREATED,  # (reconcile leaves created ones alone; its launch joins the hanging pull)
        "created_at": time.time(),
        "transitions": [],
        "username": "alice",
        "task_id": [ObjectId(body["_id"])],
        "data_container_ids": [dc_id],
        "callbacks": [],
        "cluster_node": "local",
        "container_ram": 64,
    }
    await root.store.insert_one("application_containers", other)
    release = threading.Event()
    threads = root.config.docker.thread_limit
    busy = [root.cluster.pool.run(release.wait, 20) for _ in range(threads * 2)]
    reactor.callLater(5, release.set)  # a Docker call queued behind them waits about this long
    try:
        callback = {
            "callback_key": root.vault.callback_key("application_containers", other["_id"]),
            "callback_type": 0,
            "container_id": str(other["_id"]),
            "content": {"state": states.SUCCESS, "description": "settings, please"},
        }
        asked = time.monotonic()
        response = await treq.post(pulling.url + "/application-containers/callback", json=callback, timeout=30)
        answer = await response.json()
        took = time.monotonic() - asked
    finally:
        release.set()
        for d in busy:
            await d
    assert response.code == 200, answer
    assert took < 1.0, f"the callback answered after {took:.1f} s"
    url = answer["input_files"][0]["connector_access"]["url"]
    address = (await root.store.find_one("data_containers", {"_id": dc_id}))["address"]
    assert url.startswith(f"http://{address}/"), (url, address)
    await root.store.update_one("application_containers", {"_id": other["_id"]}, {"$set": {"state": states.FAILED}})
    await cancel_all(pulling, [body["_id"]])
