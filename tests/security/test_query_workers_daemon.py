"""The query workers of a real ``twistd -n ccserver``: children of the daemon, niced, with an
address-space cap; a regex bomb is answered at the deadline; none is left after SIGTERM."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import bson
from bson import ObjectId

from ccserver.testing.daemon import Daemon
from tests.test_daemon import LOOPBACK, env_for

ADMIN = str(Path(sys.executable).with_name("ccserver-admin"))
TIMEOUT = 2.0


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def workers(pid: int) -> list[int]:
    result = []
    for child in children(pid):
        try:
            if b"ccserver.storage.query_worker" in Path(f"/proc/{child}/cmdline").read_bytes():
                result.append(child)
        except OSError:
            continue
    return result


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def post(url: str, body: object, user: tuple[str, str]) -> tuple[int, dict]:
    credentials = base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"content-type": "application/json", "authorization": "Basic " + credentials},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_query_workers_of_the_daemon(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f"[server]\nlisten = ['{LOOPBACK}']\nquery_timeout_seconds = {TIMEOUT}\nquery_cache_seconds = 0\n"
        f"[embedded]\npath = '{tmp_path}/db/ccserver.sqlite3'\nquery_workers = 2\nquery_memory_mb = 128\n"
    )
    env = env_for(tmp_path)
    created = subprocess.run(
        [ADMIN, "--config", str(cfg), "create-user", "alice", "--password-stdin"],
        input="pw-alice\n",
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert created.returncode == 0, created.stderr
    _insert_task(tmp_path / "db" / "ccserver.sqlite3", {"_id": ObjectId(), "username": "alice", "state": 0})
    with Daemon(["--config", str(cfg)], env=env, cwd=str(tmp_path)) as d:
        url = d.url()
        assert d.process is not None
        pid = d.process.pid
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(workers(pid)) < 2:
            time.sleep(0.1)
        found = workers(pid)
        assert len(found) == 2, (found, d.output)
        # set once a worker has imported its modules
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all("unlimited" not in _address_limit(w) for w in found):
            time.sleep(0.1)
        for worker in found:
            assert int(Path(f"/proc/{worker}/stat").read_text().rsplit(")", 1)[1].split()[16]) == 10
            assert "unlimited" not in _address_limit(worker), _address_limit(worker)
        began = time.monotonic()
        bomb = {"aggregate": [{"$addFields": {"t": "a" * 27 + "!"}}, {"$match": {"t": {"$regex": "^(a+)+$"}}}]}
        status, body = post(url + "/tasks/query", bomb, ("alice", "pw-alice"))
        elapsed = time.monotonic() - began
        assert status == 400 and "query_timeout_seconds" in body["error"], body
        assert elapsed <= TIMEOUT + 1.0, elapsed
        # the killed worker was replaced; the next query is answered
        status, body = post(url + "/tasks/query", {"aggregate": [{"$count": "n"}]}, ("alice", "pw-alice"))
        assert status == 200 and body == {"tasks": [{"n": 1}]}, body
        before = set(workers(pid))
        assert d.stop() == 0
        assert "Traceback" not in d.output, d.output
    assert not [w for w in before if alive(w)], "query workers outlived the daemon"


def _address_limit(pid: int) -> str:
    try:
        return next(line for line in Path(f"/proc/{pid}/limits").read_text().splitlines() if "address space" in line)
    except (OSError, StopIteration):
        return "unlimited (gone)"


def _insert_task(path: Path, doc: dict) -> None:
    """A task in the layout of ccserver.storage.embedded (document row and its username index
    row), written before the daemon starts: no scheduler gets to run it."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        rowid = conn.execute(
            "INSERT INTO documents (collection, id, data) VALUES ('tasks', ?, ?)",
            (doc["_id"].binary, bson.encode(doc)),
        ).lastrowid
        conn.execute(
            "INSERT INTO idx (collection, field, value, doc) VALUES ('tasks', 'username', ?, ?)",
            (doc["username"], rowid),
        )
    finally:
        conn.close()
