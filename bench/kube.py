"""Benchmark of 0.10 tasks on a Kubernetes cluster: N trivial tasks through ccserver against the
same pods created directly through the API, in one run (issue 12).

Run from the repository root:

    .venv/bin/python bench/kube.py [--n 200] [--parallel P] [--kube-dev /work/kube-dev]

Without ``--kube-dev`` the script starts a single-node cluster of its own with the test harness
(tests/kube/cluster.py; the binaries from ``$CCSERVER_KUBE_BIN`` or ``scripts/lib.sh
kube_binaries``) and stops it at the end; with it, it uses the running dev cluster of that
state directory and leaves it running.  For each N the script

1. starts the real daemon (``twistd -n ccserver``, via ``ccserver.testing.daemon``) in a
   temporary directory: embedded store, ``pull_policy = 'never'``, ``launches_per_node = P``,
   ``max_task_trials = 1``, ``tes.legacy_container_cpus = --cpus``, the cluster as its only
   usable node (``[kubernetes.clusters.k8s]``, admin certificate, ``pending_timeout_seconds``
   as long as the run may take: a pod queued by the Kubernetes scheduler for free CPU is not a
   failure here) beside an unreachable Docker node (reported dead, never placed on), listening
   on the cluster's callback host so that pods call back; submits N tasks as one batch (image
   ``ccserver-test/app-noinput:1``, imported into the cluster's containerd, 64 MB, no input or
   result files) and waits until every task ended and every Job and pod of the daemon is gone;
2. creates the same Jobs directly (the Job ccserver makes, by ``ccserver.kubernetes.jobs``,
   not suspended, labelled with a run id instead of a daemon's, with the app's own command
   ``python3 /opt/app/algorithm.py``: the worker cannot run without ccserver's callbacks) with
   P API creates at once (ccserver's bound on launches per node: ``docker.launches_per_node``
   holds a slot over the create and the start of each Job), deletes each as soon as it is
   Complete (the Job in the background and its pods, as ccserver's removal does, on P threads)
   and waits until every one is gone;
3. prints the wall times of both (from just before the submission or the first create, to the
   last task end (its end transition) or the last Job ``Complete``, to the last pod ended and
   to the last Job and pod deleted, all seen through a watch), their ratios (the issue gives
   no target for them), the pod start latency p50/p99 of each half, and the load average.

Pod start latency: the script watches the namespace's pods (one watch, resumed from its
resourceVersion; relisted after a 410) and stamps with its own clock when it first saw each
pod, saw it bound to the node and saw its ``app`` container started (running or terminated).
The SLO check (Kubernetes' "pod startup latency" SLO: p99 <= 5 s for stateless pods without
image pulls, counted for *schedulable* pods) uses bound -> started: a pod the scheduler leaves
Pending because the node's CPUs are all requested is queueing, which the SLO excludes.  Seen
-> started (creation to start, queueing included) and the server's own timestamps
(creationTimestamp, PodScheduled, startedAt; whole seconds) are printed beside it.

Every wait is bounded; every Job and pod of the run is deleted, also on failure (the daemon's
by its daemon label, the direct ones by the run's label).  Exit status: 0 when the SLO is met
by both halves, 1 when it is missed, 2 when the run is broken (a task or Job that did not
succeed, a time limit, a daemon traceback, a cluster that cannot be used).
"""

from __future__ import annotations

import argparse
import base64
import copy
import dataclasses
import json
import os
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import docker  # noqa: E402
import requests  # noqa: E402

from ccserver.config import DockerConfig, KubeClusterConfig  # noqa: E402
from ccserver.identity import DAEMON_LABEL  # noqa: E402
from ccserver.kubernetes.jobs import APP, JOB_NAME_LABEL, build_job  # noqa: E402
from ccserver.testing import daemon as harness  # noqa: E402
from ccserver.testing.benchkit import cpu_of, load_line, machine_busy, pid_of  # noqa: E402
from ccserver.testing.daemon import UNREACHABLE_NODE, FileDaemon, daemon_env  # noqa: E402
from ccserver.testing.ferretdb import free_port  # noqa: E402
from ccserver.testing.sampling import percentile  # noqa: E402
from tests.kube.cluster import KubeCluster, KubeClusterError  # noqa: E402

