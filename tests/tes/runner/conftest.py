"""Fixtures of the TES runner tests: an in-process ccserver on the real dockerd per storage
backend (the e2e harness), and QUEUED TES task documents written straight into its store in
the format of contracts §1 (the REST API is another part's)."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import docker
import pytest
import pytest_twisted
from bson import ObjectId

from ccserver.storage.base import Store
from ccserver.tes import docker_tes
from ccserver.tes.records import rfc3339
from tests.conftest import STORE_BACKENDS
from tests.e2e.conftest import daemon_log, e2e_config, gateway, start_harness, stop_harness

__all__ = ["daemon_log", "gateway"]  # fixtures shared with the e2e tests
from tests.e2e.harness import Harness, wait_for

BUSYBOX = "ccserver-test/busybox:1"


@pytest.fixture(scope="session")
def engine() -> Any:
    client = docker.from_env(timeout=60)
    client.images.get(BUSYBOX)  # built by scripts/build-test-images; never pulled
    yield client
    client.close()


def executor(*command: str, **extra: Any) -> dict[str, Any]:
    return {"image": BUSYBOX, "command": list(command), **extra}


async def insert_task(
    store: Store, executors: list[dict[str, Any]], ram_gb: float = 0.125, cpu_cores: float = 0.5, **extra: Any
) -> ObjectId:
    now = time.time()
    doc: dict[str, Any] = {
        "_id": ObjectId(),
        "username": "alice",
        "state": "QUEUED",
        "created_at": now,
        "creation_time": rfc3339(now),
        "name": "test",
        "description": None,
        "inputs": [],
        "outputs": [],
        "executors": executors,
        "volumes": [],
        "resources": {"ram_gb": ram_gb, "cpu_cores": cpu_cores},
        "tags": {},
        "tag_list": [],
        "ram_mb": math.ceil(ram_gb * 1024),
        "cpus": cpu_cores,
        "trials": 0,
        "node": None,
        "logs": [],
        "transitions": [{"state": "QUEUED", "timestamp": now, "description": "Submitted."}],
        "ended_at": None,
    }
    doc.update(extra)
    if "tag_list" not in extra:
        doc["tag_list"] = [{"key": k, "value": v} for k, v in doc["tags"].items()]
    await store.insert_one("tes_tasks", doc)
    return doc["_id"]


async def wait_state(h: Harness, task_id: ObjectId, states: tuple[str, ...], timeout: float = 90) -> dict[str, Any]:
    async def get() -> Any:
        return await h.root.store.find_one("tes_tasks", {"_id": task_id})

    return await wait_for(get, lambda d: d is not None and d["state"] in states, timeout, f"{task_id} in {states}")


def leftovers(h: Harness, task_id: ObjectId | None = None) -> tuple[list[str], list[str]]:
    """This daemon's TES containers and volumes (of one task) still on the engine."""
    labels = [f"{docker_tes.DAEMON_LABEL}={h.root.identity.value}"]
    labels.append(docker_tes.TASK_LABEL if task_id is None else f"{docker_tes.TASK_LABEL}={task_id}")
    containers = [c["Names"][0] for c in h.engine.api.containers(all=True, filters={"label": labels})]
    volumes = [v["Name"] for v in h.engine.api.volumes(filters={"label": labels}).get("Volumes") or []]
    return containers, volumes


@asynccontextmanager
async def tes_harness(
    request: pytest.FixtureRequest, tmp_path: Any, engine: Any, gateway: str, backend: str, **overrides: Any
) -> AsyncIterator[Harness]:
    """A daemon in this process; at its end no TES container or volume of it is left."""
    sections: dict[str, Any] = {"server": {"scheduling_interval_seconds": 1}, "docker": {"pull_policy": "never"}}
    for section, values in overrides.items():
        sections.setdefault(section, {}).update(values)
    config = e2e_config(tmp_path, gateway, backend, request, **sections)
    harness = await start_harness(config, engine, gateway)
    try:
        yield harness
    finally:
        try:
            await wait_for(lambda: leftovers(harness), lambda found: found == ([], []), 60, "no TES leftovers")
        finally:
            await stop_harness(harness)


@pytest_twisted.async_yield_fixture(params=STORE_BACKENDS)
async def tes(
    request: pytest.FixtureRequest, tmp_path: Any, engine: Any, gateway: str, daemon_log: Any
) -> AsyncIterator[Harness]:
    async with tes_harness(request, tmp_path, engine, gateway, request.param) as harness:
        yield harness
