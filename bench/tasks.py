"""Benchmark of task throughput: N trivial tasks through ccserver against the same containers
run directly with the docker SDK, on the local Docker engine.

Run from the repository root:  .venv/bin/python bench/tasks.py [--n 40 --n 200] [--profile FILE]

For each N the script

1. starts the real daemon (``twistd -n ccserver``, via ``ccserver.testing.daemon``) in a
   temporary directory: embedded store, ``thread_limit = 8``, ``pull_policy = 'never'``, the
   local engine ``unix:///var/run/docker.sock`` as the only node, data container image
   ``ccserver-test/app:1``, listening on the Docker bridge gateway (asked of the engine) so
   that containers can call back; creates a user with ``ccserver-admin`` and gets a token;
2. submits N tasks as one batch (``POST /tasks``; image ``ccserver-test/app-noinput:1``, no
   input files, no result files: the worker makes its four callbacks and runs the app, which
   writes a file and exits 0) and waits until every task ended and every container of the
   daemon is gone; the wall time runs from just before the submission to the last task end
   (the ``timestamp`` of its end transition) and to the last removal (the engine's
   ``destroy`` event);
3. runs the same containers directly: same image, same RAM limit, the application's own
   command (``python3 /opt/app/algorithm.py``; the worker cannot run without ccserver's
   callbacks) through create, start, wait and remove with the docker SDK on a pool of 8
   threads; the wall time runs to the last exit and to the last removal;
4. runs the same containers once more directly, this time with the worker (the command line
   ccserver gives them, the reference worker's protocol) and a stand-in callback server of the
   script on the bridge gateway that answers each callback at once, with nothing to fetch or
   upload: what the protocol itself costs, which ccserver cannot avoid with the 0.10 worker;
   ``--no-worker-half`` skips it;
5. prints the three, the ratios (targets: ccserver / direct <= 1.10 at N = 40 and <= 1.05 at
   N = 200, to the last removal, against the application alone; ccserver / direct with the
   worker is printed beside, no target), a breakdown of where the time of a container went (from
   the engine's event stream), per task the time from submission to its container's first
   callback and from its last callback to the container's removal (p50/p99; callbacks are
   stamped ``received_at`` by the daemon), the CPU seconds of the daemon, dockerd and
   containerd, and the load average.

Every wait is bounded; every container the run created is removed, also on failure.

Several ccserver daemons must not share one engine: each one's reconciliation removes the
containers labelled ``io.curious-containers.kind`` it does not know, and the end-of-test
checks of the e2e tests wait for them all to go.  The script therefore waits (``--quiet-wait``
seconds) until no container of another ccserver exists before each ccserver run, and exits
with status 2 if the engine does not become quiet (``--share-engine`` runs anyway and marks
the figures).  Exit status: 0 when every target is met, 1 when one is missed, 2 when the run
is broken.
"""

from __future__ import annotations

import argparse
import base64
import http.server
import json
import os
import shlex
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import docker  # noqa: E402

from ccserver.cluster.docker_ops import KIND_LABEL  # noqa: E402
from ccserver.cluster.engine import bridge_gateway  # noqa: E402
from ccserver.config import DEFAULT_ENTRY_POINT, NodeConfig  # noqa: E402
from ccserver.testing import daemon as harness  # noqa: E402
from ccserver.testing.benchkit import Events, Meter, load_line, spread, wait_quiet  # noqa: E402
from ccserver.testing.benchkit import peak as _peak  # noqa: E402
from ccserver.testing.daemon import FileDaemon, daemon_env  # noqa: E402
from ccserver.testing.sampling import percentile  # noqa: E402

