"""0.10 tasks on a real Kubernetes cluster beside a real Docker node, through a real
``twistd -n ccserver`` (issue 12; docs/kubernetes.rst, "Scheduling on a cluster").

The cluster is ``kube_cluster`` (tests/kube/conftest.py: a single-node cluster started once
per session, or the dev cluster named by ``CCSERVER_KUBE_DEV``).  The daemon has two nodes: the
local dockerd (``local``) and the cluster (``k8s``).  It listens on the Docker bridge gateway
(where Docker containers call back) and on ``kube_cluster.callback_host``, the host's address
on the pod network, which is the cluster's ``callback_url``; the inputs and results of the
tasks are served there too.

Which node a task goes to is decided, not hoped for: most tests use ``binpack``, which puts a
task on the node with the least free RAM that fits, and the cluster's allocatable memory is
below the host's total that the Docker node reports (the kubelet keeps its eviction reserve;
on a tie the name ``k8s`` sorts before ``local``), so tasks go to the cluster while it is
healthy, and to the Docker node when it is dead.  The spread test uses ``spread``.

Pending too long: the simplest honest way to make a pod that ccserver's placement thinks fits
but the Kubernetes scheduler cannot place is the CPU request.  Placement counts a 0.10 task by
its RAM only (as 0.10 did), and the pod requests ``tes.legacy_container_cpus`` CPUs; a daemon
with ``legacy_container_cpus = 512`` makes pods that stay Pending with the scheduler's own
reason ("Insufficient cpu"), with no change to the shared cluster (no taint, no label).
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import docker
import pytest
import requests

from ccserver.cluster.docker_ops import DAEMON_LABEL
from ccserver.cluster.engine import bridge_gateway
from ccserver.config import NodeConfig
from ccserver.testing.ferretdb import free_port
from tests.conftest import STORE_BACKENDS
from tests.resilience.harness import APP_IMAGE, NOINPUT_IMAGE, Archive, Cluster, wait_until

CLUSTER = "k8s"
DOCKER = "local"
LOCAL_NODE = "[docker.nodes.local]\nbase_url = 'unix:///var/run/docker.sock'\n"
#: what the machine may add to the documented bound of a dead node (a loaded reactor, polling)
MEASURING_SLACK = 4.0
HEARTBEAT = 5.0  # the harness's docker.heartbeat_seconds
API_TIMEOUT = 3.0
INPUT = "line one\nline two: é\n".encode() * 50
SUCCESS, FAILED = 3, 4


class Inputs:
    """GET /inputs/data.txt answers :data:`INPUT`."""

    def __init__(self, host: str) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                if self.path.split("?", 1)[0] != "/inputs/data.txt":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("content-length", str(len(INPUT)))
                self.end_headers()
                self.wfile.write(INPUT)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class KubeDaemon(Cluster):
    """The resilience tests' restartable daemon, with the cluster as a second node."""

    def __init__(
        self,
        tmp: Path,
        gateway: str,
        kube: Any,
        mongo_uri: str | None,
        *,
        strategy: str = "binpack",
        cluster: dict[str, Any] | None = None,
        legacy_cpus: float = 0.1,
        tes: str = "",
        tables: str = "",
    ) -> None:
        """``tes``: more keys of ``[tes]``; ``tables``: more tables of the configuration."""
        self.kube = kube
        host = kube.callback_host
        self.kube_port = free_port(host)
        keys = {
            "server": kube.server,
            "ca_file": kube.ca_file,
            "client_cert_file": kube.client_cert_file,
            "client_key_file": kube.client_key_file,
            "namespace": kube.namespace,
            "callback_url": f"http://{host}:{self.kube_port}",
            "api_timeout_seconds": API_TIMEOUT,
            "pending_timeout_seconds": 60,
            "job_ttl_seconds": 600,
            **(cluster or {}),
        }
        extra = (
            f"[defaults.scheduling_strategies]\ncontainer_allocation = '{strategy}'\n"
            f"[tes]\nlegacy_container_cpus = {legacy_cpus}\n{tes}"
            f"[kubernetes.clusters.{CLUSTER}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items()) + tables
        )
        super().__init__(tmp, gateway, mongo_uri, nodes=LOCAL_NODE, extra=extra)
        # pods call back at callback_url: the daemon listens there too (Docker containers
        # call back at the first listener, the bridge gateway)
        listen = f"listen = ['tcp:{self.port}:interface={gateway}']"
        both = f"listen = ['tcp:{self.port}:interface={gateway}', 'tcp:{self.kube_port}:interface={host}']"
        text = self.config.read_text()
        assert listen in text
        self.config.write_text(text.replace(listen, both))
        # results and inputs on the pod network's host address (Docker containers reach it too)
        self.archive.close()
        self.archive = Archive(host)
        self.inputs = Inputs(host)

    def start(self, wait_node: bool = True) -> Any:
        daemon = super().start(wait_node=False)
        daemon.wait_for(rf"node {CLUSTER}: \d+ MB", timeout=60)
        daemon.wait_for(rf"node {DOCKER}: \d+ MB", timeout=60)
        return daemon

    def close(self) -> None:
        for run in self.runs:
            if run.process and run.process.poll() is None:
                run.process.kill()
                run.process.wait(30)
        for name in self.our_containers():
            try:
                self.engine.api.remove_container(name, force=True)
            except docker.errors.APIError:
                pass  # gone, or its removal (by the daemon) is under way
        self.archive.close()
        self.engine.close()
        self.inputs.close()
        # nothing of this daemon may be left on the cluster
        for kind in ("jobs", "pods"):
            for name in self.kube_names(kind):
                path = f"{self.ns_path(kind)}/{name}"
                self.kube.api("DELETE", path, json={"propagationPolicy": "Background", "gracePeriodSeconds": 0})

    # --- the cluster ---------------------------------------------------------------------

    def ns_path(self, kind: str) -> str:
        group = "/apis/batch/v1" if kind == "jobs" else "/api/v1"
        return f"{group}/namespaces/{self.kube.namespace}/{kind}"

    def kube_items(self, kind: str) -> list[dict[str, Any]]:
        """This daemon's Jobs or pods on the cluster."""
        if self.identity is None:
            return []
        code, body = self.kube.api(
            "GET", self.ns_path(kind), params={"labelSelector": f"{DAEMON_LABEL}={self.identity}"}
        )
        assert code == 200, body
        return list(body.get("items") or [])

    def kube_names(self, kind: str) -> list[str]:
        return [item["metadata"]["name"] for item in self.kube_items(kind)]

    # --- tasks ---------------------------------------------------------------------------

    def submit(self, *tasks: dict[str, Any]) -> list[str]:
        code, answer = self.call("POST", "/tasks", {"tasks": list(tasks)})
        assert code == 200, answer
        return [t["_id"] for t in answer["tasks"]]

    def app_task(
        self, tag: str, image: str = APP_IMAGE, ram: int = 128, params: list[str] | None = None, own: bool = False
    ) -> dict[str, Any]:
        """The sample app: copies the served input to ``TAG-copy``, its arguments to ``TAG``
        (``own``: an input URL of its own, which no data container caches yet)."""
        url = f"{self.inputs.url}/inputs/data.txt" + (f"?{tag}" if own else "")
        return {
            "application_container_description": {"image": image, "container_ram": ram, "parameters": params or []},
            "input_files": [{"connector_type": "http", "connector_access": {"url": url}}],
            "result_files": [
                {
                    "local_result_file": "parameters",
                    "connector_type": "http",
                    "connector_access": {"url": f"{self.archive.url}/results/{tag}", "method": "PUT"},
                },
                {
                    "local_result_file": "copy",
                    "connector_type": "http",
                    "connector_access": {"url": f"{self.archive.url}/results/{tag}-copy", "method": "PUT"},
                },
            ],
        }

    def task_doc(self, task_id: str) -> dict[str, Any]:
        (doc,) = self.query("tasks", [{"$match": {"_id": task_id}}])
        return doc

    def apps_of(self, task_id: str) -> list[dict[str, Any]]:
        return self.query(
            "application-containers",
            [{"$match": {"task_id": task_id}}, {"$sort": {"created_at": 1}}],
        )

    def wait_state(self, task_id: str, states: tuple[int, ...], timeout: float) -> dict[str, Any]:
        return wait_until(
            lambda: self.task_doc(task_id), lambda t: t["state"] in states, timeout, f"task {task_id} in {states}"
        )

    def nodes(self) -> tuple[dict[str, Any], dict[str, Any]]:
        code, body = self.call("GET", "/nodes")
        assert code == 200, body
        return {n["name"]: n for n in body["healthy_nodes"]}, {n["name"]: n for n in body["dead_nodes"]}


