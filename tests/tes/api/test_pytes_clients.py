"""The real py-tes clients from PyPI, each in a virtualenv of its own made from a hash-pinned
lock file (``requirements/py-tes-1.1.txt``, ``requirements/py-tes-0.4.txt``): 1.1.x finds
``/ga4gh/tes/v1``, 0.4.x (the Snakemake and Toil plugins' pin) uses ``/v1``.  A script in that
virtualenv creates tasks, reads them in each view, pages, filters and cancels, and prints
what the client parsed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from bson import ObjectId
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue

from tests.api.conftest import ALICE, Server
from tests.tes.api.conftest import TES, sample_tes_task

SCRIPT = Path(__file__).with_name("pytes_script.py")
SCRIPT_SECONDS = 120.0


async def _finished_task(server: Server) -> str:
    answer = await server.post(TES + "/tasks", sample_tes_task(name="done"))
    task_id = str(answer.json["id"])
    log = {
        "start_time": "2026-12-02T01:00:00.000+00:00",
        "end_time": "2026-12-02T01:00:05.000+00:00",
        "metadata": {"node": "node1"},
        "logs": [
            {
                "start_time": "2026-12-02T01:00:01.000+00:00",
                "end_time": "2026-12-02T01:00:04.000+00:00",
                "stdout": "hello\n",
                "stderr": "",
                "exit_code": 0,
            }
        ],
        "outputs": [{"url": "https://example.org/b.txt", "path": "/data/b.txt", "size_bytes": "6"}],
        "system_logs": ["staged in 0.1 s"],
    }
    await server.store.update_one(
        "tes_tasks", {"_id": ObjectId(task_id)}, {"$set": {"state": "COMPLETE"}, "$push": {"logs": log}}
    )
    return task_id


async def _run(python: Path, server: Server, done_id: str, password: str = ALICE[1], token: str = "-") -> Any:
    d = getProcessOutputAndValue(
        str(python), [str(SCRIPT), server.url, ALICE[0], password, token, done_id], env={"PATH": "/usr/bin:/bin"}
    )
    d.addTimeout(SCRIPT_SECONDS, reactor)
    out, err, code = await d
    assert code == 0, err.decode()[-3000:]
    return json.loads(out)


def _check_common(result: dict[str, Any], done_id: str) -> None:
    created = result["created"]
    assert len(created) == 5 and len(set(created)) == 5
    assert result["views"]["MINIMAL"] == {"id": created[0], "state": "QUEUED"}
    basic, full = result["views"]["BASIC"], result["views"]["FULL"]
    assert "content" not in basic["inputs"][0]
    assert full["inputs"][0]["content"] == "some content"
    assert full["executors"][0]["env"] == {"DB_PASSWORD": "**********"}
    assert full["tags"] == {"client": "py-tes"}
    done = result["done"]
    assert done["MINIMAL"] == {"id": done_id, "state": "COMPLETE"}
    assert done["FULL"]["logs"][0]["logs"][0]["exit_code"] == 0
    assert done["FULL"]["logs"][0]["logs"][0]["stdout"] == "hello\n"
    assert "stdout" not in done["BASIC"]["logs"][0]["logs"][0]
    assert int(done["FULL"]["logs"][0]["outputs"][0]["size_bytes"]) == 6
    pages = result["pages"]
    assert [len(p) for p in pages] == [2, 2, 2]
    assert [i for p in pages for i in p] == created[::-1] + [done_id]
    assert sorted(result["filtered"]) == sorted(created)
    assert result["canceled"] == {"id": created[0], "state": "CANCELED"}
    assert result["unknown"] == 404


@pytest_twisted.ensureDeferred
async def test_py_tes_1_1_drives_the_tes_1_1_routes(tes_server: Server, py_tes_1_1: Path) -> None:
    done_id = await _finished_task(tes_server)
    result = await _run(py_tes_1_1, tes_server, done_id)
    assert result["version"].startswith("1.1")
    info = result["service_info"]
    assert info["type"] == {"group": "org.ga4gh", "artifact": "tes", "version": "1.1.0"}
    assert "content" in info["storage"]
    _check_common(result, done_id)
    # the tasks went through /ga4gh/tes/v1, in one try each: no duplicates
    assert await tes_server.store.count("tes_tasks", {}) == 6


@pytest_twisted.ensureDeferred
async def test_py_tes_1_1_with_a_bearer_token(tes_server: Server, py_tes_1_1: Path) -> None:
    done_id = await _finished_task(tes_server)
    token = (await tes_server.get("/token")).json["token"]
    result = await _run(py_tes_1_1, tes_server, done_id, password="-", token=token)
    _check_common(result, done_id)


@pytest_twisted.ensureDeferred
async def test_py_tes_0_4_drives_the_legacy_routes(tes_server: Server, py_tes_0_4: Path) -> None:
    done_id = await _finished_task(tes_server)
    result = await _run(py_tes_0_4, tes_server, done_id)
    assert result["version"].startswith("0.4") and result["legacy"] is True
    assert set(result["service_info"]) == {"name", "doc", "storage"}
    _check_common(result, done_id)
    full = result["views"]["FULL"]
    assert "ignore_error" not in full["executors"][0]


@pytest.mark.parametrize("version", ["1.1", "0.4"])
def test_the_client_locks_pin_every_package_with_hashes(version: str) -> None:
    lock = Path(__file__).resolve().parents[3] / "requirements" / f"py-tes-{version}.txt"
    pins = [line for line in lock.read_text().splitlines() if "==" in line and not line.startswith("#")]
    assert any(line.startswith(f"py-tes=={version}.") for line in pins)
    text = lock.read_text()
    assert text.count("--hash=sha256:") >= len(pins)