SOCKET = "unix:///var/run/docker.sock"
APP_IMAGE = "ccserver-test/app-noinput:1"
DATA_IMAGE = "ccserver-test/app:1"
#: the application command of the image (its /opt/config.json), run directly in step 3
DIRECT_COMMAND = ["python3", "/opt/app/algorithm.py"]
RAM_MB = 64
PARALLELISM = 8
#: ccserver / direct to the last removal, at most (issue 9); other N get the first
TARGETS = {40: 1.10, 200: 1.05}
USERNAME = "bench"
PASSWORD = "bench-password-0123"
BENCH_LABEL = "ccserver-bench-tasks"
END_STATES = (3, 4, 5)
STATE_NAMES = ("created", "waiting", "processing", "success", "failed", "cancelled")


# --- the daemon ----------------------------------------------------------------------------


def env_for(home: Path) -> dict[str, str]:
    return daemon_env(home, REPO)


def write_config(
    tmp: Path,
    gateway: str,
    interval: float,
    api_timeout: float | None,
    follow: bool = True,
    launches: int = PARALLELISM,
    task_cpus: float = 0.0,
) -> Path:
    timeout = f"api_timeout = {api_timeout}\n" if api_timeout else ""
    logs = "" if follow else "\n[logs]\nfollow = false\n"
    # a task needs task_cpus of the engine's CPUs: as many run at once as in the direct halves
    cpus = f"\n[tes]\nlegacy_cpu_placement = true\nlegacy_container_cpus = {task_cpus}\n" if task_cpus else ""
    return harness.write_config(
        tmp,
        listen=f"tcp:0:interface={gateway}",
        server={"scheduling_interval_seconds": interval},
        rest="[docker]\n"
        "thread_limit = 8\n"
        f"launches_per_node = {launches}\n"
        f"{timeout}"
        "pull_policy = 'never'\n"
        "\n[docker.nodes.local]\n"
        f"base_url = '{SOCKET}'\n"
        "\n[defaults.data_container_description]\n"
        f"image = '{DATA_IMAGE}'\n"
        "container_ram = 128\n"
        "\n[defaults.error_handling]\n"
        "# a failure must show as one, not as a slower retried task\n"
        "max_task_trials = 1\n" + logs + cpus,
    )


class API:
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
            raise RuntimeError(f"{method} {path}: {e.code} {e.read()[:500]!r}") from None

    def query(self, collection: str, pipeline: list[Any]) -> list[dict[str, Any]]:
        answer = self.call("POST", f"/{collection}/query", {"aggregate": pipeline})
        return list(answer[collection.replace("-", "_")])


def task_body() -> dict[str, Any]:
    return {
        "application_container_description": {"image": APP_IMAGE, "container_ram": RAM_MB},
        "input_files": [],
        "result_files": [],
    }


# --- one ccserver run ------------------------------------------------------------------------


def engine_cpus(client: docker.DockerClient) -> int:
    return int(client.info()["NCPU"])


class Broken(Exception):
    """The run cannot give a figure (a failed task, a timeout, a daemon error)."""