APP_IMAGE = "ccserver-test/app-noinput:1"
#: the application command of the image (its /opt/config.json), run directly in step 2
DIRECT_COMMAND = "python3 /opt/app/algorithm.py"
RAM_MB = 64
CLUSTER = "k8s"
#: ccserver's default bound of creates and starts at once per node
LAUNCHES_PER_NODE = next(f.default for f in dataclasses.fields(DockerConfig) if f.name == "launches_per_node")
USERNAME = "bench"
PASSWORD = "bench-password-0123"
BENCH_LABEL = "ccserver-bench-kube"
END_STATES = (3, 4, 5)
STATE_NAMES = ("created", "waiting", "processing", "success", "failed", "cancelled")
#: Kubernetes' pod startup latency SLO (stateless pods, no image pulls), p99, seconds
SLO_P99 = 5.0
#: seconds of each watch request (the server ends it; it is reopened from its resourceVersion)
WATCH_SECONDS = 30
API_TIMEOUT = 30.0


class Broken(Exception):
    """The run cannot give a figure."""


# --- the cluster's API -------------------------------------------------------------------------


def session(cluster: KubeCluster) -> requests.Session:
    """A session of its own (one per thread) with the cluster's CA and admin certificate."""
    s = requests.Session()
    s.trust_env = False
    s.verify = cluster.ca_file
    s.cert = (cluster.client_cert_file, cluster.client_key_file)
    return s


class Api:
    """Synchronous API calls, one requests session per thread, each with a deadline."""

    def __init__(self, cluster: KubeCluster) -> None:
        self.cluster = cluster
        self.local = threading.local()
        ns = cluster.namespace
        self.jobs = f"/apis/batch/v1/namespaces/{ns}/jobs"
        self.pods = f"/api/v1/namespaces/{ns}/pods"

    def call(self, method: str, path: str, body: Any = None, **params: str) -> tuple[int, Any]:
        if not hasattr(self.local, "session"):
            self.local.session = session(self.cluster)
        answer = self.local.session.request(
            method, self.cluster.server + path, json=body, params=params or None, timeout=API_TIMEOUT
        )
        try:
            return answer.status_code, answer.json()
        except ValueError:
            return answer.status_code, answer.text

    def delete_all(self, selector: str, timeout: float = 60.0) -> None:
        """Delete the Jobs and pods matching ``selector`` until none is left (the clean-up: a
        Job deleted while its controller made a pod leaves that pod to the garbage collector,
        so the pods are deleted again until the list is empty), at most ``timeout`` seconds;
        what is left and every error is printed."""
        options = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        deadline = time.monotonic() + timeout
        left: list[str] = []
        while True:
            left = []
            for path in (self.jobs, self.pods):
                try:
                    code, body = self.call("DELETE", path, options, labelSelector=selector)
                    if code not in (200, 404):
                        print(f"  clean-up: DELETE {path}?labelSelector={selector}: {code} {str(body)[:300]}")
                    code, body = self.call("GET", path, labelSelector=selector)
                    if code == 200:
                        left += [item["metadata"]["name"] for item in body.get("items") or ()]
                except requests.RequestException as e:
                    print(f"  clean-up: {path}?labelSelector={selector}: {e}", flush=True)
                    left.append(f"{path} (unknown)")
            if not left:
                return
            if time.monotonic() > deadline:
                print(f"  clean-up: still there after {timeout:g} s ({selector}): {', '.join(left[:10])}", flush=True)
                return
            time.sleep(1)


def server_time(stamp: str | None) -> float | None:
    """An RFC 3339 time of the API (whole seconds) as a POSIX time."""
    if not stamp:
        return None
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


@dataclasses.dataclass
class Seen:
    """What the watch saw of one object, by this process's clock."""

    name: str
    labels: dict[str, str]
    added: float | None  # None: it existed before the watch started
    bound: float | None = None  # pods: spec.nodeName set
    started: float | None = None  # pods: the app container running or terminated
    ended: float | None = None  # pods: Succeeded/Failed; Jobs: Complete/Failed
    failed: bool = False
    deleted: float | None = None
    last: dict[str, Any] = dataclasses.field(default_factory=dict)


def _app_state(pod: dict[str, Any]) -> dict[str, Any]:
    for status in (pod.get("status") or {}).get("containerStatuses") or ():
        if status.get("name") == APP:
            return status.get("state") or {}
    return {}


