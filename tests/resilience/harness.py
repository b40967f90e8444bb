"""A real ``twistd -n ccserver`` on the local dockerd, killed and restarted on the same store.

Everything here is synchronous (threads and subprocesses, every wait bounded): the daemon is
a child process, the test talks to it over HTTP on the Docker bridge gateway, and a small
threaded archive receives the result files the containers upload.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import docker

from ccserver.cluster.docker_ops import DAEMON_LABEL, KIND_LABEL
from ccserver.testing.daemon import Daemon
from ccserver.testing.ferretdb import free_port

REPO = Path(__file__).resolve().parents[2]
NOINPUT_IMAGE = "ccserver-test/app-noinput:1"
APP_IMAGE = "ccserver-test/app:1"
USER = "alice"
PASSWORD = "pw-resilience-0123456789"
LIVE = [0, 1, 2]


class Archive:
    """PUT /results/NAME is stored (after ``delay`` seconds, so uploads are in flight for a
    while); anything else is a 404."""

    def __init__(self, host: str, delay: float = 0.0) -> None:
        self.results: dict[str, bytes] = {}
        self.delay = delay
        self.lock = threading.Lock()
        archive = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if archive.delay:
                    time.sleep(archive.delay)
                if not self.path.startswith("/results/"):
                    self.send_error(404)
                    return
                with archive.lock:
                    archive.results[self.path[9:]] = body
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            do_POST = do_PUT  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self) -> int:
        with self.lock:
            return len(self.results)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_until(
    get: Callable[[], Any], ok: Callable[[Any], bool], timeout: float, what: str, interval: float = 0.25
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = get()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; last value: {value!r}")
        time.sleep(interval)


class Cluster:
    """One ccserver (restartable) with its configuration, store, archive and user."""

    def __init__(
        self,
        tmp: Path,
        gateway: str,
        mongo_uri: str | None = None,
        *,
        interval: float = 2,
        mongo_timeout: float = 10,
        nodes: str | None = None,
        archive_delay: float = 0.0,
        extra: str = "",
    ) -> None:
        """``nodes``: TOML text inside ``[docker]`` (e.g. ``[docker.nodes.NAME]`` tables);
        ``extra``: TOML text appended to the configuration (e.g. a ``[tes]`` section)."""
        self.tmp = tmp
        self.gateway = gateway
        self.port = free_port(gateway)
        self.url = f"http://{gateway}:{self.port}"
        self.archive = Archive(gateway, archive_delay)
        self.engine = docker.from_env(timeout=60)
        self.daemon: Daemon | None = None
        self.runs: list[Daemon] = []
        #: the daemon's identity (the label of its containers), known once it started
        self.identity: str | None = None
        home = tmp / "home"
        home.mkdir(exist_ok=True)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "CCSERVER_CONFIG"))}
        self.env["HOME"] = str(home)
        self.env["PYTHONPATH"] = str(REPO) + os.pathsep + self.env.get("PYTHONPATH", "")
        text = (
            "[server]\n"
            f"data_dir = '{tmp / 'data'}'\n"
            f"listen = ['tcp:{self.port}:interface={gateway}']\n"
            f"scheduling_interval_seconds = {interval}\n"
            "[docker]\n"
            "pull_policy = 'never'\n"
            "thread_limit = 8\n"
            "api_timeout = 30\n"
            "heartbeat_seconds = 5\n" + (nodes or "") + "[defaults.data_container_description]\n"
            f"image = '{APP_IMAGE}'\n"
            "container_ram = 128\n"
            "[defaults.error_handling]\n"
            "max_task_trials = 3\n"
        )
        if mongo_uri:
            text += (
                f"[mongo]\nuri = '{mongo_uri}'\ndb = 'ccres_{uuid.uuid4().hex[:12]}'\n"
                f"timeout_seconds = {mongo_timeout}\n"
            )
        self.config = tmp / "config.toml"
        self.config.write_text(text + extra)
        admin = str(Path(sys.executable).with_name("ccserver-admin"))
        done = subprocess.run(
            [admin, "--config", str(self.config), "create-user", USER, "--password-stdin"],
            input=PASSWORD + "\n",
            text=True,
            env=self.env,
            timeout=60,
            capture_output=True,
        )
        assert done.returncode == 0, done.stdout + done.stderr

    # --- the daemon ---------------------------------------------------------------------

    def start(self, wait_node: bool = True) -> Daemon:
        self.daemon = Daemon(["--config", str(self.config)], env=self.env, cwd=str(self.tmp)).start()
        self.runs.append(self.daemon)
        self.identity = self.daemon.wait_for(r"daemon identity ([0-9a-f]+)", timeout=60).group(1)
        self.daemon.wait_for("containers will call back at", timeout=60)
        if wait_node:
            self.daemon.wait_for(r"node \S+: \d+ MB", timeout=60)
        return self.daemon

    def kill(self) -> None:
        assert self.daemon and self.daemon.process
        self.daemon.process.send_signal(signal.SIGKILL)
        self.daemon.process.wait(30)

    def terminate(self) -> int:
        assert self.daemon
        return self.daemon.stop(signal.SIGTERM, timeout=60)

    def output(self) -> str:
        return "\n\n=== restart ===\n\n".join(run.output for run in self.runs)

    def close(self) -> None:
        for run in self.runs:
            if run.process and run.process.poll() is None:
                run.process.kill()
                run.process.wait(30)
        for name in self.our_containers():
            try:
                self.engine.api.remove_container(name, force=True)
            except docker.errors.NotFound:
                pass
        self.archive.close()
        self.engine.close()

    # --- HTTP ---------------------------------------------------------------------------

    def call(self, method: str, path: str, body: Any = None, timeout: float = 30) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("authorization", "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode())
        if data is not None:
            request.add_header("content-type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                return answer.status, json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw)
            except ValueError:
                return e.code, raw.decode("utf-8", "replace")

    def query(self, collection: str, pipeline: list[Any], attempts: int = 3) -> list[dict[str, Any]]:
        """The documents a query answers; a 503 (a slow database on a busy machine) is tried again."""
        for attempt in range(attempts):
            code, answer = self.call("POST", f"/{collection}/query", {"aggregate": pipeline})
            if code != 503:
                break
            time.sleep(1 + attempt)
        assert code == 200, (code, answer)
        return answer[collection.replace("-", "_")]

    def task(self, tag: str, sleep: float = 0, ram: int = 96) -> dict[str, Any]:
        params = ["--sleep", str(sleep)] if sleep else []
        return {
            "application_container_description": {"image": NOINPUT_IMAGE, "container_ram": ram, "parameters": params},
            "input_files": [],
            "result_files": [
                {
                    "local_result_file": "parameters",
                    "connector_type": "http",
                    "connector_access": {"url": f"{self.archive.url}/results/{tag}", "method": "PUT"},
                }
            ],
        }

    def our_containers(self) -> list[str]:
        """This daemon's containers (another daemon on the same engine has its own)."""
        if self.identity is None:
            return []
        labels = [KIND_LABEL, f"{DAEMON_LABEL}={self.identity}"]
        found = self.engine.api.containers(all=True, filters={"label": labels})
        return [c["Names"][0].lstrip("/") for c in found]

    # --- the end of a run -------------------------------------------------------------------

    def wait_all_ended(self, timeout: float) -> list[dict[str, Any]]:
        wait_until(
            lambda: self.query("tasks", [{"$match": {"state": {"$in": LIVE}}}, {"$project": {"_id": 1}}]),
            lambda live: not live,
            timeout,
            "every task to end",
            interval=1.0,
        )
        return self.query("tasks", [{"$project": {"state": 1, "trials": 1, "task_group_id": 1, "result_files": 1}}])

    def check_all_succeeded_once(self, tasks: list[dict[str, Any]]) -> None:
        """Every task succeeded, with exactly one successful application container, its
        result arrived, its group is complete and ended; no container is left behind."""
        failed = [t for t in tasks if t["state"] != 3]
        assert not failed, failed[:3]
        apps = self.query("application-containers", [{"$project": {"task_id": 1, "state": 1}}])
        successes: dict[str, int] = {}
        for app in apps:
            if app["state"] == 3:
                successes[app["task_id"][0]] = successes.get(app["task_id"][0], 0) + 1
        assert all(successes.get(t["_id"]) == 1 for t in tasks), {
            t["_id"]: successes.get(t["_id"]) for t in tasks if successes.get(t["_id"]) != 1
        }
        assert not any(a["state"] in LIVE for a in apps)
        tags = {t["result_files"][0]["connector_access"]["url"].rsplit("/", 1)[1] for t in tasks}
        with self.archive.lock:
            missing = tags - set(self.archive.results)
        assert not missing, sorted(missing)[:5]
        groups = wait_until(
            lambda: self.query("task-groups", [{"$project": {"state": 1, "tasks_count": 1, "task_ids": 1}}]),
            lambda gs: all(g["state"] == 3 for g in gs),
            30,
            "every group to succeed",
        )
        per_group: dict[str, int] = {}
        for t in tasks:
            per_group[t["task_group_id"][0]] = per_group.get(t["task_group_id"][0], 0) + 1
        for g in groups:
            assert per_group.get(g["_id"], 0) == g["tasks_count"] == len(g["task_ids"]), g
        assert set(per_group) <= {g["_id"] for g in groups}
        wait_until(self.our_containers, lambda names: not names, 60, "every container to be removed")
