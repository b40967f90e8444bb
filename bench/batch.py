"""Benchmark: does a maximum-size batch stall the daemon's other answers?

Run from the repository root:  .venv/bin/python bench/batch.py [--max-body BYTES] [--rounds S]

The script writes a configuration into a temporary directory (embedded store, a loopback
listener, ``scheduling_interval_seconds = 2`` so that several full rounds follow the batch, and
one Docker node that cannot be reached: it is found dead, so nothing is placed or started and
Docker is not what is measured; the rounds still run, and each full round reads every live task
for the periodic recovery), creates a standard user with ``ccserver-admin``, starts
``twistd -n ccserver`` and gets a token.  Two clients then sample, every 20 ms, ``GET /`` (no
database, no authentication: what it costs is the reactor's attention) and ``GET /nodes``
(authenticated with the token), each over its own keep-alive connection:

* **baseline:** a few seconds with nothing else going on;
* **batch:** while one ``POST /tasks`` of the largest batch that fits ``server.max_body_bytes``
  (8 MiB by default: about 73,000 tasks) is sent, parsed, validated, stored and answered;
* **rounds:** the seconds after the answer, while the scheduler's rounds see ~73,000 waiting
  tasks.

Printed: p50/p99/max of both per phase, the batch's own time, the tasks stored (counted with a
query), the load average.  Target: ``GET /`` p99 < 100 ms during the batch and the rounds.
Exit status 0 when met, 1 when missed, 2 when the run broke (a failed request, a traceback in
the daemon's log, a bad exit, the batch not stored whole).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ccserver.testing import daemon as harness  # noqa: E402
from ccserver.testing.daemon import FileDaemon, daemon_env  # noqa: E402
from ccserver.testing.sampling import Sampler, batch_body, percentile, summary  # noqa: E402

USERNAME = "bench"
PASSWORD = "bench-password-0123"
MAX_BODY = 8 * 1024 * 1024
TARGET_P99 = 0.100
INTERVAL = 2.0
#: the daemon's collections of any generation that took 10 ms or more: ``time ms generation``
GC_HOOK = """\
import gc, os, time

_out = open(os.environ["CCSERVER_BENCH_GC_LOG"], "a", buffering=1)
_started = [0.0]


def _gc_callback(phase, info):
    if phase == "start":
        _started[0] = time.perf_counter()
        return
    pause = (time.perf_counter() - _started[0]) * 1000
    if pause >= 10:
        _out.write("%.3f %.2f %d\\n" % (time.time(), pause, info["generation"]))