def run_ccserver(
    n: int, gateway: str, client: docker.DockerClient, events: Events, args: argparse.Namespace, out: dict[str, Any]
) -> None:
    limit = args.timeout_base + n * args.timeout_per_task
    with tempfile.TemporaryDirectory(prefix="ccserver-bench-tasks-") as name:
        tmp = Path(name)
        (tmp / "home").mkdir()
        env = env_for(tmp / "home")
        config = write_config(
            tmp,
            gateway,
            args.interval,
            args.api_timeout,
            follow=not args.no_follow,
            launches=args.launches_per_node,
            task_cpus=0.0 if args.ram_only else engine_cpus(client) / PARALLELISM,
        )
        harness.create_user(config, USERNAME, PASSWORD, env)
        profile = None
        if args.profile:
            profile = str(Path(f"{args.profile}.{n}" if len(args.n) > 1 else args.profile).resolve())
        daemon = FileDaemon(["--config", str(config)], env=env, cwd=str(tmp), log=tmp / "daemon.log", profile=profile)
        callback_port = None
        began = time.time()
        try:
            daemon.start()
            try:
                assert daemon.process
                kind, host, port = daemon.listening(timeout=60)[0]
                callback_port = port
                daemon.wait_for("containers will call back at", timeout=60)
                daemon.done_following.set()
                api = API(f"http://{host}:{port}")
                api.login()
                deadline = time.monotonic() + 60
                while not api.call("GET", "/nodes")["healthy_nodes"]:
                    if time.monotonic() > deadline:
                        raise Broken("the local node did not become healthy within 60 s")
                    time.sleep(0.2)
                time.sleep(0.5)  # let the start-up round settle
                meter = Meter(daemon.process.pid)
                out["load_before"] = os.getloadavg()[0]
                t0 = time.time()
                answer = api.call("POST", "/tasks", {"tasks": [task_body() for _ in range(n)]}, timeout=60)
                submitted = time.time()
                until = time.monotonic() + limit
                ids = [t["_id"] for t in answer["tasks"]]
                if len(ids) != n:
                    raise Broken(f"the batch answer holds {len(ids)} tasks, not {n}")
                # every ObjectId the daemon makes holds its process's 5 random bytes: a
                # container named with other ones belongs to another ccserver on the engine
                tag = ids[0][8:18]

                def check_alone() -> None:
                    others = [
                        c
                        for c in events.names()
                        if events.kinds.get(c)
                        and events.get(c).get("create", 0) >= began
                        and not c.startswith("ccserver-inspection")
                        and c[8:18] != tag
                    ]
                    out["foreign"] = len(others)
                    if others and not args.share_engine:
                        raise Broken(
                            f"another ccserver created {len(others)} container(s) on the engine during the "
                            f"run (e.g. {others[0]}): the daemons remove each other's containers, and the "
                            f"figures would be wrong"
                        )

                # wait for every task to end: the daemon is asked when the engine saw as many of
                # its application containers removed as there are tasks, and every 2 s besides
                # (a task may end without a container); asking it 4 times a second cost the
                # ccserver half seconds of CPU the direct half does not spend
                pipeline = [{"$match": {"state": {"$in": list(END_STATES)}}}, {"$count": "ended"}]
                ended, asked = 0, 0.0

                def removed() -> int:
                    return sum(
                        1
                        for c in events.names()
                        if events.kinds.get(c) == "application" and c[8:18] == tag and "destroy" in events.get(c)
                    )

                while True:
                    if removed() >= n or time.monotonic() - asked >= 2.0:
                        asked = time.monotonic()
                        result = api.query("tasks", pipeline)
                        ended = result[0]["ended"] if result else 0
                        if ended >= n:
                            break
                    if time.monotonic() > until:
                        raise Broken(f"only {ended} of {n} tasks ended within {limit:.0f} s")
                    if daemon.process.poll() is not None:
                        raise Broken(f"the daemon exited ({daemon.process.returncode})")
                    check_alone()
                    time.sleep(0.1)
                seen_all_ended = time.time()
                apps = api.query(
                    "application-containers",
                    [{"$project": {"_id": 1, "state": 1, "transitions": 1, "created_at": 1, "callbacks": 1}}],
                )
                names = {str(a["_id"]) for a in apps}
                # wait for every container of this daemon to be removed
                while True:
                    left = [c for c in names if "destroy" not in events.get(c)]
                    if not left:
                        break
                    check_alone()
                    if time.monotonic() > until:
                        raise Broken(f"{len(left)} containers not removed within {limit:.0f} s")
                    time.sleep(0.1)
                out["cpu"] = meter.line(n)
                out["load_after"] = os.getloadavg()[0]
                check_alone()
                tasks = api.query("tasks", [{"$project": {"_id": 1, "state": 1, "transitions": 1}}])
                failed = [t for t in tasks if t["state"] != 3]
                if failed:
                    last = failed[0]["transitions"][-1]["description"]
                    raise Broken(
                        f"{len(failed)} of {n} tasks did not succeed; e.g. "
                        f"{STATE_NAMES[failed[0]['state']]}: {last[:400]}"
                    )
                check_alone()
                task_end = max(tr["timestamp"] for t in tasks for tr in t["transitions"] if tr["state"] in END_STATES)
                removed = max(events.get(c)["destroy"] for c in names)
                out.update(
                    t0=t0,
                    submit=submitted - t0,
                    end=task_end - t0,
                    removed=removed - t0,
                    seen_ended=seen_all_ended - t0,
                    names=names,
                    apps=apps,
                )
                code = daemon.stop(timeout=30)
                if code != 0:
                    raise Broken(f"the daemon exited with {code}")
                text = daemon.output
                if "Traceback" in text:
                    raise Broken("a traceback in the daemon's log:\n" + text[text.index("Traceback") :][:3000])
                out["log_lines"] = text.count("\n")
            finally:
                if daemon.process and daemon.process.poll() is None:
                    try:  # SIGTERM first: a profiled daemon writes its statistics on a clean stop
                        daemon.stop(timeout=30)
                    except Exception:  # noqa: BLE001 - stop() killed it after the time limit
                        pass
        finally:
            if callback_port is not None:
                remove_ours(client, f":{callback_port}/")
            if args.keep_log:
                try:
                    Path(args.keep_log).write_text((tmp / "daemon.log").read_text(errors="replace"))
                except OSError:
                    pass


