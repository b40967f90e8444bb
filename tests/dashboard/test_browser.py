"""The dashboard in a real headless browser against a real daemon with real Docker.

Debian's ``chromium`` driven by ``playwright-core`` (tests/dashboard/browser.js; the package
is installed by ``npm ci`` in tests/browser) logs in, sees a dead node marked dead with its
reason, the queue's plot, a running task in the table and on its page (its container's node
and its output), cancels it, sees it end, and logs out; no page error, no console error.

Screenshots of every page go to ``$CCSERVER_ARTIFACTS/screenshots`` (default
``test-artifacts/screenshots`` in the checkout, git-ignored); with
``CCSERVER_DOCS_SCREENSHOT=1`` the running task's page is also copied to docs/dashboard.png.

Missing chromium, node or playwright-core is a failure, never a skip."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

from tests.resilience.harness import PASSWORD, USER, Cluster, wait_until
from tests.security.test_browser import CHROMIUM, _needed

REPO = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("browser.js")
STEP_SECONDS = 40
DEAD_NODE = "gone"
NODES = (
    "[docker.nodes.local]\nbase_url = 'unix:///var/run/docker.sock'\n"
    f"[docker.nodes.{DEAD_NODE}]\nbase_url = 'unix:///nonexistent/ccserver-dashboard-test.sock'\n"
)


def screenshots_dir() -> Path:
    base = Path(os.environ.get("CCSERVER_ARTIFACTS") or REPO / "test-artifacts")
    path = base / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _run(node: str, scenario: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps(scenario))
    env = {**os.environ, "CCSERVER_CHROMIUM": CHROMIUM, "HOME": str(tmp_path)}
    done = subprocess.run(
        [node, str(DRIVER), str(path)], env=env, capture_output=True, text=True, timeout=9 * STEP_SECONDS
    )
    lines = done.stdout.strip().splitlines()
    assert lines, f"browser.js printed nothing (exit {done.returncode}): {done.stderr[-2000:]}"
    return dict(json.loads(lines[-1]))


def test_log_in_watch_a_running_task_cancel_it_and_see_a_dead_node(tmp_path: Path, gateway: str) -> None:
    node, _ = _needed()
    cluster = Cluster(tmp_path, gateway, nodes=NODES)
    try:
        cluster.start()
        # prints a line, then runs until it is cancelled
        code, created = cluster.call("POST", "/tasks", cluster.task("dashboard", sleep=300))
        assert code == 200, created
        task_id = created["_id"]
        wait_until(
            lambda: cluster.query("tasks", [{"$project": {"state": 1}}]),
            lambda tasks: tasks and tasks[0]["state"] == 2,
            120,
            "the task to run",
        )
        shots = screenshots_dir()
        seen = _run(
            node,
            {
                "api": cluster.url,
                "user": USER,
                "password": PASSWORD,
                "task_id": task_id,
                "dead_node": DEAD_NODE,
                "screenshots": str(shots),
                "step_ms": STEP_SECONDS * 1000,
            },
            tmp_path,
        )
        report = json.dumps(seen, indent=1)
        steps = seen["steps"]
        assert seen["errors"] == [], report
        assert steps["login_form"] is True, report
        assert steps["logged_in"] == USER, report
        assert steps["dead_node"]["healthy"] == 1 and steps["dead_node"]["reason"], report
        assert steps["queue"]["processing"] is not None and steps["queue"]["processing"].endswith("1"), report
        assert steps["tasks"]["state"] == "processing", report
        assert steps["tasks"]["processing"] == [task_id] and steps["tasks"]["succeeded"] == [], report
        running = steps["task_running"]
        assert running["node"] == "local", report
        # live, from the logs endpoint: the worker's own line on stderr (it keeps the
        # application's output to itself)
        assert "cc-worker: running the application" in running["logs"], report
        assert steps["cancelled"]["hidden"] is True and "cancelled" in steps["cancelled"]["timeline"], report
        assert steps["logged_out"] == 0, report  # nothing left in sessionStorage
        assert seen["page_errors"] == [], report
        # not even the 404 of an absent live-logs endpoint: the page asks the OpenAPI document first
        assert seen["console_errors"] == [], report
        names = {Path(p).name for p in seen["screenshots"]}
        assert {"login.png", "cluster.png", "queue.png", "tasks.png", "task-running.png", "task-cancelled.png"} <= names
        if os.environ.get("CCSERVER_DOCS_SCREENSHOT") == "1":
            shutil.copyfile(shots / "task-running.png", REPO / "docs" / "dashboard.png")

        # the cancel reached the daemon: the task ended cancelled, its container is gone
        tasks = cluster.wait_all_ended(60)
        assert [t["state"] for t in tasks] == [5]
        wait_until(cluster.our_containers, lambda names: not names, 60, "the container to be removed")
        with urllib.request.urlopen(cluster.url + "/ui/app.js", timeout=20) as answer:
            assert answer.headers["content-security-policy"].startswith("default-src 'none'")
        assert cluster.terminate() == 0
        assert "Traceback" not in cluster.output(), cluster.output()
    finally:
        cluster.close()