@pytest.fixture(scope="module")
def gateway() -> str:
    return bridge_gateway(NodeConfig(name="local", base_url="unix:///var/run/docker.sock", tls=None), 10)


@pytest.fixture(scope="module")
def kube(kube_cluster: Any) -> Any:
    engine = docker.from_env(timeout=60)
    try:
        for image in (APP_IMAGE, NOINPUT_IMAGE):
            engine.images.get(image)  # built by scripts/build-test-images; never pulled
    finally:
        engine.close()
    for image in (APP_IMAGE, NOINPUT_IMAGE):
        kube_cluster.import_image(image)
    return kube_cluster


@pytest.fixture
def make_daemon(
    tmp_path: Path, gateway: str, kube: Any, request: pytest.FixtureRequest
) -> Iterator[Callable[..., KubeDaemon]]:
    made: list[KubeDaemon] = []

    def make(backend: str, **kwargs: Any) -> KubeDaemon:
        uri = request.getfixturevalue("ferretdb").uri if backend == "ferretdb" else None
        if backend == "mongodb-env":
            uri = os.environ["CCSERVER_TEST_MONGODB_URI"]
        directory = tmp_path / f"d{len(made)}"
        directory.mkdir()
        daemon = KubeDaemon(directory, gateway, kube, uri, **kwargs)
        made.append(daemon)
        daemon.start()
        return daemon

    yield make
    for daemon in made:
        print(daemon.output()[-30000:])  # shown by pytest when the test failed
        daemon.close()


