"""TES tasks run on the real Docker engine: executors in order, logs, failures, limits."""

from __future__ import annotations

from typing import Any

import pytest_twisted

from tests.e2e.harness import Harness, wait_for
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


@pytest_twisted.ensureDeferred
async def test_two_executors_share_a_file_in_a_declared_volume(tes: Harness) -> None:
    task_id = await insert_task(
        tes.root.store,
        [
            executor("sh", "-c", "echo shared > /work/a.txt"),
            executor("cat", "/work/a.txt"),
        ],
        volumes=["/work"],
    )
    doc = await wait_state(tes, task_id, ENDED)
    assert doc["state"] == "COMPLETE", doc
    first, second = doc["logs"][0]["logs"]
    assert (first["exit_code"], second["exit_code"]) == (0, 0)
    assert second["stdout"] == "shared\n"


@pytest_twisted.ensureDeferred
async def test_a_content_input_stdin_and_stdout_stderr_files_without_a_shell_wrapper(tes: Harness) -> None:
    task_id = await insert_task(
        tes.root.store,
        [
            # no sh: the engine feeds stdin and the runner writes the output files
            executor("busybox", "tr", "a-z", "A-Z", stdin="/in/words.txt", stdout="/out/upper.txt"),
            executor("cat", "/out/upper.txt", "/in/nope", stderr="/out/err.txt", ignore_error=True),
            executor("cat", "/out/err.txt"),
        ],
        inputs=[{"path": "/in/words.txt", "content": "hello tes\n", "type": "FILE"}],
        outputs=[],
    )
    doc = await wait_state(tes, task_id, ENDED)
    assert doc["state"] == "COMPLETE", doc
    upper, both, err = doc["logs"][0]["logs"]
    assert upper["exit_code"] == 0 and upper["stdout"] == "HELLO TES\n"
    assert both["exit_code"] == 1 and both["stdout"] == "HELLO TES\n"
    assert "/in/nope" in err["stdout"]
    assert any("content -> /in/words.txt" in line for line in doc["logs"][0]["system_logs"])


@pytest_twisted.ensureDeferred
async def test_a_failing_executor_is_an_executor_error_not_retried_and_stops_the_task(tes: Harness) -> None:
    task_id = await insert_task(
        tes.root.store, [executor("sh", "-c", "echo bad >&2; exit 3"), executor("echo", "never runs")]
    )
    doc = await wait_state(tes, task_id, ENDED)
    assert doc["state"] == "EXECUTOR_ERROR", doc
    assert doc["trials"] == 1
    (task_log,) = doc["logs"]
    (only,) = task_log["logs"]
    assert only["exit_code"] == 3 and only["stderr"] == "bad\n"
    assert "executors[0] exited with code 3" in task_log["system_logs"]


@pytest_twisted.ensureDeferred
async def test_ignore_error_goes_on_to_the_next_executor(tes: Harness) -> None:
    task_id = await insert_task(
        tes.root.store, [executor("sh", "-c", "exit 5", ignore_error=True), executor("echo", "after")]
    )
    doc = await wait_state(tes, task_id, ENDED)
    assert doc["state"] == "COMPLETE", doc
    failed, after = doc["logs"][0]["logs"]
    assert failed["exit_code"] == 5
    assert after["exit_code"] == 0 and after["stdout"] == "after\n"


@pytest_twisted.ensureDeferred
async def test_a_task_larger_than_every_node_is_a_system_error_at_once(tes: Harness) -> None:
    too_many_cpus = await insert_task(tes.root.store, [executor("busybox", "true")], cpu_cores=4096)
    too_much_ram = await insert_task(tes.root.store, [executor("busybox", "true")], ram_gb=1 << 20)
    for task_id in (too_many_cpus, too_much_ram):
        doc = await wait_state(tes, task_id, ENDED, timeout=30)
        assert doc["state"] == "SYSTEM_ERROR", doc
        assert doc["trials"] == 0
        (task_log,) = doc["logs"]
        assert "Task too large for the cluster" in task_log["system_logs"][0]
    assert "4096 CPUs" in (await wait_state(tes, too_many_cpus, ENDED))["logs"][0]["system_logs"][0]