class Watch:
    """One resumable watch of a namespace's pods or Jobs in a thread: a :class:`Seen` per uid."""

    def __init__(self, api: Api, path: str, kind: str) -> None:
        self.api, self.path, self.kind = api, path, kind
        self.seen: dict[str, Seen] = {}
        self.changed = threading.Condition()
        self.error: BaseException | None = None
        self.stopping = False
        self.session = session(api.cluster)
        self.version = self._list(initial=True)
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"bench-watch-{kind}")
        self.thread.start()

    def _list(self, initial: bool = False) -> str:
        answer = self.session.get(self.api.cluster.server + self.path, timeout=API_TIMEOUT)
        answer.raise_for_status()
        body = answer.json()
        now = time.time()
        with self.changed:
            present = set()
            for item in body.get("items") or ():
                uid = item["metadata"]["uid"]
                present.add(uid)
                if uid not in self.seen:
                    self._note("ADDED", item, None if initial else now)
                else:
                    self._note("MODIFIED", item, now)
            if not initial:  # gone while the watch was broken
                for uid, seen in self.seen.items():
                    if uid not in present and seen.deleted is None:
                        seen.deleted = now
            self.changed.notify_all()
        return str(body["metadata"]["resourceVersion"])

    def _note(self, kind: str, item: dict[str, Any], now: float | None) -> None:
        meta = item.get("metadata") or {}
        uid = meta["uid"]
        seen = self.seen.get(uid)
        if seen is None:
            seen = self.seen[uid] = Seen(meta.get("name", ""), dict(meta.get("labels") or {}), now)
        when = now if now is not None else 0.0
        seen.last = item
        if kind == "DELETED":
            seen.deleted = seen.deleted or when
        status = item.get("status") or {}
        if self.kind == "pods":
            if seen.bound is None and (item.get("spec") or {}).get("nodeName"):
                seen.bound = when
            state = _app_state(item)
            if seen.started is None and (state.get("running") or state.get("terminated")):
                seen.started = when
            if seen.ended is None and status.get("phase") in ("Succeeded", "Failed"):
                seen.ended = when
                seen.failed = status["phase"] == "Failed"
        else:
            for condition in status.get("conditions") or ():
                if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
                    if seen.ended is None:
                        seen.ended = when
                        seen.failed = condition["type"] == "Failed"

    def _run(self) -> None:
        url = self.api.cluster.server + self.path
        failures = 0
        while not self.stopping:
            params = {
                "watch": "1",
                "resourceVersion": self.version,
                "allowWatchBookmarks": "true",
                "timeoutSeconds": str(WATCH_SECONDS),
            }
            try:
                with self.session.get(url, params=params, stream=True, timeout=(10, WATCH_SECONDS + 30)) as answer:
                    answer.raise_for_status()
                    for line in answer.iter_lines():
                        if not line:
                            continue
                        event = json.loads(line)
                        kind, item = event.get("type"), event.get("object") or {}
                        if kind == "ERROR":
                            if item.get("code") == 410:  # too old: list again
                                self.version = self._list()
                                break
                            raise Broken(f"watch of {self.kind}: {item}")
                        self.version = str((item.get("metadata") or {}).get("resourceVersion") or self.version)
                        if kind == "BOOKMARK":
                            continue
                        with self.changed:
                            self._note(str(kind), item, time.time())
                            self.changed.notify_all()
                failures = 0
            except (requests.RequestException, ValueError, Broken) as e:
                failures += 1
                if failures > 5:
                    with self.changed:
                        self.error = e
                        self.changed.notify_all()
                    return
                time.sleep(1)
                try:
                    self.version = self._list()
                except (requests.RequestException, ValueError):
                    pass

    def matching(self, selector: Callable[[Seen], bool]) -> list[Seen]:
        with self.changed:
            return [s for s in self.seen.values() if s.added is not None and selector(s)]

    def wait(
        self, what: str, done: Callable[[], bool], deadline: float, tick: Callable[[], None] | None = None
    ) -> None:
        """Until ``done()`` (called under the lock), woken by each event; Broken at ``deadline``."""
        while True:
            with self.changed:
                if self.error is not None:
                    raise Broken(f"the {self.kind} watch broke: {self.error}")
                if done():
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Broken(f"{what}: not within the time limit")
                self.changed.wait(min(left, 1.0))
            if tick is not None:
                tick()

    def stop(self) -> None:
        self.stopping = True


# --- the figures ---------------------------------------------------------------------------------