def pod_cgroup(uid: str) -> dict[str, str]:
    """The memory and CPU limits of the pod's cgroup (v2 or v1), by the kubelet's cgroupfs names."""
    found: dict[str, str] = {}
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) < 3 or fields[2] not in ("cgroup", "cgroup2"):
            continue
        for directory in Path(fields[1]).rglob(f"pod{uid}"):
            for name in ("memory.max", "memory.limit_in_bytes", "cpu.max", "cpu.cfs_quota_us", "cpu.cfs_period_us"):
                if (directory / name).exists():
                    found[name] = (directory / name).read_text().strip()
            break
    return found


@pytest.mark.parametrize("backend", STORE_BACKENDS)
def test_a_task_runs_on_the_cluster_with_its_result_and_limits(
    make_daemon: Callable[..., KubeDaemon], backend: str
) -> None:
    d = make_daemon(backend)
    tag = uuid.uuid4().hex[:12]
    (task_id,) = d.submit(d.app_task(tag, ram=200, params=["--sleep", "6"]))
    pods = wait_until(
        lambda: [p for p in d.kube_items("pods") if p.get("status", {}).get("phase") == "Running"],
        bool,
        60,
        "its pod to run",
    )
    (pod,) = pods
    (app,) = d.apps_of(task_id)
    assert app["cluster_node"] == CLUSTER and app["data_container_ids"] == []  # no_cache on a cluster
    assert pod["metadata"]["labels"]["io.curious-containers.container"] == app["_id"]
    (container,) = pod["spec"]["containers"]
    assert container["resources"]["limits"] == container["resources"]["requests"] == {"memory": "200Mi", "cpu": "100m"}
    limits = pod_cgroup(pod["metadata"]["uid"])
    if "memory.max" in limits:  # cgroup v2
        assert limits["memory.max"] == str(200 * 1024 * 1024) and limits["cpu.max"] == "10000 100000", limits
    else:
        assert limits["memory.limit_in_bytes"] == str(200 * 1024 * 1024), limits
        assert (limits["cpu.cfs_quota_us"], limits["cpu.cfs_period_us"]) == ("10000", "100000"), limits
    done = d.wait_state(task_id, (SUCCESS, FAILED), 90)
    assert done["state"] == SUCCESS, d.apps_of(task_id)
    with d.archive.lock:
        assert d.archive.results[f"{tag}-copy"] == INPUT
        assert json.loads(d.archive.results[tag]) == {"argv": ["--sleep", "6"]}
    # the ended container's Job goes (the cleanup removes it; nothing waits for its TTL)
    wait_until(lambda: d.kube_names("jobs") + d.kube_names("pods"), lambda left: not left, 60, "its Job and pod to go")

    # larger than every node: it fails at once, nothing is made for it
    (huge,) = d.submit(d.app_task("huge", ram=10_000_000))
    failed = d.wait_state(huge, (FAILED,), 15)
    assert "too large" in failed["transitions"][-1]["description"], failed["transitions"]
    assert d.apps_of(huge) == []

    # an image the kubelet may not pull (pull_policy never): each trial fails at once
    (missing,) = d.submit(d.app_task("missing", image="ccserver-test/not-imported:0"))
    d.wait_state(missing, (FAILED,), 60)
    apps = d.apps_of(missing)
    assert len(apps) == 3 and all(a["cluster_node"] == CLUSTER and a["state"] == FAILED for a in apps)
    assert all("ErrImageNeverPull" in a["transitions"][-1]["description"] for a in apps), apps


