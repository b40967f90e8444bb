"""Benchmark: how soon a restarted daemon answers the API with a large store of live work.

Run from the repository root:  .venv/bin/python bench/restart.py [--tasks N] [--containers N]

The script writes a configuration into a temporary directory (embedded store, a loopback
listener on a free port, one Docker node that cannot be reached), creates a user with
``ccserver-admin``, then writes straight into the store file what a daemon killed under load
leaves behind: 10,000 live tasks in 10 groups, 1,000 of them processing with a live
application container on the node, the other 9,000 waiting.  Then it starts
``twistd -n ccserver`` and measures, from the moment the process is started:

* until ``GET /`` answers (the web server is up);
* until an authenticated ``GET /nodes`` answers (it reads every live container);
* until the start-up recovery has run (its log line);
* until the 1,000 containers have been failed and their tasks wait again (the node cannot be
  reached, so it is found dead and its containers failed: "reconcile" in the case where
  Docker cannot tell what became of them).

Target: the API (``GET /`` and ``GET /nodes``) answers within 5 s of the start.  Exit status 0
when it is met, 1 when not, 2 when the run broke.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bson import ObjectId  # noqa: E402

from ccserver.storage.embedded import SCHEMA, _encode, _id_key, _insert, _keys  # noqa: E402
from ccserver.testing import daemon as harness  # noqa: E402
from ccserver.testing.daemon import Daemon  # noqa: E402
from ccserver.testing.ferretdb import free_port  # noqa: E402

USERNAME = "bench"
PASSWORD = "bench-password-0123"
TARGET_SECONDS = 5.0
GROUPS = 10


def env_for(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "CCSERVER_CONFIG"))}
    env["HOME"] = str(home)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def write_config(tmp: Path, port: int) -> Path:
    # the only node cannot be reached: its containers cannot be asked about
    server = {"host": "http://127.0.0.1", "scheduling_interval_seconds": 5}
    return harness.write_config(tmp, listen=f"tcp:{port}:interface=127.0.0.1", server=server)


def transition(state: int, now: float) -> dict[str, Any]:
    return {"timestamp": now, "state": state, "description": "bench", "exception": None, "caused_by": None}


def fill(path: Path, tasks: int, containers: int) -> None:
    """Write the live work of a killed daemon straight into the embedded store file."""
    now = time.time() - 3600
    per_group = tasks // GROUPS
    docs: dict[str, list[dict[str, Any]]] = {"task_groups": [], "tasks": [], "application_containers": []}
    processing = 0
    for _ in range(GROUPS):
        gid = ObjectId()
        ids = [ObjectId() for _ in range(per_group)]
        docs["task_groups"].append(
            {
                "_id": gid,
                "state": 2,
                "created_at": now,
                "transitions": [transition(0, now), transition(2, now)],
                "username": USERNAME,
                "task_ids": ids,
                "tasks_count": per_group,
            }
        )
        for tid in ids:
            state = 2 if processing < containers else 1
            docs["tasks"].append(
                {
                    "_id": tid,
                    "state": state,
                    "created_at": now,
                    "transitions": [transition(0, now), transition(state, now)],
                    "username": USERNAME,
                    "trials": 0,
                    "task_group_id": [gid],
                    "application_container_description": {"image": "ccserver-test/app-noinput:1", "container_ram": 64},
                    "input_files": [],
                    "result_files": [],
                }
            )
            if state == 2:
                processing += 1
                docs["application_containers"].append(
                    {
                        "_id": ObjectId(),
                        "state": 2,
                        "created_at": now,
                        "transitions": [transition(0, now), transition(1, now), transition(2, now)],
                        "username": USERNAME,
                        "task_id": [tid],
                        "data_container_ids": [],
                        "callbacks": [],
                        "callback_key": "k" * 48,
                        "cluster_node": "none",
                        "container_ram": 64,
                    }
                )
    conn = sqlite3.connect(str(path), isolation_level=None, timeout=30)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(SCHEMA)
        conn.execute("BEGIN IMMEDIATE")
        for collection, items in docs.items():
            rows = [(d["_id"], _id_key(d["_id"]), _encode(d), _keys(collection, d)) for d in items]
            _insert(collection, rows, conn)
        conn.execute("COMMIT")
    finally:
        conn.close()


def get(url: str, auth: str | None = None, timeout: float = 5.0) -> tuple[int, Any]:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("authorization", auth)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


def until(check: Any, deadline: float, interval: float = 0.01) -> float | None:
    """Seconds since ``start`` when ``check()`` first held, None at the deadline."""
    while time.monotonic() < deadline:
        try:
            if check():
                return time.monotonic()
        except OSError:
            pass
        time.sleep(interval)
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000, help="live tasks in the store")
    parser.add_argument("--containers", type=int, default=1_000, help="live application containers among them")
    args = parser.parse_args()
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; CPUs {os.cpu_count()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="ccserver-bench-restart-") as name:
        tmp = Path(name)
        (tmp / "home").mkdir()
        env = env_for(tmp / "home")
        port = free_port()
        config = write_config(tmp, port)
        admin = str(Path(sys.executable).with_name("ccserver-admin"))
        done = subprocess.run(
            [admin, "--config", str(config), "create-user", USERNAME, "--password-stdin"],
            input=PASSWORD + "\n",
            text=True,
            env=env,
            timeout=60,
            capture_output=True,
        )
        if done.returncode != 0:
            print(f"ccserver-admin failed: {done.stdout}{done.stderr}", file=sys.stderr)
            return 2
        began = time.monotonic()
        fill(tmp / "data" / "ccserver.sqlite3", args.tasks, args.containers)
        size = (tmp / "data" / "ccserver.sqlite3").stat().st_size / 1e6
        print(
            f"store written: {args.tasks:,} live tasks, {args.containers:,} live containers "
            f"in {time.monotonic() - began:.1f} s ({size:.1f} MB)",
            flush=True,
        )

        base = f"http://127.0.0.1:{port}"
        auth = "Basic " + base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
        daemon = Daemon(["--config", str(config)], env=env, cwd=str(tmp))
        start = time.monotonic()
        with daemon:
            deadline = start + 60
            root = until(lambda: get(base + "/", timeout=1)[0] == 200, deadline)
            nodes = until(lambda: get(base + "/nodes", auth, timeout=5)[0] == 200, deadline)
            recovered = until(lambda: "start-up recovery:" in daemon.output, deadline, 0.05)
            live_query = {"aggregate": [{"$match": {"state": {"$in": [0, 1, 2]}}}, {"$count": "n"}]}

            def no_live_containers() -> bool:
                request = urllib.request.Request(
                    base + "/application-containers/query", method="POST", data=json.dumps(live_query).encode()
                )
                request.add_header("authorization", auth)
                request.add_header("content-type", "application/json")
                with urllib.request.urlopen(request, timeout=10) as answer:
                    found = json.loads(answer.read())["application_containers"]
                return not found or found[0]["n"] == 0

            failed = until(no_live_containers, start + 180, 0.25)
            code = daemon.stop(timeout=60)
            output = daemon.output
        figures = {
            "GET / answers": root,
            "GET /nodes answers": nodes,
            "start-up recovery ran": recovered,
            "live containers failed": failed,
        }
        for what, when in figures.items():
            print(f"  {what}: " + (f"{when - start:.2f} s after start" if when else "NOT WITHIN THE LIMIT"))
        match = re.search(r"start-up recovery: (.*)", output)
        print(f"  recovery: {match.group(1) if match else '?'}")
        broken = code != 0 or "Traceback" in output or None in (root, nodes)
        if broken:
            print(f"the run broke (exit {code}):\n{output[-4000:]}", file=sys.stderr)
            return 2
        ok = root is not None and nodes is not None and max(root, nodes) - start < TARGET_SECONDS
        print(
            f"{'PASS' if ok else 'FAIL'}  the API answers within {TARGET_SECONDS:.0f} s of the start "
            f"(GET / {root - start:.2f} s, GET /nodes {nodes - start:.2f} s)"
        )
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