def latencies(pods: list[Seen]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"seen": [], "bound": [], "server": [], "server_scheduled": []}
    for p in pods:
        if p.started is None:
            continue
        if p.added is not None:
            out["seen"].append(p.started - p.added)
        if p.bound is not None:
            out["bound"].append(p.started - p.bound)
        state = _app_state(p.last)
        started = server_time((state.get("running") or state.get("terminated") or {}).get("startedAt"))
        created = server_time((p.last.get("metadata") or {}).get("creationTimestamp"))
        scheduled = None
        for condition in (p.last.get("status") or {}).get("conditions") or ():
            if condition.get("type") == "PodScheduled" and condition.get("status") == "True":
                scheduled = server_time(condition.get("lastTransitionTime"))
        if started is not None and created is not None:
            out["server"].append(started - created)
        if started is not None and scheduled is not None:
            out["server_scheduled"].append(started - scheduled)
    return out


def p50_p99(values: list[float]) -> str:
    if not values:
        return "-"
    return f"p50 {percentile(values, 50):.2f} p99 {percentile(values, 99):.2f} max {max(values):.2f}"


def latency_lines(label: str, pods: list[Seen]) -> tuple[list[str], float | None]:
    lat = latencies(pods)
    lines = [
        f"    {label} pod start latency ({len(lat['bound'])} pods), seconds: bound -> started {p50_p99(lat['bound'])}; "
        f"seen -> started (queueing for CPU included) {p50_p99(lat['seen'])}",
        f"      server stamps (whole seconds): creationTimestamp -> startedAt {p50_p99(lat['server'])}; "
        f"PodScheduled -> startedAt {p50_p99(lat['server_scheduled'])}",
    ]
    return lines, (percentile(lat["bound"], 99) if lat["bound"] else None)


def at_once(pods: list[Seen]) -> int:
    """The most pods that ran (started, not yet ended) at once."""
    points = sorted([(p.started, 1) for p in pods if p.started] + [(p.ended, -1) for p in pods if p.ended])
    most = current = 0
    for _, step in points:
        current += step
        most = max(most, current)
    return most


class Meter:
    """CPU seconds over one half: of the daemon, of each of the cluster's processes (the
    harness records their pids), inside the pods (the cgroup v1 ``cpuacct`` of the kubelet's
    cgroup root, which keeps the usage of removed pods; NaN elsewhere) and of the machine."""

    def __init__(self, cluster: KubeCluster, daemon_pid: int | None) -> None:
        self.pids: dict[str, int | None] = {"daemon": daemon_pid} if daemon_pid else {}
        for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "containerd"):
            # by name (the kernel keeps 15 characters) and the state dir on the command line
            self.pids[name] = pid_of(name[:15], str(cluster.state))
        self.cpuacct = Path("/sys/fs/cgroup/cpuacct") / str(cluster.layout.get("cgroup_root")) / "cpuacct.usage"
        self.start = self._read()

    def _read(self) -> dict[str, float]:
        values = {name: cpu_of(pid) for name, pid in self.pids.items()}
        try:
            values["pods"] = int(self.cpuacct.read_text()) / 1e9
        except (OSError, ValueError):
            values["pods"] = float("nan")
        values["busy"], values["total"] = machine_busy()
        return values

    def line(self, n: int) -> str:
        end = self._read()
        d = {k: end[k] - self.start[k] for k in end}
        whole = d["busy"] / os.sysconf("SC_CLK_TCK")
        parts = [f"{name} {d[name]:.1f}" for name in self.pids]
        parts.append(f"inside the pods {d['pods']:.1f} ({d['pods'] / n * 1000:.0f} ms each)")
        parts.append(f"whole machine {whole:.1f} ({d['busy'] / d['total'] * 100:.0f}% busy)")
        return "CPU seconds: " + ", ".join(parts)


# --- the daemon ----------------------------------------------------------------------------------


class Client:
    def __init__(self, url: str) -> None:
        self.url = url
        self.auth = ""

    def login(self) -> None:
        self.auth = "Basic " + base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
        token = self.call("GET", "/token")["token"]
        self.auth = "Basic " + base64.b64encode(f"{USERNAME}:{token}".encode()).decode()

    def call(self, method: str, path: str, body: Any = None, timeout: float = 60) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", self.auth)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                return json.loads(answer.read())
        except urllib.error.HTTPError as e:
            raise Broken(f"{method} {path}: {e.code} {e.read()[:500]!r}") from None

    def query(self, collection: str, pipeline: list[Any]) -> list[dict[str, Any]]:
        answer = self.call("POST", f"/{collection}/query", {"aggregate": pipeline})
        return list(answer[collection.replace("-", "_")])