@pytest.mark.parametrize("backend", STORE_BACKENDS)
def test_placement_spreads_across_the_docker_node_and_the_cluster(
    make_daemon: Callable[..., KubeDaemon], backend: str
) -> None:
    d = make_daemon(backend, strategy="spread")
    tags = [uuid.uuid4().hex[:12] for _ in range(4)]
    # inputs of their own: a file cached on the Docker node would keep its users there
    ids = d.submit(*(d.app_task(tag, ram=1024, own=True) for tag in tags))
    for task_id in ids:
        assert d.wait_state(task_id, (SUCCESS, FAILED), 120)["state"] == SUCCESS, d.apps_of(task_id)
    nodes = [a["cluster_node"] for task_id in ids for a in d.apps_of(task_id)]
    assert sorted(set(nodes)) == [CLUSTER, DOCKER], nodes
    with d.archive.lock:
        assert all(d.archive.results[f"{tag}-copy"] == INPUT for tag in tags)


@pytest.mark.parametrize("backend", STORE_BACKENDS)
def test_a_pod_pending_too_long_returns_to_the_queue(make_daemon: Callable[..., KubeDaemon], backend: str) -> None:
    d = make_daemon(backend, legacy_cpus=512, cluster={"pending_timeout_seconds": 4})
    (task_id,) = d.submit(d.app_task(uuid.uuid4().hex[:12]))
    # first trial: back to the queue, with the scheduler's reason in its container's end
    wait_until(
        lambda: d.apps_of(task_id), lambda apps: apps and apps[0]["state"] == FAILED, 60, "the first trial to fail"
    )
    done = d.wait_state(task_id, (FAILED, SUCCESS), 90)
    assert done["state"] == FAILED and done["trials"] == 3
    assert any(t["state"] == 1 for t in done["transitions"][1:])  # it went back to waiting
    apps = d.apps_of(task_id)
    assert len(apps) == 3 and all(a["cluster_node"] == CLUSTER for a in apps)
    for app in apps:
        why = app["transitions"][-1]["description"]
        assert "pending_timeout_seconds" in why and "Insufficient cpu" in why, why
    wait_until(lambda: d.kube_names("jobs"), lambda left: not left, 30, "the stuck Jobs to be deleted")


@pytest.mark.parametrize("backend", STORE_BACKENDS)
def test_cancel_leaves_no_job_or_pod(make_daemon: Callable[..., KubeDaemon], backend: str) -> None:
    d = make_daemon(backend)
    (task_id,) = d.submit(d.task(uuid.uuid4().hex[:12], sleep=120))
    wait_until(
        lambda: [p for p in d.kube_items("pods") if p.get("status", {}).get("phase") == "Running"],
        bool,
        60,
        "its pod to run",
    )
    code, answer = d.call("POST", "/tasks/cancel", {"tasks": [{"_id": task_id}]})
    assert code == 200, answer
    wait_until(lambda: d.kube_names("jobs") + d.kube_names("pods"), lambda left: not left, 30, "no Job and no pod")
    assert d.task_doc(task_id)["state"] == 5


@pytest.mark.parametrize("backend", STORE_BACKENDS)
def test_kill_9_and_restart_finishes_everything_once(make_daemon: Callable[..., KubeDaemon], backend: str) -> None:
    d = make_daemon(backend)
    tags = [uuid.uuid4().hex[:12] for _ in range(6)]
    ids = d.submit(*(d.task(tag, sleep=4) for tag in tags))
    wait_until(lambda: d.kube_names("jobs"), lambda jobs: len(jobs) >= 3, 60, "3 Jobs", interval=0.05)
    d.kill()
    seen = set(d.kube_names("jobs"))
    d.start()
    tasks = d.wait_all_ended(150)
    assert {t["_id"] for t in tasks} == set(ids)
    d.check_all_succeeded_once(tasks)
    apps = d.query("application-containers", [{"$project": {"cluster_node": 1, "state": 1}}])
    assert len(apps) == len(ids) and all(a["cluster_node"] == CLUSTER for a in apps), apps  # no second Job
    assert seen <= {a["_id"] for a in apps}
    wait_until(lambda: d.kube_names("jobs") + d.kube_names("pods"), lambda left: not left, 60, "no orphan Job or pod")


