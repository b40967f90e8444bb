"""The test cluster itself, through its API: a node that runs Jobs from imported images with
their limits in the cgroup, a scheduler that refuses what does not fit, pods that reach the
host at ``callback_host``, the token's RBAC, and an API server that goes away and comes back."""

from __future__ import annotations

import http.server
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from tests.kube.cluster import KubeCluster

IMAGE = "ccserver-test/base:1"


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.3)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def pod_spec(command: str, resources: dict[str, Any] | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "app",
        "image": IMAGE,
        "imagePullPolicy": "Never",
        "command": ["sh", "-c", command],
    }
    if resources:
        container["resources"] = resources
    return {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 1,
        "containers": [container],
    }


@pytest.fixture
def pods(kube_cluster: KubeCluster) -> Iterator[list[str]]:
    """Names of the pods a test made; deleted at its end."""
    made: list[str] = []
    yield made
    for name in made:
        kube_cluster.api(
            "DELETE", f"/api/v1/namespaces/{kube_cluster.namespace}/pods/{name}", json={"gracePeriodSeconds": 0}
        )


def run_pod(cluster: KubeCluster, pods: list[str], command: str, timeout: float = 60.0) -> tuple[str, str]:
    """Runs a pod to its end: (phase, log)."""
    name = unique("pod")
    path = f"/api/v1/namespaces/{cluster.namespace}/pods"
    status, answer = cluster.api("POST", path, json={"metadata": {"name": name}, "spec": pod_spec(command)})
    assert status == 201, answer
    pods.append(name)

    def ended() -> str | None:
        phase = cluster.api("GET", f"{path}/{name}")[1]["status"].get("phase")
        return phase if phase in ("Succeeded", "Failed") else None

    phase = wait_for(f"pod {name} ended", ended, timeout)
    return phase, cluster.api("GET", f"{path}/{name}/log")[1]


def test_node_is_ready_with_allocatable_memory_and_cpu(kube_cluster: KubeCluster) -> None:
    status, nodes = kube_cluster.api("GET", "/api/v1/nodes")
    assert status == 200
    [node] = nodes["items"]
    assert node["metadata"]["name"] == kube_cluster.node_name
    ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
    assert ready and ready[0]["status"] == "True"
    allocatable = node["status"]["allocatable"]
    assert int(allocatable["cpu"]) >= 1
    assert allocatable["memory"].endswith("Ki") and int(allocatable["memory"][:-2]) > 512 * 1024


def test_job_runs_in_an_imported_image_with_its_limits_in_the_cgroup(kube_cluster: KubeCluster) -> None:
    name = unique("job")
    ns = kube_cluster.namespace
    command = (
        "echo hello-from-the-job; "
        "if [ -f /sys/fs/cgroup/memory.max ]; "
        "then cat /sys/fs/cgroup/memory.max; cut -d' ' -f1,2 /sys/fs/cgroup/cpu.max; "
        "else cat /sys/fs/cgroup/memory/memory.limit_in_bytes; "
        "echo $(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us) $(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us); fi"
    )
    limits = {"memory": "96Mi", "cpu": "500m"}
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": 60,
            "template": {"spec": pod_spec(command, {"requests": limits, "limits": limits})},
        },
    }
    status, answer = kube_cluster.api("POST", f"/apis/batch/v1/namespaces/{ns}/jobs", json=job)
    assert status == 201, answer
    try:

        def finished() -> dict[str, Any] | None:
            current = kube_cluster.api("GET", f"/apis/batch/v1/namespaces/{ns}/jobs/{name}")[1]["status"]
            return current if current.get("succeeded") or current.get("failed") else None

        assert wait_for(f"job {name} finished", finished).get("succeeded") == 1
        [pod] = kube_cluster.api("GET", f"/api/v1/namespaces/{ns}/pods?labelSelector=job-name={name}")[1]["items"]
        log = kube_cluster.api("GET", f"/api/v1/namespaces/{ns}/pods/{pod['metadata']['name']}/log")[1]
        lines = log.split("\n")
        assert lines[0] == "hello-from-the-job"
        assert int(lines[1]) == 96 * 1024 * 1024
        quota, period = (int(x) for x in lines[2].split())
        assert quota / period == 0.5
    finally:
        kube_cluster.api(
            "DELETE", f"/apis/batch/v1/namespaces/{ns}/jobs/{name}", json={"propagationPolicy": "Background"}
        )