def write_config(tmp: Path, cluster: KubeCluster, port: int, args: argparse.Namespace, limit: float) -> Path:
    host = cluster.callback_host
    keys = {
        "server": cluster.server,
        "ca_file": cluster.ca_file,
        "client_cert_file": cluster.client_cert_file,
        "client_key_file": cluster.client_key_file,
        "namespace": cluster.namespace,
        "callback_url": f"http://{host}:{port}",
        "api_timeout_seconds": 10,
        # queueing for the node's CPUs is not stuck: the whole run may pass Pending
        "pending_timeout_seconds": limit,
        "job_ttl_seconds": 600,
    }
    return harness.write_config(
        tmp,
        listen=f"tcp:{port}:interface={host}",
        rest="[docker]\n"
        "pull_policy = 'never'\n"
        f"launches_per_node = {args.parallel}\n"
        "\n" + UNREACHABLE_NODE + "\n[tes]\n"
        f"legacy_container_cpus = {args.cpus}\n"
        "\n[defaults.error_handling]\n"
        "# a failure must show as one, not as a slower retried task\n"
        "max_task_trials = 1\n"
        f"\n[kubernetes.clusters.{CLUSTER}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items()),
    )


def task_body() -> dict[str, Any]:
    return {
        "application_container_description": {"image": APP_IMAGE, "container_ram": RAM_MB},
        "input_files": [],
        "result_files": [],
    }


def run_ccserver(
    n: int, cluster: KubeCluster, api: Api, pods: Watch, jobs: Watch, args: argparse.Namespace, out: dict[str, Any]
) -> None:
    limit = args.timeout_base + n * args.timeout_per_task
    with tempfile.TemporaryDirectory(prefix="ccserver-bench-kube-") as name:
        tmp = Path(name)
        (tmp / "home").mkdir()
        env = daemon_env(tmp / "home", REPO)
        port = free_port(cluster.callback_host)
        config = write_config(tmp, cluster, port, args, limit)
        harness.create_user(config, USERNAME, PASSWORD, env)
        daemon = FileDaemon(["--config", str(config)], env=env, cwd=str(tmp), log=tmp / "daemon.log")
        identity = None
        try:
            daemon.start()
            assert daemon.process
            identity = daemon.wait_for(r"daemon identity ([0-9a-f]+)", timeout=60).group(1)
            out["identity"] = identity
            _, host, port = daemon.listening(timeout=60)[0]
            daemon.wait_for(rf"node {CLUSTER}: \d+ MB", timeout=60)
            daemon.done_following.set()
            client = Client(f"http://{host}:{port}")
            client.login()
            deadline = time.monotonic() + 60
            while CLUSTER not in [node["name"] for node in client.call("GET", "/nodes")["healthy_nodes"]]:
                if time.monotonic() > deadline:
                    raise Broken(f"the cluster node {CLUSTER} did not become healthy within 60 s")
                time.sleep(0.2)
            time.sleep(0.5)  # let the start-up round settle

            def ours(s: Seen) -> bool:
                return s.labels.get(DAEMON_LABEL) == identity

            meter = Meter(cluster, daemon.process.pid)
            out["load_before"] = os.getloadavg()
            t0 = time.time()
            answer = client.call("POST", "/tasks", {"tasks": [task_body() for _ in range(n)]}, timeout=120)
            out["submit"] = time.time() - t0
            until = time.monotonic() + limit
            if len(answer["tasks"]) != n:
                raise Broken(f"the batch answer holds {len(answer['tasks'])} tasks, not {n}")
            pipeline = [{"$match": {"state": {"$in": list(END_STATES)}}}, {"$count": "ended"}]
            while True:
                result = client.query("tasks", pipeline)
                ended = result[0]["ended"] if result else 0
                if ended >= n:
                    break
                if time.monotonic() > until:
                    raise Broken(f"only {ended} of {n} tasks ended within {limit:.0f} s")
                if daemon.process.poll() is not None:
                    raise Broken(f"the daemon exited ({daemon.process.returncode})")
                time.sleep(0.5)
            tasks = client.query("tasks", [{"$project": {"_id": 1, "state": 1, "transitions": 1}}])
            failed = [t for t in tasks if t["state"] != 3]
            if failed:
                last = failed[0]["transitions"][-1]["description"]
                raise Broken(
                    f"{len(failed)} of {n} tasks did not succeed; e.g. {STATE_NAMES[failed[0]['state']]}: {last[:400]}"
                )
            apps = client.query("application-containers", [{"$project": {"_id": 1, "cluster_node": 1}}])
            names = {str(a["_id"]) for a in apps}
            if len(names) != n or any(a["cluster_node"] != CLUSTER for a in apps):
                raise Broken(f"{len(names)} application containers for {n} tasks, or one not on {CLUSTER}")

            def all_gone() -> bool:
                seen_jobs = {s.name: s for s in jobs.matching(ours)}
                if set(seen_jobs) != names or any(s.deleted is None for s in seen_jobs.values()):
                    return False
                return all(s.deleted is not None for s in pods.matching(ours))

            jobs.wait("every Job of the daemon deleted", all_gone, until)
            pods.wait("every pod of the daemon deleted", all_gone, until)
            out["load_after"] = os.getloadavg()
            out["cpu"] = meter.line(n)
            our_pods = pods.matching(ours)
            our_jobs = jobs.matching(ours)
            if len(our_pods) != n:
                raise Broken(f"{len(our_pods)} pods of the daemon for {n} tasks")
            task_end = max(tr["timestamp"] for t in tasks for tr in t["transitions"] if tr["state"] in END_STATES)
            out.update(
                t0=t0,
                end=task_end - t0,
                pod_end=max(p.ended or 0 for p in our_pods) - t0,
                job_gone=max(j.deleted or 0 for j in our_jobs) - t0,
                pod_gone=max(p.deleted or 0 for p in our_pods) - t0,
                pods=our_pods,
            )
            code = daemon.stop(timeout=30)
            if code != 0:
                raise Broken(f"the daemon exited with {code}")
            text = daemon.output
            if "Traceback" in text:
                raise Broken("a traceback in the daemon's log:\n" + text[text.index("Traceback") :][:3000])
        finally:
            if daemon.process and daemon.process.poll() is None:
                try:
                    daemon.stop(timeout=30)
                except Exception:  # noqa: BLE001 - stop() killed it after the time limit
                    pass
            if identity is not None:
                api.delete_all(f"{DAEMON_LABEL}={identity}")
            if args.keep_log:
                try:
                    Path(args.keep_log).write_text((tmp / "daemon.log").read_text(errors="replace"))
                except OSError:
                    pass