@pytest.mark.parametrize("backend", STORE_BACKENDS)
def test_a_cluster_whose_api_goes_away_is_dead_and_its_task_retried_on_docker(
    make_daemon: Callable[..., KubeDaemon], backend: str
) -> None:
    d = make_daemon(backend)
    tag = uuid.uuid4().hex[:12]
    (task_id,) = d.submit(d.task(tag, sleep=20))  # still running when the cluster is found dead
    wait_until(lambda: d.apps_of(task_id), lambda apps: apps and apps[0]["state"] == 2, 60, "it to run on the cluster")
    assert d.apps_of(task_id)[0]["cluster_node"] == CLUSTER
    bound = HEARTBEAT + API_TIMEOUT + 1 + MEASURING_SLACK
    d.kube.stop_apiserver()
    try:
        stopped = time.monotonic()
        with pytest.raises(requests.ConnectionError):  # else: the API server was not stopped
            d.kube.api("GET", "/version", timeout=2)
        _, dead = wait_until(d.nodes, lambda nodes: CLUSTER in nodes[1], bound + 5, "the cluster to be dead")
        took = time.monotonic() - stopped
        assert took <= bound, f"dead after {took:.1f} s, documented bound {bound - MEASURING_SLACK:g} s"
        assert dead[CLUSTER]["kind"] == "kubernetes" and dead[CLUSTER]["description"], dead
        done = d.wait_state(task_id, (SUCCESS, FAILED), 90)
    finally:
        d.kube.start_apiserver()
    assert done["state"] == SUCCESS
    first, second = d.apps_of(task_id)
    assert (first["cluster_node"], first["state"]) == (CLUSTER, FAILED)
    assert first["transitions"][-1]["description"] == f"node {CLUSTER} is dead"
    assert (second["cluster_node"], second["state"]) == (DOCKER, SUCCESS)
    with d.archive.lock:
        assert tag in d.archive.results
    # back: healthy again, and the failed container's Job, ours, is deleted by the reconcile
    wait_until(d.nodes, lambda nodes: CLUSTER in nodes[0], 60, "the cluster back")

    # the daemon deletes them: the Job goes at once, a running pod is marked for deletion at
    # once and goes when the kubelet has stopped it, which an API server that just restarted
    # may refuse the kubelet for minutes ("no relationship found between node"): what the
    # daemon does is checked (the deletion asked for), not how soon this kubelet follows
    def undeleted() -> list[str]:
        pods = [p["metadata"]["name"] for p in d.kube_items("pods") if not p["metadata"].get("deletionTimestamp")]
        return d.kube_names("jobs") + pods

    wait_until(undeleted, lambda left: not left, 60, "the old Job deleted and its pod marked for deletion")
    for name in d.kube_names("pods"):  # the next tests get the node's room back now, not when the kubelet follows
        d.kube.api("DELETE", f"{d.ns_path('pods')}/{name}", json={"gracePeriodSeconds": 0})


def test_live_logs_of_a_task_on_the_cluster_come_from_the_pod_log(make_daemon: Callable[..., KubeDaemon]) -> None:
    """The live-log endpoint shows the output of a task's pod while it runs (followed from the
    API's pods/log), and after its end the tail kept in its container's document."""
    d = make_daemon("embedded")
    (task_id,) = d.submit(d.task(uuid.uuid4().hex[:12], sleep=10))

    def logs() -> dict[str, Any]:
        code, answer = d.call("GET", f"/tasks/{task_id}/logs")
        assert code == 200, answer
        return answer

    running = wait_until(logs, lambda a: a["running"] and a["lines"], 90, "lines while the pod runs")
    assert d.apps_of(task_id)[0]["cluster_node"] == CLUSTER
    assert d.task_doc(task_id)["state"] == 2  # processing: not ended yet
    times = [line["time"] for line in running["lines"]]
    assert times == sorted(times) and all(t > 1.7e9 for t in times)
    assert d.wait_state(task_id, (SUCCESS, FAILED), 90)["state"] == SUCCESS
    done = wait_until(logs, lambda a: not a["running"], 30, "the end of the following")
    assert len(done["lines"]) >= len(running["lines"])
    assert done["lines"][: len(running["lines"])] == running["lines"]
    (app,) = d.query(
        "application-containers", [{"$match": {"_id": done["container_id"]}}, {"$project": {"log_tail": 1}}]
    )
    assert [line["text"] for line in app["log_tail"]["lines"]] == [line["text"] for line in done["lines"]]