def remove_ours(client: docker.DockerClient, marker: str) -> None:
    """Remove the containers of this daemon left behind (their command holds its callback URL)."""
    for c in client.api.containers(all=True, filters={"label": KIND_LABEL}):
        if marker in (c.get("Command") or ""):
            try:
                client.api.remove_container(c["Id"], force=True)
            except docker.errors.NotFound:
                pass


# --- the same containers, directly ----------------------------------------------------------


class StandIn(http.server.ThreadingHTTPServer):
    """Answers every worker callback at once: callback 0 with a task that has no input or
    result files (what ccserver answers for this benchmark's tasks), the others with ``{}``."""

    daemon_threads = True

    def __init__(self, host: str) -> None:
        super().__init__((host, 0), _StandInHandler)
        self.callbacks = 0
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(timeout=10)


class _StandInHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # the worker keeps one connection for its callbacks

    def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        answer: dict[str, Any] = {"input_files": [], "result_files": []} if body.get("callback_type") == 0 else {}
        data = json.dumps(answer).encode()
        assert isinstance(self.server, StandIn)
        with self.server.lock:
            self.server.callbacks += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        pass


def worker_command(name: str, callback_url: str) -> list[str]:
    """The command line ccserver gives an application container (cc-protocol §6)."""
    settings = {
        "container_type": "application",
        "container_id": name,
        "callback_key": uuid.uuid4().hex,
        "callback_url": callback_url,
    }
    return shlex.split(DEFAULT_ENTRY_POINT) + [json.dumps(settings)]


