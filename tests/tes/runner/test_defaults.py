"""``[tes] default_ram_gb`` and ``default_cpu_cores``: what a task submitted without resources
reserves and is limited to (they were not handed to the API, which used 1 GB and 1 core)."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from bson import ObjectId

from tests.conftest import STORE_BACKENDS
from tests.tes.runner.conftest import BUSYBOX, tes_harness, wait_state

ENDED = ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED")


@pytest.mark.parametrize("backend", STORE_BACKENDS)
@pytest_twisted.ensureDeferred
async def test_a_task_without_resources_gets_the_configured_defaults(
    request: pytest.FixtureRequest, tmp_path: Any, engine: Any, gateway: str, daemon_log: Any, backend: str
) -> None:
    tes = {"default_ram_gb": 0.0625, "default_cpu_cores": 0.25}
    async with tes_harness(request, tmp_path, engine, gateway, backend, tes=tes) as h:
        body = {"executors": [{"image": BUSYBOX, "command": ["sh", "-c", "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us"]}]}
        code, answer = await h.post("/ga4gh/tes/v1/tasks", body)
        assert code == 200, answer
        task_id = ObjectId(answer["id"])
        doc = await wait_state(h, task_id, ENDED)
        assert doc["state"] == "COMPLETE", doc
        assert doc["ram_mb"] == 64 and doc["cpus"] == 0.25
        name = doc["logs"][0]["metadata"]["node"]
        assert name == "local"
        # the container ran with those limits (its CPU quota: a quarter of the 100 ms period)
        assert doc["logs"][0]["logs"][0]["stdout"].strip() == "25000"