gc.callbacks.append(_gc_callback)
"""
#: wall-clock times of the batch's start and answer (to place the daemon's collections)
WALL: dict[str, float] = {}


def write_config(tmp: Path, max_body: int, interval: float) -> Path:
    # the only node cannot be reached: nothing is placed, Docker is not measured
    server = {"host": "http://127.0.0.1", "max_body_bytes": max_body, "scheduling_interval_seconds": interval}
    return harness.write_config(tmp, server=server)


def basic(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


def call(
    host: str, port: int, method: str, path: str, auth: str, body: bytes | None = None, timeout: float = 120.0
) -> tuple[int, Any]:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        headers = {"authorization": auth}
        if body is not None:
            headers["content-type"] = "application/json"
        conn.request(method, path, body=body, headers=headers)
        answer = conn.getresponse()
        data = answer.read()
        return answer.status, json.loads(data) if data else None
    finally:
        conn.close()


def count_tasks(host: str, port: int, auth: str) -> int:
    query = json.dumps({"aggregate": [{"$count": "n"}]}).encode()
    status, answer = call(host, port, "POST", "/tasks/query", auth, query)
    if status != 200:
        raise RuntimeError(f"counting tasks: {status} {answer}")
    found = answer["tasks"]
    return found[0]["n"] if found else 0


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run(host: str, port: int, token: str, max_body: int, baseline: float, rounds: float) -> tuple[bool, bool]:
    """(target met, run clean)."""
    auth = basic(USERNAME, token)
    root = Sampler(host, port, "/").start()
    nodes = Sampler(host, port, "/nodes", auth=auth).start()
    body, count = batch_body(max_body)
    t0 = time.monotonic()
    time.sleep(baseline)
    t1 = time.monotonic()
    WALL["batch"] = time.time()
    status, answer = call(host, port, "POST", "/tasks", auth, body, timeout=300)
    t2 = time.monotonic()
    WALL["answer"] = time.time()
    time.sleep(rounds)
    t3 = time.monotonic()
    root.stop()
    nodes.stop()
    clean = status == 200 and isinstance(answer, dict) and len(answer.get("tasks", [])) == count
    print(f"batch: {count:,} tasks, {len(body):,} bytes: {status} in {t2 - t1:.2f} s", flush=True)
    stored = count_tasks(host, port, auth) if status == 200 else 0
    print(f"tasks stored: {stored:,} of {count:,}")
    clean = clean and stored == count
    met = True
    for phase, (start, end) in {"baseline": (t0, t1), "batch": (t1, t2), "rounds": (t2, t3)}.items():
        for sampler in (root, nodes):
            samples = sampler.between(start, end)
            print(f"{phase:8s} GET {sampler.path:7s} {summary(samples)}")
            if any(s.status != 200 for s in samples):
                clean = False
            if sampler is root and phase != "baseline":
                met = met and percentile([s.seconds for s in samples], 99) < TARGET_P99
    return met, clean


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-body", type=int, default=MAX_BODY, help="server.max_body_bytes and the batch size")
    parser.add_argument("--baseline", type=float, default=3.0, help="seconds of sampling before the batch")
    parser.add_argument("--rounds", type=float, default=3 * INTERVAL + 1, help="seconds of sampling after it")
    parser.add_argument("--profile", help="run the daemon under cProfile (reactor thread), statistics to FILE")
    parser.add_argument("--gc-log", action="store_true", help="also: the daemon's full garbage collections")
    args = parser.parse_args()
    print(f"start: load average {load()}; CPUs {os.cpu_count()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="ccserver-bench-batch-") as name:
        tmp = Path(name)
        (tmp / "home").mkdir()
        env = daemon_env(tmp / "home", REPO)
        config = write_config(tmp, args.max_body, INTERVAL)
        if args.gc_log:  # a sitecustomize first on the daemon's PYTHONPATH
            (tmp / "hooks").mkdir()
            (tmp / "hooks" / "sitecustomize.py").write_text(GC_HOOK)
            env["PYTHONPATH"] = str(tmp / "hooks") + os.pathsep + env["PYTHONPATH"]
            env["CCSERVER_BENCH_GC_LOG"] = str(tmp / "gc.log")
        harness.create_user(config, USERNAME, PASSWORD, env)
        daemon = FileDaemon(
            ["--config", str(config)], env=env, cwd=str(tmp), log=tmp / "daemon.log", profile=args.profile
        )
        with daemon:
            _, host, port = daemon.listening(timeout=60)[0]
            daemon.done_following.set()
            status, answer = call(host, port, "GET", "/token", basic(USERNAME, PASSWORD))
            if status != 200:
                print(f"GET /token answered {status}: {answer}", file=sys.stderr)
                return 2
            met, clean = run(host, port, answer["token"], args.max_body, args.baseline, args.rounds)
            code = daemon.stop(timeout=120)
            output = daemon.output
            if args.gc_log:
                lines = [line.split() for line in (tmp / "gc.log").read_text().splitlines()]
                print(
                    f"daemon collections of 10 ms or more: {len(lines)}; pause ms (generation) @ seconds after "
                    f"the batch was sent (answer at {WALL.get('answer', 0) - WALL.get('batch', 0):.1f} s): "
                    + " ".join(f"{float(p):.0f}({g})@{float(t) - WALL.get('batch', 0):.1f}" for t, p, g in lines)
                )
    print(f"end: load average {load()}; CPUs {os.cpu_count()}")
    if code != 0 or "Traceback" in output:
        clean = False
        print(f"daemon exit status {code}; its log:\n{output[-5000:]}")
    print(f"  {'PASS' if met else 'FAIL'}  GET / p99 < {TARGET_P99 * 1000:.0f} ms during the batch and the rounds")
    print(f"  {'PASS' if clean else 'BROKEN'}  run complete")
    if not clean:
        return 2
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