# --- the same pods, directly ---------------------------------------------------------------------


def direct_job(cluster: KubeCluster, name: str, run: str, cpus: float) -> dict[str, Any]:
    """The Job ccserver makes for a 0.10 task (ccserver.kubernetes.jobs.build_job), not
    suspended, with the app's own command and the run's label instead of a daemon's."""
    config = KubeClusterConfig(name=CLUSTER, callback_url="http://unused", namespace=cluster.namespace)
    job = build_job(
        config,
        name=name,
        image=APP_IMAGE,
        command=DIRECT_COMMAND,
        ram_mb=RAM_MB,
        kind="application",
        daemon="none",
        cpus=cpus,
        pull_policy="never",
    )
    job = copy.deepcopy(job)
    job["metadata"]["labels"] = {BENCH_LABEL: run}
    job["spec"]["template"]["metadata"]["labels"] = {BENCH_LABEL: run}
    job["spec"]["suspend"] = False
    return job


def run_direct(
    n: int, cluster: KubeCluster, api: Api, pods: Watch, jobs: Watch, args: argparse.Namespace, out: dict[str, Any]
) -> None:
    run = uuid.uuid4().hex[:10]
    limit = args.timeout_base + n * args.timeout_per_task
    names = [f"bench-{run}-{i}" for i in range(n)]
    bodies = [direct_job(cluster, name, run, args.cpus) for name in names]
    options = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}

    def ours(s: Seen) -> bool:
        return s.labels.get(BENCH_LABEL) == run

    def create(body: dict[str, Any]) -> None:
        code, answer = api.call("POST", api.jobs, body)
        if code != 201:
            raise Broken(f"creating Job {body['metadata']['name']}: {code} {str(answer)[:300]}")

    def delete(name: str) -> None:
        # as ccserver's removal: the Job in the background, and its pods at once
        code, answer = api.call("DELETE", f"{api.jobs}/{name}", options)
        if code not in (200, 202, 404):
            raise Broken(f"deleting Job {name}: {code} {str(answer)[:300]}")
        code, answer = api.call("DELETE", api.pods, options, labelSelector=f"{JOB_NAME_LABEL}={name}")
        if code != 200:
            raise Broken(f"deleting the pods of Job {name}: {code} {str(answer)[:300]}")

    asked: dict[str, Future[None]] = {}
    try:
        with ThreadPoolExecutor(args.parallel) as creates, ThreadPoolExecutor(args.parallel) as deletes:
            meter = Meter(cluster, None)
            out["load_before"] = os.getloadavg()
            t0 = time.time()
            until = time.monotonic() + limit
            made = [creates.submit(create, body) for body in bodies]

            def tick() -> None:
                for future in [*made, *asked.values()]:
                    if future.done() and future.exception() is not None:
                        raise Broken(str(future.exception()))
                for s in jobs.matching(ours):
                    if s.ended is not None and s.name not in asked:
                        if s.failed:
                            raise Broken(f"Job {s.name} failed: {json.dumps(s.last.get('status'))[:400]}")
                        asked[s.name] = deletes.submit(delete, s.name)

            def all_gone() -> bool:
                seen_jobs = jobs.matching(ours)
                seen_pods = pods.matching(ours)
                return (
                    len(seen_jobs) == n
                    and all(s.deleted is not None for s in seen_jobs)
                    and all(s.deleted is not None for s in seen_pods)
                )

            try:
                jobs.wait(f"{n} direct Jobs complete and deleted", all_gone, until, tick)
                pods.wait("every direct pod deleted", all_gone, until)
            except BaseException:
                for future in made:  # the creates not yet made are not made
                    future.cancel()
                raise
            for future in [*made, *asked.values()]:
                future.result(timeout=1)
            out["load_after"] = os.getloadavg()
            out["cpu"] = meter.line(n)
            our_pods = pods.matching(ours)
            our_jobs = jobs.matching(ours)
            failed = [p for p in our_pods if p.failed]
            if failed or len(our_pods) != n:
                raise Broken(f"{len(our_pods)} direct pods for {n} Jobs, {len(failed)} failed")
            out.update(
                t0=t0,
                end=max(j.ended or 0 for j in our_jobs) - t0,
                pod_end=max(p.ended or 0 for p in our_pods) - t0,
                job_gone=max(j.deleted or 0 for j in our_jobs) - t0,
                pod_gone=max(p.deleted or 0 for p in our_pods) - t0,
                pods=our_pods,
            )
    finally:
        api.delete_all(f"{BENCH_LABEL}={run}")


