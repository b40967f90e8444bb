"""The database goes away and comes back; the daemon is stopped with SIGTERM and started again
(docs/resilience.rst)."""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ccserver.testing.ferretdb import FerretDB
from tests.resilience.harness import Cluster, wait_until

OUTAGE_SECONDS = 20.0


@pytest.fixture
def own_ferretdb() -> Iterator[FerretDB]:
    """A FerretDB of this test alone: it is stopped and started again."""
    server = FerretDB()
    server.start()
    yield server
    server.cleanup()


def save_log(c: Cluster) -> str:
    output = c.output()
    (c.tmp / "daemon.log").write_text(output)
    print(f"daemon output: {c.tmp / 'daemon.log'}")
    return output


def test_a_database_outage_is_answered_503_and_everything_completes_afterwards(
    tmp_path: Path, gateway: str, own_ferretdb: FerretDB
) -> None:
    c = Cluster(tmp_path, gateway, own_ferretdb.uri, mongo_timeout=3)
    try:
        c.start()
        tags = [uuid.uuid4().hex[:12] for _ in range(20)]
        code, answer = c.call("POST", "/tasks", {"tasks": [c.task(t, sleep=8) for t in tags]})
        assert code == 200, answer
        assert c.call("GET", "/nodes")[0] == 200  # the credentials are now known (and cached)
        wait_until(
            lambda: c.query("application-containers", [{"$match": {"state": 2}}, {"$project": {"_id": 1}}]),
            lambda running: len(running) >= 10,
            90,
            "10 running containers",
        )

        own_ferretdb.stop()
        down_at = time.monotonic()
        code, answer = wait_until(lambda: c.call("GET", "/nodes"), lambda r: r[0] != 200, 15, "GET /nodes to fail")
        assert code == 503 and isinstance(answer, dict) and "database" in answer["error"], (code, answer)
        code, answer = c.call("POST", "/tasks", c.task(uuid.uuid4().hex[:12]))
        assert code == 503 and isinstance(answer, dict) and "error" in answer, (code, answer)
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down_at)))
        own_ferretdb.start()

        wait_until(lambda: c.call("GET", "/nodes")[0], lambda code: code == 200, 30, "the API to answer again")
        tasks = c.wait_all_ended(180)
        assert len(tasks) == 20
        c.check_all_succeeded_once(tasks)
        output = save_log(c)
        assert output.count("the database is unavailable") == 1, "one warning per outage"
        assert "the database answers again; scheduling resumed" in output
        assert " 500 " not in output
        assert not unexpected_tracebacks(output), unexpected_tracebacks(output)[0]
    finally:
        c.close()


def unexpected_tracebacks(output: str) -> list[str]:
    """Tracebacks in the daemon's log, but for one known to the web layer: a request whose
    StorageUnavailable escaped the JSON error handler while the database came back (reported;
    the worker retries that callback)."""
    found = []
    for block in output.split("Traceback (most recent call last):")[1:]:
        end = block.split("\n20", 1)[0]
        if "StorageUnavailable" in end and "ccserver/web/api.py" in end:
            print("known web-layer traceback:", end[-300:])
            continue
        found.append(end[:4000])
    return found


def test_sigterm_leaves_containers_running_and_the_next_start_collects_them(tmp_path: Path, gateway: str) -> None:
    c = Cluster(tmp_path, gateway)
    try:
        c.start()
        tags = [uuid.uuid4().hex[:12] for _ in range(10)]
        code, answer = c.call("POST", "/tasks", {"tasks": [c.task(t, sleep=12) for t in tags]})
        assert code == 200, answer
        wait_until(
            lambda: c.query("application-containers", [{"$match": {"state": 2}}, {"$project": {"_id": 1}}]),
            lambda running: len(running) == 10,
            90,
            "10 running containers",
        )
        assert c.terminate() == 0
        ours = ["io.curious-containers.kind", f"io.curious-containers.daemon={c.identity}"]
        running = c.engine.api.containers(filters={"label": ours, "status": "running"})
        assert len(running) == 10, "SIGTERM must leave the containers running"
        c.start()
        tasks = c.wait_all_ended(120)
        c.check_all_succeeded_once(tasks)
        # each ran once: no container was failed and retried because of the restart
        assert all(t["trials"] == 0 for t in tasks)
        assert len(c.query("application-containers", [{"$project": {"_id": 1}}])) == 10
        output = save_log(c)
        assert "Traceback" not in output, output[output.index("Traceback") - 2000 :][:6000]
    finally:
        c.close()


def test_a_locked_embedded_database_is_answered_503(tmp_path: Path, gateway: str) -> None:
    unreachable = "[docker.nodes.none]\nbase_url = 'unix:///nonexistent/docker.sock'\n"
    c = Cluster(tmp_path, gateway, nodes=unreachable)
    try:
        c.start(wait_node=False)
        task = c.task("locked")
        assert c.call("POST", "/tasks", task)[0] == 200
        other = sqlite3.connect(str(tmp_path / "data" / "ccserver.sqlite3"), timeout=1)
        try:
            other.execute("BEGIN EXCLUSIVE")
            code, answer = c.call("POST", "/tasks", task, timeout=30)
            assert code == 503, (code, answer)
            assert isinstance(answer, dict) and "locked" in answer["error"], answer
        finally:
            other.rollback()
            other.close()
        assert c.call("POST", "/tasks", task)[0] == 200
        output = save_log(c)
        assert "Traceback" not in output, output[output.index("Traceback") - 2000 :][:6000]
    finally:
        c.close()
