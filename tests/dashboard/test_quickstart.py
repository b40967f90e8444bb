"""The README's quick start, run as written: its shell block after the ``quickstart`` marker,
against a daemon on built-in defaults (no configuration file, its own HOME, as
``scripts/run-daemon`` runs it), on the real Docker engine.

Three things differ from a newcomer's run, and only these: ``demo-image`` gets ``--from
ccserver-test/base:1`` (the image scripts/build-test-images makes; debootstrap takes minutes),
the daemon's port is a free one instead of 5000 (other daemons may run here), and
``.venv/bin/`` is the virtualenv running the tests."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from ccserver.testing.daemon import Daemon, daemon_env
from ccserver.testing.ferretdb import free_port

REPO = Path(__file__).resolve().parents[2]
MARKER = "<!-- quickstart:"


def quickstart_block() -> str:
    readme = (REPO / "README.md").read_text()
    assert MARKER in readme, "the README lost its quick start"
    after = readme.split(MARKER, 1)[1]
    match = re.search(r"```sh\n(.*?)```", after, re.S)
    assert match, "no ```sh block after the quickstart marker"
    return match.group(1)


def test_the_readme_quick_start_runs_as_written(tmp_path: Path, gateway: str) -> None:
    script = quickstart_block()
    assert "ccserver-admin demo-image\n" in script and "http://127.0.0.1:5000" in script
    port = free_port(gateway)
    venv_bin = str(Path(sys.executable).parent) + "/"
    script = (
        script.replace("ccserver-admin demo-image\n", "ccserver-admin demo-image --from ccserver-test/base:1\n")
        .replace("http://127.0.0.1:5000", f"http://127.0.0.1:{port}")
        .replace(".venv/bin/", venv_bin)
    )
    env = daemon_env(tmp_path, REPO)
    # without a configuration file the daemon adds the bridge gateway on the same port itself
    with Daemon(["--listen", f"tcp:{port}:interface=127.0.0.1"], env=env, cwd=str(tmp_path)) as daemon:
        daemon.wait_for("containers will call back at", timeout=60)
        daemon.wait_for(r"node \S+: \d+ MB", timeout=60)
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=str(REPO),
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        output = done.stdout + done.stderr
        assert done.returncode == 0, output + "\n--- daemon ---\n" + daemon.output[-4000:]
        assert "built ccserver-demo/app:1" in output, output
        assert "the task ended: success" in output, output + "\n--- daemon ---\n" + daemon.output[-4000:]
        for i in range(1, 6):
            assert f"demo: line {i} of 5" in output, output
        assert re.search(rf"watch it: http://127.0.0.1:{port}/ui/#/task/cc/[0-9a-f]{{24}}", output), output
        assert daemon.stop() == 0
    assert "Traceback" not in daemon.output, daemon.output