# --- main ----------------------------------------------------------------------------------------


def open_cluster(args: argparse.Namespace) -> tuple[KubeCluster, bool]:
    """(the cluster, whether this script started it)."""
    if args.kube_dev:
        # the dev cluster (tests/kube/devcluster.py) or the tests' session cluster: its state
        # directory; one that is stopped fails at the first API call
        return KubeCluster.attach(args.kube_dev), False
    from tests.kube.locate import kube_bin_dir

    cluster = KubeCluster(kube_bin_dir(), start_timeout=240)
    began = time.monotonic()
    cluster.start()
    print(f"started a cluster in {time.monotonic() - began:.1f} s under {cluster.state}", flush=True)
    return cluster, True


def report(n: int, cc: dict[str, Any], direct: dict[str, Any], args: argparse.Namespace) -> list[str]:
    checks = []
    for label, out, end_word in (("ccserver", cc, "last task end"), ("direct", direct, "last Job Complete")):
        if not out.get("pods"):
            continue
        before, after = out["load_before"], out["load_after"]
        print(
            f"  {label + ':':9} {n} pods; {end_word} {out['end']:.2f} s ({n / out['end']:.2f}/s); last pod ended "
            f"{out['pod_end']:.2f} s; last Job deleted {out['job_gone']:.2f} s; last pod deleted "
            f"{out['pod_gone']:.2f} s; at most {at_once(out['pods'])} pods ran at once; load average "
            f"{before[0]:.2f} {before[1]:.2f} -> {after[0]:.2f} {after[1]:.2f}",
            flush=True,
        )
        if label == "ccserver":
            print(f"    daemon identity {cc['identity']}; submission answered in {cc['submit']:.2f} s", flush=True)
        print(f"    {out['cpu']}", flush=True)
        lines, p99 = latency_lines(label, out["pods"])
        for line in lines:
            print(line, flush=True)
        if p99 is None:
            checks.append(f"FAIL  N={n} {label}: no pod start was seen")
        else:
            verdict = "PASS" if p99 <= SLO_P99 else "FAIL"
            checks.append(
                f"{verdict}  N={n} {label}: pod start latency (bound -> started) p99 {p99:.2f} s; SLO <= {SLO_P99:g} s"
            )
    if cc.get("pods") and direct.get("pods"):
        print(
            f"  ratio ccserver/direct: {cc['end'] / direct['end']:.2f} to the last end, "
            f"{cc['pod_end'] / direct['pod_end']:.2f} to the last pod ended, "
            f"{max(cc['job_gone'], cc['pod_gone']) / max(direct['job_gone'], direct['pod_gone']):.2f} "
            f"to the last Job and pod deleted (no target: issue 12 asks for the ratio)",
            flush=True,
        )
    return checks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, action="append", help="tasks per run (repeatable; default 200)")
    parser.add_argument(
        "--parallel",
        type=int,
        default=LAUNCHES_PER_NODE,
        help=f"docker.launches_per_node of the daemon and API creates at once directly (default {LAUNCHES_PER_NODE})",
    )
    parser.add_argument(
        "--cpus",
        type=float,
        default=0.1,
        help="CPUs of each pod (requests = limits; the daemon's tes.legacy_container_cpus; default 0.1)",
    )
    parser.add_argument(
        "--kube-dev", metavar="DIR", help="use the running cluster of this state directory (e.g. the dev cluster's)"
    )
    parser.add_argument("--direct-only", action="store_true", help="skip the ccserver runs")
    parser.add_argument("--ccserver-only", action="store_true", help="skip the direct runs")
    parser.add_argument(
        "--direct-first", action="store_true", help="run the direct half first (it then leaves its load to ccserver's)"
    )
    parser.add_argument("--timeout-base", type=float, default=180.0, help=argparse.SUPPRESS)
    parser.add_argument("--timeout-per-task", type=float, default=4.0, help=argparse.SUPPRESS)
    parser.add_argument("--keep-log", metavar="FILE", help="copy the daemon's log to FILE")
    args = parser.parse_args()
    args.n = args.n or [200]

    print(load_line("start"), flush=True)
    engine = docker.from_env(timeout=60)
    try:
        engine.images.get(APP_IMAGE)
    except docker.errors.ImageNotFound as e:
        print(f"missing test image ({e}); build it with scripts/build-test-images", file=sys.stderr)
        return 2
    finally:
        engine.close()
    try:
        cluster, started = open_cluster(args)
    except KubeClusterError as e:
        print(f"BROKEN  no cluster: {e}", flush=True)
        return 2
    checks: list[str] = []
    broken = False
    pods = jobs = None
    try:
        cluster.import_image(APP_IMAGE)
        api = Api(cluster)
        status, node_list = api.call("GET", "/api/v1/nodes")
        if status != 200:
            raise Broken(f"GET /api/v1/nodes: {status} {str(node_list)[:300]}")
        for node in node_list["items"]:
            allocatable = node["status"]["allocatable"]
            print(
                f"cluster {cluster.server} node {node['metadata']['name']}: allocatable cpu {allocatable.get('cpu')}, "
                f"memory {allocatable.get('memory')}, pods {allocatable.get('pods')}; namespace {cluster.namespace}; "
                f"{args.parallel} creates at once; {RAM_MB} MB and {args.cpus:g} CPUs per pod",
                flush=True,
            )
        pods = Watch(api, api.pods, "pods")
        jobs = Watch(api, api.jobs, "jobs")
        for n in args.n:
            print(f"\nN = {n}", flush=True)
            cc: dict[str, Any] = {}
            direct: dict[str, Any] = {}
            halves = [
                ("ccserver", run_ccserver, cc, args.direct_only),
                ("direct", run_direct, direct, args.ccserver_only),
            ]
            for label, runner, out, skip in reversed(halves) if args.direct_first else halves:
                if skip:
                    continue
                try:
                    runner(n, cluster, api, pods, jobs, args, out)
                except (Broken, OSError, requests.RequestException, harness.DaemonError) as e:
                    print(f"BROKEN  {label}, N={n}: {e}", flush=True)
                    if out.get("identity"):
                        print(f"    daemon identity {out['identity']}", flush=True)
                    out.clear()
                    broken = True
            checks += report(n, cc, direct, args)
    except (Broken, KubeClusterError, OSError, requests.RequestException) as e:
        print(f"BROKEN  {e}", flush=True)
        broken = True
    finally:
        for watch in (pods, jobs):
            if watch is not None:
                watch.stop()
        if started:
            cluster.stop()
    print(f"\n{load_line('end')}", flush=True)
    for line in checks:
        print(line, flush=True)
    if broken:
        return 2
    return 0 if all(line.startswith("PASS") for line in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
