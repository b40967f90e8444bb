"""Starting and stopping the real daemon when its parts misbehave (issue 9, faults 2 and 3).

Fault 3: a store that cannot open left a zombie daemon (the store's start Deferred was
dropped, every request got 503); it must exit 1 with one line naming the cause.  Fault 2:
with image pulls hanging on a registry that never answers, SIGTERM did not stop the daemon
(thread pools were joined without a bound); it must exit 0 within shutdown_timeout_seconds
+ 5 s, whatever the engine does."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path

import docker

from ccserver.testing.daemon import Daemon, daemon_env
from tests import hanging_registry
from tests.hanging_registry import HangingRegistry

REPO = Path(__file__).resolve().parent.parent
LOOPBACK = "tcp:0:interface=127.0.0.1"
registry = hanging_registry.registry  # the fixture


def test_a_store_that_cannot_open_exits_1_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    # a directory where the database file should be: SQLite cannot open it
    (tmp_path / "db-is-a-directory").mkdir()
    config.write_text(f"[embedded]\npath = '{tmp_path / 'db-is-a-directory'}'\n")
    with Daemon(["--config", str(config), "--listen", LOOPBACK], env=daemon_env(tmp_path, REPO)) as d:
        assert d.process is not None
        code = d.process.wait(30)
        # the reader thread may still be collecting the last lines
        d.wait_for("cannot start", timeout=5)
        output = d.output
    assert code == 1, output
    failures = [line for line in output.splitlines() if "cannot start" in line]
    assert len(failures) == 1, output
    assert "store" in failures[0] and "db-is-a-directory" in failures[0], failures[0]
    assert "Unhandled error" not in output and "Traceback" not in output, output
    assert "listening on" not in output  # nothing was served by a daemon without its store


def test_sigterm_with_hanging_pulls_exits_within_the_bound(tmp_path: Path, registry: HangingRegistry) -> None:
    docker.from_env(timeout=10).ping()  # the real engine pulls from the hanging registry
    shutdown_timeout = 3
    config = tmp_path / "config.toml"
    config.write_text(
        "[server]\n"
        f"shutdown_timeout_seconds = {shutdown_timeout}\n"
        "scheduling_interval_seconds = 1\n"
        "[docker]\n"
        "pull_policy = 'if-not-present'\n"
        "[docker.nodes.local]\n"
        "base_url = 'unix:///var/run/docker.sock'\n"
    )
    env = daemon_env(tmp_path, REPO)
    admin = str(Path(__import__("sys").executable).with_name("ccserver-admin"))
    subprocess.run(
        [admin, "--config", str(config), "create-user", "alice", "--password-stdin"],
        input="alice-pw-1\n",
        text=True,
        env=env,
        check=True,
        timeout=60,
        capture_output=True,
    )
    with Daemon(["--config", str(config), "--listen", LOOPBACK], env=env) as d:
        url = d.url()
        image = f"127.0.0.1:{registry.port}/hang/app-{time.monotonic_ns()}:1"
        task = {
            "application_container_description": {"image": image, "container_ram": 64},
            "input_files": [],
            "result_files": [],
        }
        request = urllib.request.Request(
            url + "/tasks",
            data=json.dumps({"tasks": [task] * 4}).encode(),
            method="POST",
            headers={
                "content-type": "application/json",
                "authorization": "Basic " + __import__("base64").b64encode(b"alice:alice-pw-1").decode(),
            },
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status == 200
        deadline = time.monotonic() + 60
        while not any("/manifests/" in r for r in registry.requests):
            assert time.monotonic() < deadline, f"no pull reached the registry: {registry.requests}\n{d.output}"
            time.sleep(0.2)
        time.sleep(1)  # the pulls are hanging now, in the daemon's Docker threads
        started = time.monotonic()
        code = d.stop(timeout=shutdown_timeout + 20)
        took = time.monotonic() - started
    assert code == 0, d.output
    assert took < shutdown_timeout + 5, f"exit took {took:.1f} s\n{d.output}"
