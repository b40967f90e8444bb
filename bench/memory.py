"""Benchmark: the daemon's memory after 100,000 tasks have passed through the store.

Run from the repository root:  .venv/bin/python bench/memory.py [--tasks N]

The script writes a configuration into a temporary directory (embedded store, a loopback
listener on a free port, one Docker node that cannot be reached, so nothing runs), creates a
user with ``ccserver-admin`` and starts ``twistd -n ccserver``.  It submits the tasks in
1,000-task batches; after every 10 batches it cancels those 10,000 tasks (so they pass
through: submitted, cancelled, notified and masked in the background, their groups ended) and
waits until their groups have ended.  The daemon's resident memory (``VmRSS`` of
``/proc/PID/status``) is read after the start, after each 10,000 tasks and at the end, with
the peak (``VmHWM``).

Target: VmRSS < 300 MB after 100,000 tasks.  Exit status 0 when met, 1 when not, 2 when the
run broke.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ccserver.testing import daemon as harness  # noqa: E402
from ccserver.testing.daemon import Daemon  # noqa: E402
from ccserver.testing.ferretdb import free_port  # noqa: E402

USERNAME = "bench"
PASSWORD = "bench-password-0123"
BATCH = 1_000
ROUND = 10  # batches between cancels
TARGET_MB = 300.0
TASK = {
    "application_container_description": {"image": "ccserver-test/app-noinput:1", "container_ram": 64},
    "input_files": [],
    "result_files": [],
}


def status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Client:
    def __init__(self, base: str, auth: str) -> None:
        self.base, self.auth = base, auth

    def call(self, method: str, path: str, body: Any = None, timeout: float = 120) -> Any:
        request = urllib.request.Request(
            self.base + path, method=method, data=None if body is None else json.dumps(body).encode()
        )
        request.add_header("authorization", self.auth)
        request.add_header("content-type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                return json.loads(answer.read())
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"{method} {path}: {e.code} {e.read()[:500]!r}") from None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000, help="tasks passing through (multiple of 10,000)")
    args = parser.parse_args()
    rounds = max(1, args.tasks // (BATCH * ROUND))
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; CPUs {os.cpu_count()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="ccserver-bench-memory-") as name:
        tmp = Path(name)
        (tmp / "home").mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "CCSERVER_CONFIG"))}
        env["HOME"] = str(tmp / "home")
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        port = free_port()
        config = harness.write_config(
            tmp, listen=f"tcp:{port}:interface=127.0.0.1", server={"host": "http://127.0.0.1"}
        )
        try:
            harness.create_user(config, USERNAME, PASSWORD, env)
        except harness.DaemonError as e:
            print(e, file=sys.stderr)
            return 2
        daemon = Daemon(["--config", str(config)], env=env, cwd=str(tmp))
        started = time.monotonic()
        broken = False
        with daemon:
            assert daemon.process
            pid = daemon.process.pid
            daemon.wait_for("containers will call back at", timeout=60)
            base = f"http://127.0.0.1:{port}"
            client = Client(base, "Basic " + base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode())
            token = client.call("GET", "/token")["token"]
            client.auth = "Basic " + base64.b64encode(f"{USERNAME}:{token}".encode()).decode()
            print(f"after start: VmRSS {status_mb(pid, 'VmRSS'):.0f} MB", flush=True)
            try:
                for r in range(rounds):
                    ids: list[str] = []
                    t0 = time.monotonic()
                    for _ in range(ROUND):
                        answer = client.call("POST", "/tasks", {"tasks": [TASK] * BATCH})
                        ids += [t["_id"] for t in answer["tasks"]]
                    submitted = time.monotonic() - t0
                    t1 = time.monotonic()
                    client.call("POST", "/tasks/cancel", {"tasks": [{"_id": i} for i in ids]})
                    cancelled = time.monotonic() - t1
                    deadline = time.monotonic() + 600
                    live = [{"$match": {"state": {"$in": [0, 1, 2]}}}, {"$count": "n"}]
                    while time.monotonic() < deadline:
                        found = client.call("POST", "/task-groups/query", {"aggregate": live})["task_groups"]
                        if not found or found[0]["n"] == 0:
                            break
                        time.sleep(0.5)
                    else:
                        print("the cancelled tasks' groups did not end within 600 s", file=sys.stderr)
                        broken = True
                        break
                    print(
                        f"{(r + 1) * ROUND * BATCH:>7,} tasks through: submitted in {submitted:.1f} s, "
                        f"cancelled in {cancelled:.1f} s, all ended {time.monotonic() - t0 - submitted:.1f} s after; "
                        f"VmRSS {status_mb(pid, 'VmRSS'):.0f} MB, peak {status_mb(pid, 'VmHWM'):.0f} MB",
                        flush=True,
                    )
            except (RuntimeError, OSError) as e:
                print(f"the run broke: {e}", file=sys.stderr)
                broken = True
            rss, peak = status_mb(pid, "VmRSS"), status_mb(pid, "VmHWM")
            code = daemon.stop(timeout=60)
            output = daemon.output
        print(f"total {time.monotonic() - started:.0f} s; final VmRSS {rss:.0f} MB, peak VmHWM {peak:.0f} MB")
        if broken or code != 0 or "Traceback" in output:
            print(f"the run broke (exit {code}):\n{output[-4000:]}", file=sys.stderr)
            return 2
        ok = rss < TARGET_MB
        print(
            f"{'PASS' if ok else 'FAIL'}  VmRSS after {rounds * ROUND * BATCH:,} tasks < {TARGET_MB:.0f} MB "
            f"({rss:.0f} MB; peak {peak:.0f} MB)"
        )
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
