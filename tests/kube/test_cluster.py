"""The test cluster itself, through its API: a node that runs Jobs from imported images with
their limits in the cgroup, a scheduler that refuses what does not fit, pods that reach the
host at ``callback_host``, the token's RBAC, and an API server that goes away and comes back."""

from __future__ import annotations

import fcntl
import http.server
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.kube.cluster import DEFAULT_STATE_ROOT, KubeCluster, KubeClusterError
from tests.kube.host import SLOT_DIR, SLOTS, cgroup_hierarchies, cmdline, slot_free
from tests.kube.locate import kube_bin_dir

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


@pytest.mark.parametrize("context", ["ccserver-test", "ccserver-test-token"])
def test_the_kubeconfig_works_with_lightkube(kube_cluster: KubeCluster, context: str) -> None:
    """The kubeconfig through lightkube's loader (what ccserver reads) and its sync client."""
    from lightkube import Client
    from lightkube.config.kubeconfig import KubeConfig
    from lightkube.resources.core_v1 import Node

    config = KubeConfig.from_file(kube_cluster.kubeconfig).get(context)
    assert config is not None and config.namespace == kube_cluster.namespace
    client = Client(config, trust_env=False)
    try:
        assert [node.metadata.name for node in client.list(Node) if node.metadata] == [kube_cluster.node_name]
    finally:
        client.close()


def assert_host_clean(cluster: KubeCluster) -> None:
    """Nothing of a stopped cluster is left: no process naming its state dir, no cgroup, mount,
    bridge or held slot; its state dir holds the logs and the layout alone."""
    state = str(cluster.state)
    left = [pid for pid in os.listdir("/proc") if pid.isdigit() and state in cmdline(int(pid))]
    assert not left, [cmdline(int(p)) for p in left]
    assert slot_free(cluster.layout["slot"])
    assert not [h for h in cgroup_hierarchies() if (h / cluster.layout["cgroup_root"]).exists()]
    assert state not in Path("/proc/self/mounts").read_text()
    assert not Path(f"/sys/class/net/{cluster.layout['bridge']}").exists()
    assert sorted(p.name for p in cluster.state.iterdir()) == ["cluster.json", "logs"]


def test_a_failed_start_reports_the_log_cleans_up_and_a_second_start_works(tmp_path: Path) -> None:
    """A start that fails (here: an API server that refuses its flags) raises with the tail of the
    component's log and removes what it had started; the same state dir then starts a working
    cluster, whose stop leaves the host as it was."""
    real = Path(kube_bin_dir())
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("etcd", "kube-controller-manager", "kube-scheduler", "kubelet"):
        (bin_dir / name).symlink_to(real / name)
    fake = bin_dir / "kube-apiserver"
    fake.write_text("#!/bin/sh\necho 'Error: unknown flag: --ccserver-refused' >&2\nexit 2\n")
    fake.chmod(0o755)
    # a short state dir: the kubelet's unix sockets live under it (108 bytes at most)
    DEFAULT_STATE_ROOT.mkdir(parents=True, exist_ok=True)
    state = Path(tempfile.mkdtemp(prefix="test-", dir=DEFAULT_STATE_ROOT))
    cluster = KubeCluster(bin_dir, state, start_timeout=60)
    with pytest.raises(KubeClusterError) as failed:
        cluster.start()
    assert "kube-apiserver exited with 2" in str(failed.value)
    assert "Error: unknown flag: --ccserver-refused" in str(failed.value)
    assert_host_clean(cluster)

    fake.unlink()
    fake.symlink_to(real / "kube-apiserver")
    # another run takes the first slot this start chooses between its look and its lock: the
    # start moves on to the next free slot
    raced = next(slot for slot in reversed(range(SLOTS)) if slot_free(slot))
    SLOT_DIR.mkdir(parents=True, exist_ok=True)
    with open(SLOT_DIR / f"slot-{raced}.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        cluster = RacedCluster(bin_dir, state, start_timeout=120, first_slot=raced)
        try:
            cluster.start()  # a warm-up pod ran on it
            assert cluster.node_ready()
            assert cluster.layout["slot"] != raced
            assert Path(f"/sys/class/net/{cluster.layout['bridge']}").exists()
        finally:
            cluster.stop()
        assert_host_clean(cluster)
    shutil.rmtree(state)


class RacedCluster(KubeCluster):
    """A cluster whose first choice is a slot that another run locked meanwhile."""

    def __init__(self, *args: Any, first_slot: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._first: int | None = first_slot

    def _choose_slot(self) -> int:
        if self._first is not None:
            slot, self._first = self._first, None
            return slot
        return super()._choose_slot()


def test_service_account_tokens_are_signed_and_accepted(kube_cluster: KubeCluster) -> None:
    """The service-account key pair works: a token of the TokenRequest API authenticates as its account."""
    ns = kube_cluster.namespace
    request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 600}}
    status, answer = kube_cluster.api("POST", f"/api/v1/namespaces/{ns}/serviceaccounts/default/token", json=request)
    assert status == 201, answer
    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    with requests.Session() as session:
        session.trust_env = False
        answer = session.post(
            kube_cluster.server + "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            json=review,
            headers={"Authorization": f"Bearer {answer['status']['token']}"},
            verify=kube_cluster.ca_file,
            timeout=10,
        )
    assert answer.status_code == 201, answer.text
    assert answer.json()["status"]["userInfo"]["username"] == f"system:serviceaccount:{ns}:default"
