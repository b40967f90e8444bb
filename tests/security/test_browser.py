"""A real headless browser against a real daemon serving a CC-UI stand-in natively.

Debian's ``chromium``, driven by ``playwright-core`` (tests/browser/run.js), opens the page
that ``[server] static_dir`` serves (tests/browser/site: it does what CC-UI does), must reach
the page's own login form without any browser dialog, log in, and show a query's result.  Then
a page on another site, in a browser that sends the user's credentials by itself, posts a
``text/plain`` form whose body is a valid JSON task: it must get a 415 and create nothing.

Missing chromium, node or ``npm ci`` in tests/browser is a failure, never a skip
(scripts/test installs them)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ccserver.testing.daemon import Daemon, daemon_env, twistd_path

REPO = Path(__file__).resolve().parents[2]
BROWSER_DIR = REPO / "tests" / "browser"
SITE = BROWSER_DIR / "site"
CHROMIUM = os.environ.get("CCSERVER_CHROMIUM", "/usr/bin/chromium")
USER, PASSWORD = "alice", "alice's browser pw 1"
ATTACK_TAG = "csrf1"
#: one browser step (page load, login, form post) may take this long on a loaded machine
STEP_SECONDS = 30
ATTACK_TASK: dict[str, Any] = {
    "tags": [ATTACK_TAG],
    "application_container_description": {"image": "ccserver-test/app", "container_ram": 64},
    "input_files": [],
    "result_files": [],
}


def _needed() -> tuple[str, str]:
    node = shutil.which("node")
    assert node, "node is missing (apt-get install nodejs; scripts/test installs it)"
    version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    assert int(version.lstrip("v").split(".")[0]) >= 20, f"playwright-core needs Node 20 or newer, not {version}"
    assert Path(CHROMIUM).is_file(), f"{CHROMIUM} is missing (apt-get install chromium; scripts/test installs it)"
    assert (BROWSER_DIR / "node_modules" / "playwright-core").is_dir(), "run: cd tests/browser && npm ci"
    return node, CHROMIUM


def _call(url: str, method: str = "GET", body: Any = None, timeout: float = 20) -> tuple[int, Any]:
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    headers = {"Authorization": f"Basic {auth}"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _config(tmp_path: Path) -> Path:
    # one Docker node that does not exist: the daemon runs, tasks stay waiting, and no
    # container is ever started on the shared engine
    config = tmp_path / "config.toml"
    config.write_text(
        f"[server]\nstatic_dir = {json.dumps(str(SITE))}\n"
        "[docker]\napi_timeout = 2\n"
        f"[docker.nodes.absent]\nbase_url = {json.dumps('unix://' + str(tmp_path / 'no-docker.sock'))}\n"
    )
    return config


def _create_user(config: Path, env: dict[str, str]) -> None:
    admin = str(Path(twistd_path()).with_name("ccserver-admin"))
    done = subprocess.run(
        [admin, "--config", str(config), "create-user", USER, "--password-stdin"],
        input=PASSWORD + "\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _run_browser(node: str, scenario: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps(scenario))
    env = {**os.environ, "CCSERVER_CHROMIUM": CHROMIUM, "HOME": str(tmp_path)}
    done = subprocess.run(
        [node, str(BROWSER_DIR / "run.js"), str(path)],
        cwd=str(BROWSER_DIR),
        env=env,
        capture_output=True,
        text=True,
        timeout=6 * STEP_SECONDS,
    )
    lines = done.stdout.strip().splitlines()
    assert lines, f"run.js printed nothing (exit {done.returncode}): {done.stderr[-2000:]}"
    return json.loads(lines[-1])


def test_cc_ui_login_query_and_cross_site_form_post(tmp_path: Path) -> None:
    node, _ = _needed()
    config = _config(tmp_path)
    env = daemon_env(tmp_path, REPO)
    _create_user(config, env)
    args = ["--config", str(config), "--listen", "tcp:0:interface=127.0.0.1"]
    with Daemon(args, env=env, cwd=str(tmp_path)) as daemon:
        site = daemon.url()
        api = site + "/cc"
        status, created = _call(api + "/tasks", "POST", {**ATTACK_TASK, "tags": ["mine"]})
        assert status == 200, created

        seen = _run_browser(
            node,
            {
                "site": site,
                "user": USER,
                "password": PASSWORD,
                "attack_task": ATTACK_TASK,
                "attack_tag": ATTACK_TAG,
                "step_ms": STEP_SECONDS * 1000,
            },
            tmp_path,
        )
        report = json.dumps(seen, indent=1)

        # CC-UI's own login form is reached: no challenge, no dialog, nothing answered for it
        assert seen["challenges"] == [], report
        assert seen["dialogs"] == [], report
        assert seen["login_form_shown"], report
        # logging in works and the query's result is shown
        assert seen["status_text"] == "logged in", report
        shown = json.loads(seen["result_text"])
        assert [(t["_id"], t["tags"]) for t in shown["tasks"]] == [(created["_id"], ["mine"])], report
        assert seen["page_errors"] == [], report
        # the one expected 401 (the first request, "Basic bnVsbA==") is the only console error
        assert seen["console_errors"] in (
            [],
            [f"Failed to load resource: the server responded with a status of 401 (Unauthorized) at {api}/token"],
        ), report

        # the cross-site form post: sent with credentials, refused with 415, nothing created
        attack = seen["attack"]
        assert attack.get("form_authorized") is True, report
        assert attack["form_request_type"].startswith("text/plain"), report
        assert attack["form_status"] == 415, report
        assert "application/json" in json.loads(attack["form_body"])["error"], report
        # the JSON fetch from there never got past the preflight (no CORS origins configured)
        assert attack.get("json_fetch", "").startswith("blocked"), report
        assert seen["errors"] == [] and seen["unanswered"] == [], report

        status, found = _call(api + "/tasks/query", "POST", {"aggregate": [{"$project": {"tags": 1}}]})
        assert status == 200, found
        assert [t["tags"] for t in found["tasks"]] == [["mine"]], found
        assert daemon.stop() == 0
    assert "Traceback" not in daemon.output, daemon.output
