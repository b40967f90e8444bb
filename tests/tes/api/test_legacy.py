"""The legacy dialect under ``<prefix>/v1`` (TES 1.0, as py-tes 0.4 parses it): the same
tasks, only TES 1.0 fields, eight states, nothing null or empty, ``exit_code`` even when 0."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from bson import ObjectId

from ccserver.tes import states, views
from tests.api.conftest import Server
from tests.tes.api.conftest import LEGACY, TES, sample_tes_task

ONLY_1_1 = {"streamable", "path_prefix", "ignore_error", "backend_parameters", "backend_parameters_strict"}


def _keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _keys(v)}
    return set()


def _empties(value: Any, path: str = "") -> list[str]:
    if isinstance(value, dict):
        found = [f"{path}.{k}" for k, v in value.items() if v is None or v == "" or v == [] or v == {}]
        return found + [p for k, v in value.items() for p in _empties(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _empties(v, f"{path}[{i}]")]
    return []


@pytest_twisted.ensureDeferred
async def test_legacy_tasks_have_only_tes_1_0_fields_and_no_empty_values(tes_server: Server) -> None:
    task = sample_tes_task(
        description="",
        volumes=[],
        inputs=[{"path": "/in/a", "url": "https://h/a", "streamable": True}],
        outputs=[{"path": "/out/*.txt", "path_prefix": "/out/", "url": "https://h/o/"}],
        resources={"ram_gb": 2, "backend_parameters": {}, "backend_parameters_strict": False},
    )
    answer = await tes_server.post(LEGACY + "/tasks", task)
    assert answer.status == 200
    task_id = answer.json["id"]
    log = {
        "start_time": "2026-12-02T01:00:00.000+00:00",
        "end_time": None,
        "metadata": {"node": "node1"},
        "logs": [{"start_time": "2026-12-02T01:00:01.000+00:00", "stdout": "", "stderr": "", "exit_code": 0}],
        "outputs": [],
        "system_logs": [],
    }
    await tes_server.store.update_one(
        "tes_tasks", {"_id": ObjectId(task_id)}, {"$set": {"state": "PREEMPTED"}, "$push": {"logs": log}}
    )
    full = (await tes_server.get(f"{LEGACY}/tasks/{task_id}?view=FULL")).json
    assert full["state"] == "SYSTEM_ERROR"
    assert not (_keys(full) & ONLY_1_1), _keys(full) & ONLY_1_1
    assert _empties(full) == []
    assert "description" not in full and "volumes" not in full
    assert full["logs"][0]["logs"] == [{"start_time": "2026-12-02T01:00:01.000+00:00", "exit_code": 0}]
    assert full["resources"] == {"ram_gb": 2}
    # the same task in TES 1.1 keeps its 1.1 fields
    current = (await tes_server.get(f"{TES}/tasks/{task_id}?view=FULL")).json
    assert current["state"] == "PREEMPTED" and current["inputs"][0]["streamable"] is True
    assert current["outputs"][0]["path_prefix"] == "/out/"
    listed = (await tes_server.get(f"{LEGACY}/tasks?view=FULL")).json
    assert listed["tasks"] == [full]


@pytest.mark.parametrize("stored, legacy", [(s, states.legacy(s)) for s in states.ALL] + [("SOMETHING_NEW", "UNKNOWN")])
@pytest_twisted.ensureDeferred
async def test_every_state_is_one_of_the_eight_old_ones(tes_server: Server, stored: str, legacy: str) -> None:
    task_id = (await tes_server.post(LEGACY + "/tasks", sample_tes_task())).json["id"]
    await tes_server.store.update_one("tes_tasks", {"_id": ObjectId(task_id)}, {"$set": {"state": stored}})
    assert legacy in states.LEGACY
    for view in views.VIEWS:
        assert (await tes_server.get(f"{LEGACY}/tasks/{task_id}?view={view}")).json["state"] == legacy


def test_the_state_mapping() -> None:
    assert states.legacy("PREEMPTED") == "SYSTEM_ERROR"
    assert states.legacy("CANCELING") == "CANCELED"
    assert states.legacy("PAUSED") == "RUNNING"
    assert [states.legacy(s) for s in states.LEGACY] == list(states.LEGACY)
    assert states.stored_for_legacy("CANCELED") == ["CANCELING", "CANCELED"]


@pytest_twisted.ensureDeferred
async def test_the_legacy_service_info_has_its_old_shape(tes_server: Server) -> None:
    answer = await tes_server.get(LEGACY + "/tasks/service-info", user=None)
    assert answer.status == 200
    assert set(answer.json) == {"name", "doc", "storage"}
    assert answer.json["storage"] == ["http", "https", "ftp", "content"]
    assert (await tes_server.get(LEGACY + "/service-info", user=None)).status == 404


@pytest_twisted.ensureDeferred
async def test_legacy_state_filter_names_old_states(tes_server: Server) -> None:
    ids = [(await tes_server.post(LEGACY + "/tasks", sample_tes_task())).json["id"] for _ in range(3)]
    for task_id, state in zip(ids, ("CANCELING", "CANCELED", "RUNNING"), strict=True):
        await tes_server.store.update_one("tes_tasks", {"_id": ObjectId(task_id)}, {"$set": {"state": state}})
    listed = (await tes_server.get(LEGACY + "/tasks?state=CANCELED")).json["tasks"]
    assert sorted(t["id"] for t in listed) == sorted(ids[:2])
    assert {t["state"] for t in listed} == {"CANCELED"}
