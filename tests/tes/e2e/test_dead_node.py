"""A dead node with a real second engine: a TES task runs on an extra ``dockerd``
(tests/cluster/engines.py), that engine is stopped, and the attempt is retried on the local
node; py-tes 1.1 sees the task COMPLETE with one TaskLog per attempt."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from ccserver.tes.docker_tes import TASK_LABEL
from tests.cluster.engines import Engine, save_images
from tests.resilience.harness import APP_IMAGE, Cluster, wait_until
from tests.tes.e2e.conftest import IMAGE, PyTes, tes_config

pytestmark = pytest.mark.timeout(600)

#: the extra engine's node name sorts after "local": with equal free RAM the spread strategy
#: places the first attempt there (the largest (free, name))
REMOTE = "zz-remote"
#: a program that ends at once on SIGTERM (exit code 143), as most do: what a stopping engine
#: sends its containers
SCRIPT = "trap 'exit 143' TERM; sleep 15 & wait; cat /work/in.txt > /work/out.txt"


@pytest.fixture
def remote() -> Iterator[Engine]:
    # a short root: containerd's socket paths below it must stay within 104 characters
    root = Path(tempfile.mkdtemp(prefix="cctes-", dir="/tmp"))
    engine = Engine("tesdead", root / "engine")
    try:
        engine.start()
        # the daemon's inspection of a node runs its data container image there
        images = [IMAGE, APP_IMAGE]
        engine.load_images(save_images(images, root / "images.tar"), images)
        yield engine
    finally:
        engine.destroy()
        shutil.rmtree(root, ignore_errors=True)


def _ours(client: docker.DockerClient, task_id: str) -> dict[str, list[str]]:
    label = {"label": [f"{TASK_LABEL}={task_id}"]}
    return {
        "containers": [c["Names"][0] for c in client.api.containers(all=True, filters=label)],
        "volumes": [v["Name"] for v in client.api.volumes(filters=label).get("Volumes") or []],
    }


def test_a_task_on_a_stopped_engine_is_retried_on_the_local_node(
    tmp_path: Path, gateway: str, py_tes_1_1: Path, remote: Engine
) -> None:
    files = tmp_path / "files"
    files.mkdir()
    nodes = (
        "[docker.nodes.local]\nbase_url = 'unix:///var/run/docker.sock'\n"
        f"[docker.nodes.{REMOTE}]\nbase_url = '{remote.base_url}'\n"
    )
    cluster = Cluster(tmp_path, gateway, interval=1, nodes=nodes, extra=tes_config(files))
    try:
        daemon = cluster.start()
        daemon.wait_for(rf"node {REMOTE}: \d+ MB", timeout=60)
        daemon.wait_for(r"node local: \d+ MB", timeout=60)
        client = PyTes(py_tes_1_1, cluster.url)
        task = {
            "name": "moves",
            "inputs": [{"path": "/work/in.txt", "content": "carried over\n"}],
            "outputs": [{"path": "/work/out.txt", "url": f"file://{files}/out.txt"}],
            "executors": [{"image": IMAGE, "command": ["sh", "-c", SCRIPT]}],
        }
        task_id = client.create(task)
        running = client.wait(task_id, "RUNNING")
        assert running["logs"][0]["metadata"]["node"] == REMOTE, running["logs"]
        remote_client = remote.client()
        try:
            assert _ours(remote_client, task_id)["containers"]
        finally:
            remote_client.close()
        stopped = time.monotonic()
        remote.stop()
        done = client.wait(task_id, "COMPLETE,EXECUTOR_ERROR,SYSTEM_ERROR", 180)
        assert done["state"] == "COMPLETE"
        assert time.monotonic() - stopped < 180
        summary = [(log["metadata"].get("node"), log.get("system_logs")) for log in done["logs"]]
        assert len(done["logs"]) == 2, json.dumps(summary, indent=1)
        first, second = done["logs"]
        assert first["metadata"]["node"] == REMOTE and second["metadata"]["node"] == "local"
        assert any(REMOTE in line for line in first["system_logs"]), first["system_logs"]
        assert [e["exit_code"] for e in second["logs"]] == [0]
        assert (files / "out.txt").read_bytes() == b"carried over\n"
        assert _ours(cluster.engine, task_id) == {"containers": [], "volumes": []}
        # the engine comes back: what the first attempt left there is removed
        remote.start()
        remote_client = remote.client()
        try:
            wait_until(
                lambda: (_ours(remote_client, task_id), cluster.call("GET", "/nodes")),
                lambda found: found[0] == {"containers": [], "volumes": []},
                90,
                "the first attempt's containers and volumes to be removed from the engine that came back",
                interval=1.0,
            )
        finally:
            remote_client.close()
    except BaseException:
        lines = [line for line in cluster.output().splitlines() if "GET /ga4gh" not in line]
        print("\n".join(lines[-150:]))
        raise
    finally:
        cluster.close()
