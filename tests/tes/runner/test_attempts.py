"""TES tasks run on the real Docker engine: executors in order, logs, failures, limits."""

from __future__ import annotations

import pytest_twisted

from tests.e2e.harness import Harness
from tests.tes.runner.conftest import executor, insert_task, leftovers, wait_state

ENDED = ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED")


@pytest_twisted.ensureDeferred
async def test_one_executor_completes_with_its_stdout_tail_and_exit_code(tes: Harness) -> None:
    task_id = await insert_task(tes.root.store, [executor("sh", "-c", "echo hi; echo oops >&2")])
    doc = await wait_state(tes, task_id, ENDED)
    assert doc["state"] == "COMPLETE", doc
    assert doc["trials"] == 1
    (task_log,) = doc["logs"]
    assert task_log["metadata"] == {"node": "local"}
    assert task_log["end_time"]
    (executor_log,) = task_log["logs"]
    assert executor_log["exit_code"] == 0
    assert executor_log["stdout"] == "hi\n"
    assert executor_log["stderr"] == "oops\n"
    assert executor_log["start_time"] and executor_log["end_time"]
    assert [t["state"] for t in doc["transitions"]] == ["QUEUED", "INITIALIZING", "RUNNING", "COMPLETE"]
    assert doc["ended_at"]
    assert leftovers(tes, task_id) == ([], [])
