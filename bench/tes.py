"""Benchmark of TES task throughput: N trivial TES tasks submitted through py-tes 1.1 to the
real daemon, against the same containers run directly with the docker SDK at the same
parallelism, on the local Docker engine; and 1,000 TES tasks listed with view FULL.

Run from the repository root:  .venv/bin/python bench/tes.py [--n 40 --n 200] [--profile FILE]

For each N the script

1. starts the real daemon (``twistd -n ccserver``, via ``ccserver.testing.daemon``) in a
   temporary directory: embedded store, ``thread_limit = 8``, ``pull_policy = 'never'``, the
   local engine as the only node, listening on loopback; creates a user and gets a token;
2. runs ``bench/tes_client.py run`` under the py-tes 1.1 interpreter (``--py-tes``; by default
   ``$CCSERVER_PY_TES_1_1``, else what ``scripts/lib.sh``'s ``py_tes_env 1.1`` prints): it submits
   N tasks (``POST /ga4gh/tes/v1/tasks`` from 8 threads; one executor ``sh -c true`` in
   ``ccserver-test/busybox:1``, no resources: the daemon's ``[tes] default_ram_gb`` is 1/16 and
   ``default_cpu_cores`` the engine's CPUs / 8, so that the CPU placement runs 8 at once), waits
   until all have ended and reads them with view FULL;
3. runs the same containers directly: same image, command, memory and CPU limits, created,
   started, awaited and removed with the docker SDK by a pool of 8 threads;
4. prints both wall times (from just before the first submission to the last task end, the
   ``end_time`` of its TaskLog, and to the last removal, the engine's ``destroy`` event), the
   ratio (target <= 1.15 at N = 40 to the last removal, staging included), the per-task times
   from the TaskLogs (submission -> placed, placed -> executor started: the INITIALIZING state
   with volumes, container create and staging in; executor end -> TaskLog end: staging out and
   the end's writes) and the engine events' breakdown, CPU seconds and the load average.

On a machine shared with other work one short pair varies by tens of percent, so each N up
to 50 runs ``--pairs`` (3) pairs, ccserver first and direct first in turn, and the target
counts the median ratio.

Then (``--list``, default 1000) a daemon whose only node cannot be reached (nothing is placed)
gets that many tasks through py-tes and lists them with view FULL in one page: the time of the
py-tes call (best and median of ``--repeat``) is to be under 1 s.

Every wait is bounded; every container the run created is removed, also on failure.  Exit
status: 0 when every target is met, 1 when one is missed, 2 when the run is broken.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import docker  # noqa: E402

from ccserver.tes import docker_tes  # noqa: E402
from ccserver.testing import daemon as harness  # noqa: E402
from ccserver.testing.benchkit import SOCKET, Events, Meter, foreign_ccserver_containers, load_line, peak, spread  # noqa: E402
from ccserver.testing.daemon import FileDaemon, daemon_env  # noqa: E402

IMAGE = "ccserver-test/busybox:1"
COMMAND = ["sh", "-c", "true"]
RAM_MB = 64
PARALLELISM = 8
#: ccserver / direct to the last removal, at most; other N are printed for information
TARGETS = {40: 1.15}
LIST_TARGET = 1.0
#: N up to this are run in several pairs (--pairs); larger ones once
PAIRED_UP_TO = 50
USERNAME = "bench"
PASSWORD = "bench-password-0123"
BENCH_LABEL = "ccserver-bench-tes"
CLIENT = REPO / "bench" / "tes_client.py"


class Broken(Exception):
    """The run cannot give a figure."""


def py_tes_python(given: str | None) -> str:
    if given:
        return given
    if os.environ.get("CCSERVER_PY_TES_1_1"):
        return os.environ["CCSERVER_PY_TES_1_1"]
    done = subprocess.run(
        ["bash", "-c", ". scripts/lib.sh; py_tes_env 1.1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


def epoch(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def write_config(tmp: Path, rest: str, interval: float) -> Path:
    return harness.write_config(
        tmp,
        listen="tcp:0:interface=127.0.0.1",
        server={"scheduling_interval_seconds": interval},
        rest="[docker]\nthread_limit = 8\npull_policy = 'never'\n\n" + rest,
    )


def token_of(url: str) -> str:
    auth = "Basic " + base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
    return str(get(url, "/token", auth)["token"])


def get(url: str, path: str, auth: str) -> Any:
    request = urllib.request.Request(url + path)
    request.add_header("Authorization", auth)
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as e:
        raise Broken(f"GET {path}: {e.code} {e.read()[:300]!r}") from None


def client_call(python: str, args: list[str], seconds: float) -> dict[str, Any]:
    try:
        done = subprocess.run(
            [python, "-P", str(CLIENT), *args], capture_output=True, text=True, timeout=seconds, check=False
        )
    except subprocess.TimeoutExpired:
        raise Broken(f"the py-tes client did not end within {seconds:.0f} s") from None
    try:
        out = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise Broken(f"the py-tes client failed ({done.returncode}): {done.stderr[-2000:]}") from None
    if out.get("error"):
        raise Broken(f"py-tes client: {out['error']}")
    return dict(out)


class Run:
    """One daemon in a temporary directory, with its log checked for tracebacks at the end."""

    def __init__(self, rest: str, args: argparse.Namespace, profile: str | None = None) -> None:
        self.tmp_dir = tempfile.TemporaryDirectory(prefix="ccserver-bench-tes-")
        tmp = Path(self.tmp_dir.name)
        (tmp / "home").mkdir()
        env = daemon_env(tmp / "home", REPO)
        config = write_config(tmp, rest, args.interval)
        harness.create_user(config, USERNAME, PASSWORD, env)
        self.daemon = FileDaemon(
            ["--config", str(config)], env=env, cwd=str(tmp), log=tmp / "daemon.log", profile=profile
        )
        self.keep_log = args.keep_log

    def __enter__(self) -> Run:
        self.daemon.start()
        _, host, port = self.daemon.listening(timeout=60)[0]
        self.daemon.done_following.set()
        self.url = f"http://{host}:{port}"
        self.token = token_of(self.url)
        return self

    def healthy(self, seconds: float = 60) -> None:
        auth = "Basic " + base64.b64encode(f"{USERNAME}:{self.token}".encode()).decode()
        deadline = time.monotonic() + seconds
        while not get(self.url, "/nodes", auth)["healthy_nodes"]:
            if time.monotonic() > deadline:
                raise Broken(f"the local node did not become healthy within {seconds:.0f} s")
            time.sleep(0.2)

    def finish(self) -> None:
        code = self.daemon.stop(timeout=30)
        if code != 0:
            raise Broken(f"the daemon exited with {code}")
        text = self.daemon.output
        if "Traceback" in text:
            raise Broken("a traceback in the daemon's log:\n" + text[text.index("Traceback") :][:3000])

    def __exit__(self, *exc: object) -> None:
        try:
            if self.daemon.process and self.daemon.process.poll() is None:
                try:
                    self.daemon.stop(timeout=30)
                except Exception:  # noqa: BLE001 - stop() killed it after the time limit
                    pass
            if self.keep_log:
                try:
                    Path(self.keep_log).write_text(self.daemon.output)
                except OSError:
                    pass
        finally:
            self.tmp_dir.cleanup()


def run_ccserver(
    n: int, python: str, cpus: float, client: docker.DockerClient, events: Events, args: argparse.Namespace
) -> dict[str, Any]:
    limit = args.timeout_base + n * args.timeout_per_task
    profile = None
    if args.profile:
        profile = str(Path(f"{args.profile}.{n}" if len(args.n) > 1 else args.profile).resolve())
    rest = (
        f"[tes]\ndefault_cpu_cores = {cpus}\ndefault_ram_gb = {RAM_MB / 1024}\n\n"
        f"[docker.nodes.local]\nbase_url = '{SOCKET}'\n"
    )
    try:
        with Run(rest, args, profile) as run:
            run.healthy()
            time.sleep(0.5)  # let the start-up round settle
            assert run.daemon.process
            meter = Meter(run.daemon.process.pid)
            load_before = os.getloadavg()[0]
            out = client_call(
                python,
                ["run", run.url, run.token, str(n), str(PARALLELISM), IMAGE, str(limit)],
                limit + 60,
            )
            tasks = out["tasks"]
            if len(tasks) != n:
                raise Broken(f"{len(tasks)} of {n} tasks read back")
            bad = [t for t in tasks if t["state"] != "COMPLETE"]
            if bad:
                why = (bad[0].get("logs") or [{}])[-1].get("system_logs")
                raise Broken(f"{len(bad)} of {n} tasks did not complete; e.g. {bad[0]['state']}: {why}")
            names = {docker_tes.container_name(t["id"], 1, 0) for t in tasks}
            deadline = time.monotonic() + limit
            while left := [c for c in names if "destroy" not in events.get(c)]:
                if time.monotonic() > deadline:
                    raise Broken(f"{len(left)} containers not removed within {limit:.0f} s")
                time.sleep(0.1)
            cpu = meter.line(n)
            load_after = os.getloadavg()[0]
            run.finish()
    except harness.DaemonError as e:
        raise Broken(str(e)) from None
    t0 = out["t0"]
    logs = [t["logs"][-1] for t in tasks]
    created = [epoch(t["creation_time"]) or t0 for t in tasks]
    placed = [epoch(log["start_time"]) or 0.0 for log in logs]
    started = [epoch(log["logs"][0]["start_time"]) or 0.0 for log in logs]
    exited = [epoch(log["logs"][0]["end_time"]) or 0.0 for log in logs]
    ended = [epoch(log["end_time"]) or 0.0 for log in logs]
    return {
        "t0": t0,
        "submit": out["submitted"] - t0,
        "end": max(ended) - t0,
        "removed": max(events.get(c)["destroy"] for c in names) - t0,
        "names": names,
        "cpu": cpu,
        "load": (load_before, load_after),
        "queued": [p - c for p, c in zip(placed, created, strict=True)],
        "initializing": [s - p for s, p in zip(started, placed, strict=True)],
        "executor": [e - s for e, s in zip(exited, started, strict=True)],
        "finishing": [e - x for e, x in zip(ended, exited, strict=True)],
        "system_logs": logs[0].get("system_logs") or [],
        "handoff": handoffs(placed, ended),
    }


def handoffs(placed: list[float], ended: list[float]) -> list[float]:
    """For each placement that waited for a free slot (after the first PARALLELISM): the time
    from the latest task end before it to it, the round -> attempt hand-off."""
    ends = sorted(ended)
    gaps = []
    for when in sorted(placed)[PARALLELISM:]:
        before = [e for e in ends if e <= when]
        if before:
            gaps.append(when - before[-1])
    return gaps


def run_direct(n: int, cpus: float, client: docker.DockerClient, args: argparse.Namespace) -> dict[str, Any]:
    run = uuid.uuid4().hex[:12]
    label = {BENCH_LABEL: run}
    limit = args.timeout_base + n * args.timeout_per_task
    names = [f"ccserver-bench-tes-{run}-{i}" for i in range(n)]
    memory = f"{RAM_MB}m"

    def one(name: str) -> tuple[float, float, int]:
        container = client.containers.create(
            IMAGE,
            command=COMMAND,
            name=name,
            mem_limit=memory,
            memswap_limit=memory,
            nano_cpus=int(round(cpus * 1e9)),
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
    load_before = os.getloadavg()[0]
    t0 = time.time()
    try:
        with ThreadPoolExecutor(PARALLELISM) as pool:
            futures = [pool.submit(one, name) for name in names]
            results = [f.result(timeout=max(1.0, t0 + limit - time.time())) for f in futures]
        bad = [code for _, _, code in results if code != 0]
        if bad:
            raise Broken(f"{len(bad)} of {n} direct containers exited non-zero (e.g. {bad[0]})")
        return {
            "t0": t0,
            "end": max(r[0] for r in results) - t0,
            "removed": max(r[1] for r in results) - t0,
            "names": set(names),
            "cpu": meter.line(n),
            "load": (load_before, os.getloadavg()[0]),
        }
    finally:
        for c in client.api.containers(all=True, filters={"label": f"{BENCH_LABEL}={run}"}):
            try:
                client.api.remove_container(c["Id"], force=True)
            except docker.errors.NotFound:
                pass


def breakdown(label: str, names: set[str], events: Events, t0: float) -> None:
    rows = {name: events.get(name) for name in names}
    rows = {k: v for k, v in rows.items() if all(a in v for a in Events.ACTIONS)}
    if not rows:
        print(f"    {label}: no complete event records", flush=True)
        return
    first = {a: min(v[a] for v in rows.values()) - t0 for a in Events.ACTIONS}
    last = {a: max(v[a] for v in rows.values()) - t0 for a in Events.ACTIONS}
    print(
        f"    {label}: engine events, seconds after the first submission, first..last: "
        + ", ".join(f"{a} {first[a]:.1f}..{last[a]:.1f}" for a in Events.ACTIONS),
        flush=True,
    )
    print(f"      create -> start   {spread(v['start'] - v['create'] for v in rows.values())}", flush=True)
    print(f"      start -> die      {spread(v['die'] - v['start'] for v in rows.values())}", flush=True)
    print(f"      die -> destroy    {spread(v['destroy'] - v['die'] for v in rows.values())}", flush=True)
    existed = peak(sorted([(v["create"], 1) for v in rows.values()] + [(v["destroy"], -1) for v in rows.values()]))
    ran = peak(sorted([(v["start"], 1) for v in rows.values()] + [(v["die"], -1) for v in rows.values()]))
    print(f"      at most {existed} containers existed and {ran} ran at once", flush=True)


def run_listing(python: str, args: argparse.Namespace) -> tuple[bool, str]:
    with Run(harness.UNREACHABLE_NODE, args) as run:
        out = client_call(
            python, ["list", run.url, run.token, str(args.list), str(PARALLELISM), IMAGE, str(args.repeat)], 600
        )
        run.finish()
    if any(c != args.list for c in out["counts"]):
        raise Broken(f"a FULL page held {out['counts']} tasks, not {args.list}")
    best, median = min(out["pytes_seconds"]), statistics.median(out["pytes_seconds"])
    raw_best, raw_median = min(out["raw_seconds"]), statistics.median(out["raw_seconds"])
    print(
        f"  listing: {args.list} TES tasks submitted through py-tes {out['version']} in "
        f"{out['submit_seconds']:.1f} s ({args.list / out['submit_seconds']:.0f}/s, {PARALLELISM} threads); "
        f"GET /tasks?view=FULL&page_size={args.list} ({out['bytes'][0] / 1e6:.2f} MB): py-tes list_tasks best "
        f"{best * 1000:.0f} ms, median {median * 1000:.0f} ms; raw HTTP best {raw_best * 1000:.0f} ms, median "
        f"{raw_median * 1000:.0f} ms ({args.repeat} times)",
        flush=True,
    )
    passed = median < LIST_TARGET
    return passed, (
        f"{'PASS' if passed else 'FAIL'}  listing {args.list} tasks with view FULL: median {median:.2f} s "
        f"through py-tes (raw HTTP {raw_median:.2f} s); target < {LIST_TARGET:g} s"
    )


def one_pair(
    n: int, pair: int, python: str, cpus: float, client: docker.DockerClient, events: Events, args: argparse.Namespace
) -> tuple[float, float, float, float]:
    """One ccserver run and one direct run of N (in turn the first: the machine's load drifts);
    (ratio to the last removal, ccserver's wall time, the direct one's, the load average)."""
    # daemons touch only the containers that carry their own identity label: others may run,
    # but they share the CPUs (the figures say so)
    left = foreign_ccserver_containers(client)
    if pair % 2 == 0:
        cc = run_ccserver(n, python, cpus, client, events, args)
        direct = run_direct(n, cpus, client, args)
    else:
        direct = run_direct(n, cpus, client, args)
        cc = run_ccserver(n, python, cpus, client, events, args)
    shared = f" (engine shared: {len(left)} other ccserver containers)" if left else ""
    print(
        f"  ccserver: {n} TES tasks through py-tes; submitted in {cc['submit']:.2f} s; last task end "
        f"{cc['end']:.2f} s; last container removed {cc['removed']:.2f} s; "
        f"load {cc['load'][0]:.2f} -> {cc['load'][1]:.2f}{shared}",
        flush=True,
    )
    print(f"    {cc['cpu']}", flush=True)
    print(
        "    per task, from the TaskLogs: submission -> placed (QUEUED) "
        f"{spread(cc['queued'])}; placed -> executor started (INITIALIZING: volumes, create, "
        f"staging in) {spread(cc['initializing'])}; executor runs {spread(cc['executor'])}; "
        f"executor end -> task end (staging out, records) {spread(cc['finishing'])}; "
        f"a task end -> the next placement {spread(cc['handoff'])}",
        flush=True,
    )
    if cc["system_logs"]:
        print(f"    system_logs of the first task: {cc['system_logs']}", flush=True)
    breakdown("ccserver containers", cc["names"], events, cc["t0"])
    print(
        f"  direct:   {n} containers, {PARALLELISM} threads; last exit {direct['end']:.2f} s; last "
        f"removal {direct['removed']:.2f} s; load {direct['load'][0]:.2f} -> {direct['load'][1]:.2f}",
        flush=True,
    )
    print(f"    {direct['cpu']}", flush=True)
    breakdown("direct containers", direct["names"], events, direct["t0"])
    ratio_end = cc["end"] / direct["end"]
    ratio = cc["removed"] / direct["removed"]
    print(f"  ratio ccserver/direct: {ratio_end:.2f} to the last end, {ratio:.2f} to the last removal")
    return ratio, cc["removed"], direct["removed"], (cc["load"][0] + direct["load"][1]) / 2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, action="append", help="tasks per run (repeatable; default 40 and 200)")
    parser.add_argument("--list", type=int, default=1000, help="tasks listed with view FULL (0: skip; default 1000)")
    parser.add_argument("--repeat", type=int, default=5, help="times the listing is timed (default 5)")
    parser.add_argument(
        "--pairs",
        type=int,
        default=3,
        help=f"ccserver/direct pairs per N up to {PAIRED_UP_TO}, in alternating order; the median ratio counts "
        "(default 3: on a shared machine one short pair varies by tens of percent)",
    )
    parser.add_argument("--py-tes", metavar="PYTHON", help="interpreter of a virtualenv with py-tes 1.1")
    parser.add_argument("--profile", metavar="FILE", help="run the daemon under twistd's cProfile; FILE[.N]")
    parser.add_argument("--interval", type=float, default=600.0, help="scheduling_interval_seconds (default 600)")
    parser.add_argument("--keep-log", metavar="FILE", help="copy the last daemon's log to FILE")
    parser.add_argument("--timeout-base", type=float, default=120.0, help=argparse.SUPPRESS)
    parser.add_argument("--timeout-per-task", type=float, default=3.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.n = args.n if args.n is not None else [40, 200]

    print(load_line("start"), flush=True)
    python = py_tes_python(args.py_tes)
    client = docker.DockerClient(base_url=SOCKET, timeout=120)
    try:
        client.images.get(IMAGE)
    except docker.errors.ImageNotFound as e:
        print(f"missing test image ({e}); build it with scripts/build-test-images", file=sys.stderr)
        return 2
    ncpu = int(client.info().get("NCPU") or 1)
    cpus = ncpu / PARALLELISM
    print(
        f"engine {SOCKET} ({ncpu} CPUs); py-tes {python}; {PARALLELISM} at once (cpu_cores {cpus:g}); "
        f"{RAM_MB} MB per container",
        flush=True,
    )
    events_client = docker.DockerClient(base_url=SOCKET, timeout=None)
    events = Events(events_client)
    checks: list[str] = []
    broken = False
    ok = True
    try:
        for n in args.n:
            pairs = args.pairs if n <= PAIRED_UP_TO else 1
            ratios: list[tuple[float, float, float, float]] = []
            for pair in range(pairs):
                print(f"\nN = {n}" + (f", pair {pair + 1} of {pairs}" if pairs > 1 else ""), flush=True)
                try:
                    ratios.append(one_pair(n, pair, python, cpus, client, events, args))
                except (Broken, OSError, docker.errors.DockerException) as e:
                    print(f"BROKEN  N={n}: {e}", flush=True)
                    broken = True
                    break
            if len(ratios) < pairs:
                continue
            ratio = statistics.median(r[0] for r in ratios)
            target = TARGETS.get(n)
            passed = target is None or ratio <= target
            ok = ok and passed
            each = ", ".join(f"{r[0]:.2f} ({r[1]:.1f} s / {r[2]:.1f} s, load {r[3]:.1f})" for r in ratios)
            checks.append(
                f"{'PASS' if passed else 'FAIL'}  N={n}: ccserver/direct to the last removal = {ratio:.2f}"
                + (f" (median of {pairs} pairs: {each})" if pairs > 1 else f" ({each})")
                + "; "
                + (f"target <= {target}" if target else "no target")
            )
        if args.list:
            print(f"\nlisting {args.list} tasks", flush=True)
            try:
                passed, line = run_listing(python, args)
                ok = ok and passed
                checks.append(line)
            except (Broken, OSError) as e:
                print(f"BROKEN  listing: {e}", flush=True)
                broken = True
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