@pytest_twisted.ensureDeferred
async def test_a_staging_failure_is_a_system_error_retried_with_one_task_log_per_attempt(tes: Harness) -> None:
    task_id = await insert_task(
        tes.root.store,
        [executor("busybox", "true")],
        inputs=[{"path": "/in/x", "url": "ftp://192.0.2.1/x", "type": "FILE"}],
    )
    doc = await wait_state(tes, task_id, ENDED)
    assert doc["state"] == "SYSTEM_ERROR", doc
    assert doc["trials"] == 3
    assert len(doc["logs"]) == 3
    for task_log in doc["logs"]:
        assert task_log["logs"] == []
        assert any("staging in: inputs[0] (ftp://192.0.2.1/x)" in line for line in task_log["system_logs"])
    states = [t["state"] for t in doc["transitions"]]
    assert states.count("QUEUED") == 3 and states[-1] == "SYSTEM_ERROR"


@pytest_twisted.ensureDeferred
async def test_the_cpu_and_ram_limits_are_in_the_containers_host_config(tes: Harness) -> None:
    task_id = await insert_task(tes.root.store, [executor("sleep", "30")], ram_gb=0.25, cpu_cores=0.75)
    await wait_state(tes, task_id, ("RUNNING",))

    def config() -> Any:
        found, _ = leftovers(tes, task_id)
        return tes.engine.api.inspect_container(found[0])["HostConfig"] if found else None

    host = await wait_for(config, lambda c: c is not None, 30, "the executor container")
    assert host["NanoCpus"] == 750_000_000
    assert host["Memory"] == 256 * 1024 * 1024
    code, nodes = await tes.get("/nodes", user="admin")
    (node,) = nodes["healthy_nodes"]
    assert node["reserved_cpus"] == 0.75
    assert node["reserved_ram"] == 256
    await tes.root.store.update_one("tes_tasks", {"_id": task_id}, {"$set": {"state": "CANCELING"}})
    tes.root.wakeup()
    assert (await wait_state(tes, task_id, ENDED))["state"] == "CANCELED"


@pytest_twisted.ensureDeferred
async def test_a_command_the_image_lacks_is_an_executor_error_with_exit_code_127(tes: Harness) -> None:
    task_id = await insert_task(tes.root.store, [executor("no-such-command")])
    doc = await wait_state(tes, task_id, ENDED)
    assert doc["state"] == "EXECUTOR_ERROR", doc
    assert doc["trials"] == 1
    (only,) = doc["logs"][0]["logs"]
    assert only["exit_code"] == 127
    assert "no-such-command" in only["stderr"]


@pytest_twisted.ensureDeferred
async def test_an_image_that_is_absent_with_pull_policy_never_is_a_system_error_naming_it(tes: Harness) -> None:
    task_id = await insert_task(tes.root.store, [{"image": "ccserver-test/absent:1", "command": ["x"]}])
    doc = await wait_state(tes, task_id, ENDED)
    assert doc["state"] == "SYSTEM_ERROR", doc
    assert doc["trials"] == 3
    assert "image ccserver-test/absent:1" in doc["logs"][-1]["system_logs"][-1]
    assert "pull_policy is 'never'" in doc["logs"][-1]["system_logs"][-1]


@pytest_twisted.ensureDeferred
async def test_secrets_are_revealed_to_the_executor_and_forgotten_at_the_end(tes: Harness) -> None:
    """The stored document holds the masked value; the vault the real one (contracts §1)."""
    real = [
        executor("sh", "-c", 'test "$API_TOKEN" = s3cret-value && echo revealed', env={"API_TOKEN": "s3cret-value"})
    ]
    masked = [
        executor("sh", "-c", 'test "$API_TOKEN" = s3cret-value && echo revealed', env={"API_TOKEN": "**********"})
    ]
    task_id = await insert_task(tes.root.store, masked)
    await tes.root.vault.keep([{"_id": task_id, "fields": {"executors": real}}])
    doc = await wait_state(tes, task_id, ENDED)
    assert doc["state"] == "COMPLETE", doc
    assert doc["logs"][0]["logs"][0]["stdout"] == "revealed\n"
    assert doc["executors"][0]["env"] == {"API_TOKEN": "**********"}
    assert await tes.root.vault.kept([task_id]) == set()