def run_direct(
    n: int,
    client: docker.DockerClient,
    events: Events,
    args: argparse.Namespace,
    out: dict[str, Any],
    callback_url: str | None = None,
) -> None:
    """The containers through the SDK; with ``callback_url``, running the worker against it."""
    run = uuid.uuid4().hex[:12]
    label = {BENCH_LABEL: run}
    limit = args.timeout_base + n * args.timeout_per_task
    names = [f"ccserver-bench-{run}-{i}" for i in range(n)]
    limit_text = f"{RAM_MB}m"

    def one(name: str) -> tuple[float, float, int]:
        container = client.containers.create(
            APP_IMAGE,
            command=worker_command(name, callback_url) if callback_url else DIRECT_COMMAND,
            name=name,
            mem_limit=limit_text,
            memswap_limit=limit_text,
            labels=label,
            detach=True,
        )
        try:
            container.start()
            code = int(container.wait(timeout=limit).get("StatusCode", -1))
            exited = time.time()
        finally:
            container.remove(force=True)
        return exited, time.time(), code

    meter = Meter(None)
    out["load_before"] = os.getloadavg()[0]
    t0 = time.time()
    try:
        with ThreadPoolExecutor(PARALLELISM) as pool:
            futures = [pool.submit(one, name) for name in names]
            results = [f.result(timeout=max(1.0, t0 + limit - time.time())) for f in futures]
        out["cpu"] = meter.line(n)
        out["load_after"] = os.getloadavg()[0]
        bad = [code for _, _, code in results if code != 0]
        if bad:
            raise Broken(f"{len(bad)} of {n} direct containers exited non-zero (e.g. {bad[0]})")
        out.update(
            t0=t0, end=max(r[0] for r in results) - t0, removed=max(r[1] for r in results) - t0, names=set(names)
        )
    finally:
        for c in client.api.containers(all=True, filters={"label": f"{BENCH_LABEL}={run}"}):
            try:
                client.api.remove_container(c["Id"], force=True)
            except docker.errors.NotFound:
                pass


# --- report ------------------------------------------------------------------------------------


def breakdown(label: str, names: set[str], events: Events, t0: float, created: dict[str, float] | None = None) -> None:
    rows = {name: events.get(name) for name in names}
    rows = {k: v for k, v in rows.items() if all(a in v for a in Events.ACTIONS)}
    if not rows:
        print(f"    {label}: no complete event records", flush=True)
        return
    first = {a: min(v[a] for v in rows.values()) - t0 for a in Events.ACTIONS}
    last = {a: max(v[a] for v in rows.values()) - t0 for a in Events.ACTIONS}
    print(
        f"    {label}: engine events, seconds after submission, first..last: "
        + ", ".join(f"{a} {first[a]:.1f}..{last[a]:.1f}" for a in Events.ACTIONS),
        flush=True,
    )
    if created:
        placed = spread(created[k] - t0 for k in rows if k in created)
        print(f"      submission -> document created (placement) {placed}", flush=True)
        print(
            f"      document created -> create event           "
            f"{spread(v['create'] - created[k] for k, v in rows.items() if k in created)}",
            flush=True,
        )
    print(f"      create -> start   {spread(v['start'] - v['create'] for v in rows.values())}", flush=True)
    print(
        f"      start -> die      {spread(v['die'] - v['start'] for v in rows.values())}  (the container runs)",
        flush=True,
    )
    print(f"      die -> destroy    {spread(v['destroy'] - v['die'] for v in rows.values())}", flush=True)
    # how many containers existed / ran at once, at most
    points = sorted([(v["create"], 1) for v in rows.values()] + [(v["destroy"], -1) for v in rows.values()])
    running = sorted([(v["start"], 1) for v in rows.values()] + [(v["die"], -1) for v in rows.values()])
    print(f"      at most {_peak(points)} containers existed and {_peak(running)} ran at once", flush=True)