def test_pod_asking_more_cpu_than_the_node_has_stays_pending_unschedulable(
    kube_cluster: KubeCluster, pods: list[str]
) -> None:
    node = kube_cluster.api("GET", f"/api/v1/nodes/{kube_cluster.node_name}")[1]
    too_many = int(node["status"]["allocatable"]["cpu"]) + 1
    name = unique("big")
    path = f"/api/v1/namespaces/{kube_cluster.namespace}/pods"
    spec = pod_spec("true", {"requests": {"cpu": str(too_many)}, "limits": {"cpu": str(too_many)}})
    status, answer = kube_cluster.api("POST", path, json={"metadata": {"name": name}, "spec": spec})
    assert status == 201, answer
    pods.append(name)

    def refused() -> dict[str, Any] | None:
        current = kube_cluster.api("GET", f"{path}/{name}")[1]["status"]
        scheduled = [c for c in current.get("conditions", []) if c["type"] == "PodScheduled"]
        return scheduled[0] if scheduled and scheduled[0]["status"] == "False" else None

    condition = wait_for(f"pod {name} refused by the scheduler", refused, 30)
    assert condition["reason"] == "Unschedulable"
    assert "Insufficient cpu" in condition["message"]
    assert kube_cluster.api("GET", f"{path}/{name}")[1]["status"]["phase"] == "Pending"


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (the http.server API)
        self.seen.append(self.path)
        body = b"hello pod"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_a_pod_reaches_a_server_on_the_callback_host(kube_cluster: KubeCluster, pods: list[str]) -> None:
    server = http.server.ThreadingHTTPServer((kube_cluster.callback_host, 0), _Recorder)
    _Recorder.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://{kube_cluster.callback_host}:{server.server_address[1]}/callback/1"
        phase, log = run_pod(
            kube_cluster,
            pods,
            f"python3 -c 'import urllib.request; print(urllib.request.urlopen(\"{url}\", timeout=10).read().decode())'",
        )
    finally:
        server.shutdown()
        server.server_close()
    assert (phase, log.strip()) == ("Succeeded", "hello pod")
    assert _Recorder.seen == ["/callback/1"]


def test_the_token_identity_is_limited_by_rbac(kube_cluster: KubeCluster) -> None:
    with open(kube_cluster.token_file) as f:
        token = f.read().strip()
    session = requests.Session()
    session.trust_env = False
    session.headers["Authorization"] = f"Bearer {token}"

    def get(path: str) -> int:
        return session.get(kube_cluster.server + path, verify=kube_cluster.ca_file, timeout=10).status_code

    try:
        assert get("/api/v1/nodes") == 200
        assert get(f"/apis/batch/v1/namespaces/{kube_cluster.namespace}/jobs") == 200
        assert get("/api/v1/namespaces/kube-system/pods") == 403
        assert get("/api/v1/secrets") == 403
        session.headers["Authorization"] = "Bearer not-the-token"
        assert get("/api/v1/nodes") == 401
    finally:
        session.close()


def test_the_api_server_goes_away_and_comes_back(kube_cluster: KubeCluster) -> None:
    kube_cluster.stop_apiserver()
    try:
        with pytest.raises(requests.ConnectionError):
            kube_cluster.api("GET", "/readyz", timeout=5)
    finally:
        kube_cluster.start_apiserver()
    assert kube_cluster.api("GET", "/readyz")[0] == 200
    assert wait_for("the node Ready again", kube_cluster.node_ready, 60)
