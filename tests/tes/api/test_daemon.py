"""The TES routes of a real ``twistd -n ccserver`` (the service tree's wiring, the embedded
store, the request pool), driven by the real py-tes clients without credentials through
``[tes] anonymous_user``."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from ccserver.testing.daemon import UNREACHABLE_NODE, Daemon, daemon_env

REPO = Path(__file__).resolve().parents[3]
SCRIPT = Path(__file__).with_name("pytes_script.py")


def _client(python: Path, url: str) -> dict:
    done = subprocess.run(
        [str(python), str(SCRIPT), url, "workflows", "-", "-", "-"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def _check(result: dict) -> None:
    created = result["created"]
    assert len(set(created)) == 5
    assert result["views"]["MINIMAL"] == {"id": created[0], "state": "QUEUED"}
    assert result["views"]["FULL"]["inputs"][0]["content"] == "some content"
    assert result["views"]["FULL"]["executors"][0]["env"] == {"DB_PASSWORD": "**********"}
    assert [len(p) for p in result["pages"]][:3] == [2, 2, 1] or len(result["pages"]) > 3
    assert result["canceled"] == {"id": created[0], "state": "CANCELED"}
    assert result["unknown"] == 404


def test_py_tes_against_a_real_daemon_with_an_anonymous_user(
    tmp_path: Path, py_tes_1_1: Path, py_tes_0_4: Path
) -> None:
    config = tmp_path / "ccserver.toml"
    # no reachable node: the tasks stay QUEUED (the runner would start them on a real engine)
    config.write_text(
        '[server]\nlisten = ["tcp:0:interface=127.0.0.1"]\n\n[tes]\nanonymous_user = "workflows"\n\n' + UNREACHABLE_NODE
    )
    env = daemon_env(tmp_path, REPO)
    with Daemon(["--config", str(config)], env=env, cwd=str(tmp_path)) as daemon:
        url = daemon.url()
        current = _client(py_tes_1_1, url)
        assert current["service_info"]["type"]["artifact"] == "tes"
        _check(current)
        legacy = _client(py_tes_0_4, url)
        assert set(legacy["service_info"]) == {"name", "doc", "storage"}
        _check(legacy)
        # the legacy client's tasks and the 1.1 client's are the same tasks
        assert set(current["created"]) <= {i for page in legacy["pages"] for i in page}
        daemon.wait_for(r"POST /ga4gh/tes/v1/tasks 200 user=workflows")
        daemon.wait_for(r"POST /v1/tasks 200 user=workflows")
        assert "Traceback" not in daemon.output
