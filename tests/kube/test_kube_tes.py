"""TES tasks on the real cluster through a real ``twistd -n ccserver`` (issue 12; docs/kubernetes.rst,
"TES tasks on a cluster"): one Job per attempt whose pod runs the staging steps and the
executors in order, with inputs fetched and outputs uploaded by the daemon.

The daemon is the one of tests/kube/test_kube_e2e.py (a Docker node ``local`` and the cluster
``k8s``, ``binpack``: a task that fits the cluster goes there), with ``staging_image`` set to
the test app image (Debian with ``python3``), which the executors use too (it has a shell).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.kube.test_kube_e2e import (  # noqa: F401  (fixtures)
    CLUSTER,
    DOCKER,
    INPUT,
    KubeDaemon,
    gateway,
    kube,
    make_daemon,
)
from tests.resilience.harness import APP_IMAGE, wait_until

pytestmark = pytest.mark.timeout(600)

TES = "/ga4gh/tes/v1"
ENDED = ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED")


def tes_daemon(make: Callable[..., KubeDaemon], tmp_path: Path, backend: str = "embedded") -> tuple[KubeDaemon, Path]:
    files = tmp_path / "tes-files"
    files.mkdir()
    daemon = make(
        backend,
        cluster={"staging_image": APP_IMAGE},
        tes="default_ram_gb = 0.125\ndefault_cpu_cores = 0.1\ninitializing_timeout_seconds = 120\n",
        tables=f"[tes.storage]\nfile_roots = ['{files}']\n",
    )
    return daemon, files


def executor(script: str, **more: Any) -> dict[str, Any]:
    return {"image": APP_IMAGE, "command": ["sh", "-c", script], **more}


def create(daemon: KubeDaemon, task: dict[str, Any]) -> str:
    code, answer = daemon.call("POST", f"{TES}/tasks", task)
    assert code == 200, answer
    return str(answer["id"])


def get(daemon: KubeDaemon, task_id: str) -> dict[str, Any]:
    code, answer = daemon.call("GET", f"{TES}/tasks/{task_id}?view=FULL")
    assert code == 200, answer
    return dict(answer)


def wait_state(daemon: KubeDaemon, task_id: str, states: tuple[str, ...], timeout: float = 180) -> dict[str, Any]:
    return wait_until(lambda: get(daemon, task_id), lambda t: t["state"] in states, timeout, f"{task_id} in {states}")


def no_jobs_left(daemon: KubeDaemon) -> None:
    def left() -> tuple[list[str], list[str]]:
        pods = [p["metadata"]["name"] for p in daemon.kube_items("pods") if not p["metadata"].get("deletionTimestamp")]
        return daemon.kube_names("jobs"), pods

    wait_until(
        left,
        lambda found: found == ([], []),
        60,
        "no Job or pod of the daemon left",
    )


@pytest.mark.parametrize("backend", ["embedded", "ferretdb"])
def test_a_tes_task_runs_its_executors_in_order_in_one_pod_with_inputs_and_outputs(
    make_daemon: Callable[..., KubeDaemon],  # noqa: F811
    tmp_path: Path,
    backend: str,
) -> None:
    daemon, files = tes_daemon(make_daemon, tmp_path, backend)
    (files / "in").mkdir()
    (files / "in" / "tree").mkdir()
    (files / "in" / "tree" / "leaf.txt").write_text("a leaf\n")
    task_id = create(
        daemon,
        {
            "name": "on the cluster",
            "inputs": [
                {"path": "/data/served.txt", "url": f"{daemon.inputs.url}/inputs/data.txt"},
                {"path": "/data/tree", "url": f"file://{files}/in/tree", "type": "DIRECTORY"},
                {"path": "/data/note.txt", "content": "inline note\n"},
            ],
            "outputs": [
                {"path": "/work/joined.txt", "url": f"file://{files}/out/joined.txt"},
                {"path": "/work/dir", "url": f"file://{files}/out/dir", "type": "DIRECTORY"},
            ],
            "executors": [
                executor("cat /data/served.txt /data/tree/leaf.txt /data/note.txt > /work/joined.txt; echo first ran"),
                executor(
                    "mkdir -p dir/sub && wc -c < joined.txt > dir/sub/size && echo second ran in $PWD with $GREETING",
                    workdir="/work",
                    env={"GREETING": "hello"},
                ),
            ],
            "volumes": ["/work"],
        },
    )
    done = wait_state(daemon, task_id, ENDED)
    assert done["state"] == "COMPLETE", done
    joined = INPUT + b"a leaf\ninline note\n"
    assert (files / "out" / "joined.txt").read_bytes() == joined
    assert (files / "out" / "dir" / "sub" / "size").read_text().strip() == str(len(joined))
    (log,) = done["logs"]
    assert log["metadata"]["node"] == CLUSTER
    assert [e["exit_code"] for e in log["logs"]] == [0, 0]
    assert "first ran" in log["logs"][0]["stdout"]
    assert "second ran in /work with hello" in log["logs"][1]["stdout"]
    first, second = log["logs"]
    assert first["start_time"] <= first["end_time"] <= second["start_time"] <= second["end_time"]  # in order
    assert sorted(o["path"] for o in log["outputs"]) == ["/work/dir/sub/size", "/work/joined.txt"]
    assert any("inputs[0]" in line for line in log["system_logs"])
    no_jobs_left(daemon)


def test_a_failing_executor_on_the_cluster_is_an_executor_error_and_the_next_never_runs(
    make_daemon: Callable[..., KubeDaemon],  # noqa: F811
    tmp_path: Path,
) -> None:
    daemon, files = tes_daemon(make_daemon, tmp_path)
    task_id = create(
        daemon,
        {
            "executors": [executor("echo failing; exit 3"), executor("echo never > /work/x")],
            "outputs": [{"path": "/work/x", "url": f"file://{files}/x"}],
            "volumes": ["/work"],
        },
    )
    done = wait_state(daemon, task_id, ENDED)
    assert done["state"] == "EXECUTOR_ERROR", done
    (log,) = done["logs"]
    assert log["metadata"]["node"] == CLUSTER
    assert log["logs"][0]["exit_code"] == 3 and "failing" in log["logs"][0]["stdout"]
    assert len(log["logs"]) == 1  # the second executor never started
    assert not (files / "x").exists()
    no_jobs_left(daemon)


def test_cancel_of_a_tes_task_on_the_cluster_leaves_no_job_and_a_stdout_file_goes_to_docker(
    make_daemon: Callable[..., KubeDaemon],  # noqa: F811
    tmp_path: Path,
) -> None:
    daemon, files = tes_daemon(make_daemon, tmp_path)
    sleeper = create(daemon, {"executors": [executor("echo sleeping; sleep 300")]})
    running = wait_state(daemon, sleeper, ("RUNNING",) + ENDED, 120)
    assert running["state"] == "RUNNING", running
    assert daemon.kube_names("jobs"), "the task's Job is on the cluster"
    # its ExecutorLog follows the pod's log while it runs
    live = wait_until(
        lambda: get(daemon, sleeper),
        lambda t: (t["logs"][0].get("logs") or [{}])[0].get("stdout", "").strip() == "sleeping",
        30,
        "the running executor's output in its ExecutorLog",
    )
    assert live["state"] == "RUNNING" and live["logs"][0]["logs"][0]["exit_code"] is None
    code, answer = daemon.call("POST", f"{TES}/tasks/{sleeper}:cancel")
    assert code == 200, answer
    began = time.monotonic()
    assert wait_state(daemon, sleeper, ENDED, 60)["state"] == "CANCELED"
    no_jobs_left(daemon)
    assert time.monotonic() - began < 60
    # an executor with a stdout file needs a Docker engine: placed there although binpack
    # prefers the cluster
    redirected = create(
        daemon,
        {
            "executors": [executor("echo to a file", stdout="/work/out.txt")],
            "outputs": [{"path": "/work/out.txt", "url": f"file://{files}/out.txt"}],
            "volumes": ["/work"],
        },
    )
    done = wait_state(daemon, redirected, ENDED)
    assert done["state"] == "COMPLETE", done
    assert done["logs"][0]["metadata"]["node"] == DOCKER
    assert (files / "out.txt").read_text() == "to a file\n"


def test_an_executor_image_the_cluster_lacks_fails_the_attempt_at_once_with_the_reason(
    make_daemon: Callable[..., KubeDaemon],  # noqa: F811
    tmp_path: Path,
) -> None:
    daemon, _ = tes_daemon(make_daemon, tmp_path)
    # pull_policy 'never' (the harness's): ErrImageNeverPull of the second init container
    absent = {"image": "ccserver-test/absent:1", "command": ["true"]}
    task_id = create(daemon, {"executors": [executor("true"), absent, executor("true")]})
    began = time.monotonic()
    done = wait_state(daemon, task_id, ENDED, 120)
    assert done["state"] == "SYSTEM_ERROR", done
    first = done["logs"][0]
    assert first["metadata"]["node"] == CLUSTER
    assert any("executor-1 waiting: ErrImageNeverPull" in line for line in first["system_logs"]), first["system_logs"]
    assert len(done["logs"]) == 3  # max_task_trials, each failed at once (no pending_timeout_seconds wait)
    assert time.monotonic() - began < 60
    no_jobs_left(daemon)


def test_kill_9_of_the_daemon_retries_the_attempt_on_the_cluster_and_leaves_no_orphan(
    make_daemon: Callable[..., KubeDaemon],  # noqa: F811
    tmp_path: Path,
) -> None:
    daemon, files = tes_daemon(make_daemon, tmp_path)
    task_id = create(
        daemon,
        {
            "executors": [executor("sleep 6; echo finished > /work/x")],
            "outputs": [{"path": "/work/x", "url": f"file://{files}/x"}],
            "volumes": ["/work"],
        },
    )
    wait_state(daemon, task_id, ("RUNNING",), 120)
    (first_job,) = daemon.kube_names("jobs")
    daemon.kill()
    daemon.start()
    done = wait_state(daemon, task_id, ENDED, 180)
    assert done["state"] == "COMPLETE", done
    assert len(done["logs"]) == 2 and all(log["metadata"]["node"] == CLUSTER for log in done["logs"])
    assert any("restarted" in line for line in done["logs"][0]["system_logs"]), done["logs"][0]
    assert (files / "x").read_text() == "finished\n"
    assert first_job.endswith("-1")
    no_jobs_left(daemon)