def callback_timings(apps: list[dict[str, Any]], events: Events, t0: float) -> str:
    """Per task: submission -> its container's first callback, and its last callback -> the
    container's removal (the engine's destroy event), p50/p99 in seconds."""
    first, last = [], []
    for app in apps:
        received = [c.get("received_at") for c in app.get("callbacks") or []]
        if not received or None in received:
            continue
        first.append(received[0] - t0)
        destroyed = events.get(str(app["_id"])).get("destroy")
        if destroyed is not None:
            last.append(destroyed - received[-1])
    if not first:
        return "      callbacks: no receive times recorded"

    def p(values: list[float]) -> str:
        return f"p50 {percentile(values, 50):.2f} p99 {percentile(values, 99):.2f}"

    return (
        f"      per task: submission -> first callback {p(first)} s; "
        f"last callback -> container removed {p(last)} s ({len(first)} tasks)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, action="append", help="tasks per run (repeatable; default 40 and 200)")
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="run the daemon under twistd's cProfile (reactor thread); statistics to FILE[.N]",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=600.0,
        help="scheduling_interval_seconds of the daemon (default 600: no reconciliation "
        "during a run, which would remove other daemons' containers)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=300.0,
        help="seconds to wait for other ccserver daemons' containers to go (default 300)",
    )
    parser.add_argument(
        "--share-engine",
        action="store_true",
        help="run even if another ccserver has containers on the engine (figures marked)",
    )
    parser.add_argument(
        "--api-timeout", type=float, help="docker.api_timeout of the daemon (default: the daemon's own default)"
    )
    parser.add_argument("--direct-only", action="store_true", help="skip the ccserver runs")
    parser.add_argument(
        "--no-worker-half", action="store_true", help="skip the direct run with the worker and a stand-in server"
    )
    parser.add_argument(
        "--launches-per-node",
        type=int,
        default=PARALLELISM,
        help=f"the daemon's docker.launches_per_node (default {PARALLELISM}: the direct half's threads)",
    )
    parser.add_argument(
        "--ram-only",
        action="store_true",
        help="place the daemon's tasks by RAM only (as 0.10), not by CPUs: as many containers run at once "
        "as the launches start, where the direct halves run 8",
    )
    parser.add_argument(
        "--no-follow",
        action="store_true",
        help="[logs] follow = false in the daemon (a diagnostic: what following the containers' output costs)",
    )
    parser.add_argument("--timeout-base", type=float, default=120.0, help=argparse.SUPPRESS)
    parser.add_argument("--timeout-per-task", type=float, default=3.0, help=argparse.SUPPRESS)
    parser.add_argument("--keep-log", metavar="FILE", help="copy the daemon's log to FILE")
    args = parser.parse_args()
    args.n = args.n or [40, 200]

    print(load_line("start"), flush=True)
    client = docker.DockerClient(base_url=SOCKET, timeout=120)
    try:
        for image in (APP_IMAGE, DATA_IMAGE):
            client.images.get(image)
    except docker.errors.ImageNotFound as e:
        print(f"missing test image ({e}); build it with scripts/build-test-images", file=sys.stderr)
        return 2
    gateway = bridge_gateway(NodeConfig(name="local", base_url=SOCKET, tls=None), 30)
    print(
        f"engine {SOCKET}; bridge gateway {gateway}; {PARALLELISM} Docker threads; {RAM_MB} MB per container; "
        + (
            "daemon: placement by RAM only (--ram-only)"
            if args.ram_only
            else f"daemon: tes.legacy_cpu_placement, {engine_cpus(client) / PARALLELISM:g} CPUs a task "
            f"(at most {PARALLELISM} at once, as the direct halves)"
        ),
        flush=True,
    )
    events_client = docker.DockerClient(base_url=SOCKET, timeout=None)
    events = Events(events_client)
    checks: list[str] = []
    broken = False
    ok = True
    try:
        for n in args.n:
            print(f"\nN = {n}", flush=True)
            cc: dict[str, Any] = {}
            direct: dict[str, Any] = {}
            shared = False
            if not args.direct_only:
                left = wait_quiet(client, args.quiet_wait)
                if left:
                    if not args.share_engine:
                        print(
                            f"BROKEN  N={n}: {len(left)} container(s) of another ccserver still on the engine "
                            f"after {args.quiet_wait:.0f} s (e.g. {left[0]}); --share-engine runs anyway",
                            flush=True,
                        )
                        broken = True
                        continue
                    shared = True
                try:
                    run_ccserver(n, gateway, client, events, args, cc)
                except (Broken, RuntimeError, OSError) as e:
                    print(f"BROKEN  ccserver, N={n}: {e}", flush=True)
                    broken = True
                    continue
                mark = " (ENGINE SHARED with another ccserver)" if shared or cc.get("foreign") else ""
                print(
                    f"  ccserver: {n} tasks; submission answered in {cc['submit']:.2f} s; last task end "
                    f"{cc['end']:.2f} s ({n / cc['end']:.2f} tasks/s); last container removed {cc['removed']:.2f} s; "
                    f"load {cc['load_before']:.2f} -> {cc['load_after']:.2f}{mark}",
                    flush=True,
                )
                print(f"    {cc['cpu']}; daemon log {cc['log_lines']} lines", flush=True)
                created = {str(a["_id"]): a["transitions"][0]["timestamp"] for a in cc["apps"]}
                breakdown("ccserver containers", cc["names"], events, cc["t0"], created)
                print(callback_timings(cc["apps"], events, cc["t0"]), flush=True)
            try:
                run_direct(n, client, events, args, direct)
            except Exception as e:  # noqa: BLE001 - any failure of the SDK run breaks the figure
                print(f"BROKEN  direct, N={n}: {e!r}", flush=True)
                broken = True
                continue
            print(
                f"  direct:   {n} containers, {PARALLELISM} threads; last exit {direct['end']:.2f} s "
                f"({n / direct['end']:.2f}/s); last removal {direct['removed']:.2f} s; "
                f"load {direct['load_before']:.2f} -> {direct['load_after']:.2f}",
                flush=True,
            )
            print(f"    {direct['cpu']}", flush=True)
            breakdown("direct containers", direct["names"], events, direct["t0"])
            worker: dict[str, Any] = {}
            if not args.no_worker_half:
                stand_in = StandIn(gateway)
                try:
                    url = f"http://{gateway}:{stand_in.server_address[1]}/callback"
                    run_direct(n, client, events, args, worker, callback_url=url)
                except Exception as e:  # noqa: BLE001 - any failure of the SDK run breaks the figure
                    print(f"BROKEN  direct with the worker, N={n}: {e!r}", flush=True)
                    broken = True
                    continue
                finally:
                    stand_in.close()
                if stand_in.callbacks != 4 * n:
                    print(f"BROKEN  direct with the worker, N={n}: {stand_in.callbacks} callbacks, not {4 * n}")
                    broken = True
                    continue
                print(
                    f"  direct with the worker: {n} containers, {PARALLELISM} threads, {stand_in.callbacks} "
                    f"callbacks answered by the stand-in; last exit {worker['end']:.2f} s; last removal "
                    f"{worker['removed']:.2f} s; load {worker['load_before']:.2f} -> {worker['load_after']:.2f}",
                    flush=True,
                )
                print(f"    {worker['cpu']}", flush=True)
                breakdown("direct containers with the worker", worker["names"], events, worker["t0"])
            if args.direct_only:
                continue
            ratio_end = cc["end"] / direct["end"]
            ratio = cc["removed"] / direct["removed"]
            target = TARGETS.get(n, TARGETS[40])
            passed = ratio <= target
            ok = ok and passed
            checks.append(
                f"{'PASS' if passed else 'FAIL'}  N={n}: ccserver/direct = {ratio:.2f} to the last "
                f"removal ({cc['removed']:.1f} s / {direct['removed']:.1f} s), {ratio_end:.2f} to the "
                f"last end ({cc['end']:.1f} s / {direct['end']:.1f} s); target <= {target}"
            )
            print(
                f"  ratio ccserver/direct: {ratio_end:.2f} to the last end, {ratio:.2f} to the last removal", flush=True
            )
            if worker:
                print(
                    f"  ratio ccserver/direct with the worker: {cc['end'] / worker['end']:.2f} to the last end, "
                    f"{cc['removed'] / worker['removed']:.2f} to the last removal (what the daemon adds to the "
                    f"protocol's own cost); direct with the worker/direct: {worker['removed'] / direct['removed']:.2f}",
                    flush=True,
                )
    finally:
        events.close()
        events_client.close()
        client.close()
    print(f"\n{load_line('end')}", flush=True)
    for line in checks:
        print(line, flush=True)
    if broken:
        return 2
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
