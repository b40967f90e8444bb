"""The dashboard renews its token a minute before it expires, by itself, and goes on working
with the new one (a real daemon, Debian's chromium; no Docker needed: its one node is absent)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from ccserver.testing.daemon import Daemon, daemon_env
from tests.security.test_browser import CHROMIUM, _create_user, _needed

REPO = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("renewal.js")
USER, PASSWORD = "alice", "alice's browser pw 1"
#: the page renews 60 s before the end: 6 s after logging in
VALID_SECONDS = 66
STEP_SECONDS = 40


def test_the_token_is_renewed_before_it_expires(tmp_path: Path) -> None:
    node, _ = _needed()
    config = tmp_path / "config.toml"
    config.write_text(
        "[docker]\napi_timeout = 2\n"
        f"[docker.nodes.absent]\nbase_url = {json.dumps('unix://' + str(tmp_path / 'no-docker.sock'))}\n"
        f"[defaults.authorization]\ntokens_valid_for_seconds = {VALID_SECONDS}\n"
    )
    env = daemon_env(tmp_path, REPO)
    _create_user(config, env)
    with Daemon(["--config", str(config), "--listen", "tcp:0:interface=127.0.0.1"], env=env, cwd=str(tmp_path)) as d:
        scenario = tmp_path / "scenario.json"
        scenario.write_text(
            json.dumps({"api": d.url(), "user": USER, "password": PASSWORD, "step_ms": STEP_SECONDS * 1000})
        )
        started = time.time()
        done = subprocess.run(
            [node, str(DRIVER), str(scenario)],
            env={**os.environ, "CCSERVER_CHROMIUM": CHROMIUM, "HOME": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=5 * STEP_SECONDS,
        )
        lines = done.stdout.strip().splitlines()
        assert lines, done.stderr[-2000:]
        seen = json.loads(lines[-1])
        report = json.dumps(seen, indent=1)
        assert seen["errors"] == [] and seen["page_errors"] == [] and seen["console_errors"] == [], report
        first, second = seen["first"], seen["second"]
        assert first["user"] == second["user"] == USER, report
        assert first["token"] != second["token"], report
        # renewed well before the first one expired, and the new one lasts its full time
        assert time.time() < first["expires"], report
        assert second["expires"] > first["expires"] and second["expires"] <= started + 2 * VALID_SECONDS, report
        assert seen["after_renewal"].startswith("updated"), report
        assert d.stop() == 0
    assert "Traceback" not in d.output, d.output
