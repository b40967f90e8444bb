"""POST /tasks and POST /tasks/cancel: stored documents, validation, isolation."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import pytest_twisted
from bson import ObjectId

from ccserver import states
from ccserver.config import from_dict
from ccserver.documents import MASK, mask_secrets
from tests.api.conftest import ADMIN, ALICE, BOB, Server, sample_task


@pytest_twisted.ensureDeferred
async def test_one_task_makes_one_group_and_one_task(api_server: Server) -> None:
    before = time.time()
    answer = await api_server.post("/tasks", sample_task())
    assert answer.status == 200
    assert set(answer.json) == {"_id"}
    task_id = ObjectId(answer.json["_id"])
    task = await api_server.store.find_one("tasks", {"_id": task_id})
    assert task is not None
    assert task["username"] == "alice"
    assert task["state"] == states.WAITING
    assert task["trials"] == 0
    assert [t["state"] for t in task["transitions"]] == [states.CREATED, states.WAITING]
    assert task["created_at"] == task["transitions"][0]["timestamp"]
    assert before <= task["created_at"] <= time.time()
    # stored with its secrets masked; their values are kept apart until the task ends
    submitted = sample_task()
    assert task["application_container_description"] == mask_secrets(submitted["application_container_description"])
    assert task["application_container_description"]["registry_auth"]["password"] == MASK
    assert task["input_files"] == submitted["input_files"]
    kept = await api_server.store.find_one("secrets", {"_id": task_id})
    assert kept is not None
    assert kept["fields"]["application_container_description"] == submitted["application_container_description"]
    (group_id,) = task["task_group_id"]
    group = await api_server.store.find_one("task_groups", {"_id": group_id})
    assert group is not None
    assert group["task_ids"] == [task_id]
    assert group["tasks_count"] == 1
    assert group["username"] == "alice"
    assert group["state"] == states.WAITING
    assert [t["state"] for t in group["transitions"]] == [states.CREATED, states.WAITING]
    assert all(t["exception"] is None and t["caused_by"] is None for t in group["transitions"])
    assert api_server.scheduler.wakes == 1


@pytest_twisted.ensureDeferred
async def test_a_batch_makes_one_group(api_server: Server) -> None:
    answer = await api_server.post("/tasks", {"tasks": [sample_task(tags=[str(i)]) for i in range(5)]})
    assert answer.status == 200
    body = answer.json
    assert set(body) == {"task_group_id", "tasks"}
    ids = [ObjectId(t["_id"]) for t in body["tasks"]]
    assert len(set(ids)) == 5
    group = await api_server.store.find_one("task_groups", {"_id": ObjectId(body["task_group_id"])})
    assert group is not None and group["task_ids"] == ids and group["tasks_count"] == 5
    stored = await api_server.store.find("tasks", {"task_group_id": group["_id"]})
    assert sorted(t["tags"][0] for t in stored) == [str(i) for i in range(5)]
    assert (await api_server.store.count("task_groups", {})) == 1


@pytest_twisted.ensureDeferred
async def test_ten_thousand_tasks_fit_under_the_default_limit(api_server: Server, tmp_path: Any) -> None:
    task = sample_task()
    del task["notifications"]
    body = {"tasks": [task] * 10_000}
    size = len(json.dumps(body).encode())
    default_limit = from_dict({}, None, env={"HOME": str(tmp_path)}).server.max_body_bytes
    assert size < default_limit
    assert api_server.config.server.max_body_bytes == default_limit
    answer = await api_server.post("/tasks", body)
    assert answer.status == 200, answer.raw[:300]
    assert len(answer.json["tasks"]) == 10_000
    assert await api_server.store.count("tasks", {}) == 10_000
    group = await api_server.store.find_one("task_groups", {})
    assert group is not None and group["tasks_count"] == 10_000


INVALID_TASKS = [
    (
        {
            "tasks": [
                sample_task(),
                sample_task(),
                sample_task(),
                {**sample_task(), "application_container_description": {"image": "i", "container_ram": "x"}},
            ]
        },
        "tasks[3].application_container_description.container_ram: 'x' is not of type 'number'",
    ),
    ({**sample_task(), "unknown_field": 1}, "unknown_field"),
    ({k: v for k, v in sample_task().items() if k != "input_files"}, "'input_files' is a required property"),
    (sample_task(application_container_description={"image": "i"}), "'container_ram' is a required property"),
    (sample_task(application_container_description={"image": "i", "container_ram": 0}), "container_ram"),
    (
        sample_task(application_container_description={"image": "i", "container_ram": 1, "registry_auth": {}}),
        "registry_auth",
    ),
    (sample_task(tags="t"), "tags"),
    (sample_task(result_files=[{"connector_type": "http"}]), "result_files[0]"),
    (
        sample_task(notifications=[{"connector_access": {"url": "u", "auth": {"auth_type": "ntlm"}}}]),
        "notifications[0]",
    ),
    ({"tasks": []}, "tasks"),
    ({"tasks": {}}, "tasks"),
    ({"tasks": [sample_task()], "more": 1}, "more"),
    (sample_task(input_files=[{"connector_type": "http", "connector_access": {"$where": 1}}]), "$where"),
    (sample_task(input_files=[{"connector_type": "http", "connector_access": {"a.b": 1}}]), "a.b"),
]


@pytest.mark.parametrize(("body", "message"), INVALID_TASKS)
@pytest_twisted.ensureDeferred
async def test_invalid_tasks_are_400_naming_the_problem(api_server: Server, body: Any, message: str) -> None:
    answer = await api_server.post("/tasks", body)
    assert answer.status == 400, answer.raw
    assert message in answer.json["error"]
    assert await api_server.store.count("tasks", {}) == 0
    assert await api_server.store.count("task_groups", {}) == 0
    assert api_server.scheduler.wakes == 0


RAW_BODIES = [
    (b"", "not valid JSON"),
    (b"{", "not valid JSON"),
    (b"[]", "must be a JSON object"),
    (b"42", "must be a JSON object"),
    (b'"task"', "must be a JSON object"),
    (b"null", "must be a JSON object"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b'{"a": NaN}', "NaN"),
    (b'{"a": Infinity}', "Infinity"),
    (b'{"a": 1e999}', "out of range"),
    (b'{"a": 123456789012345678901234567890}', "64 bits"),
    (b'{"a": "\\ud800"}', "surrogate"),
    (b"[" * 100_000 + b"]" * 100_000, ""),
    (b'{"a":' * 5000 + b"1" + b"}" * 5000, ""),
]


@pytest.mark.parametrize(("raw", "message"), RAW_BODIES, ids=range(len(RAW_BODIES)))
@pytest_twisted.ensureDeferred
async def test_bodies_that_are_not_json_objects_are_400(api_server: Server, raw: bytes, message: str) -> None:
    for path in ["/tasks", "/tasks/cancel", "/tasks/query", "/nodes"]:
        answer = await api_server.request("POST", path, raw=raw, user=ADMIN)
        assert answer.status == 400, (path, answer.raw)
        assert message in answer.json["error"]


@pytest_twisted.ensureDeferred
async def test_free_form_values_are_kept_deep_and_large(api_server: Server) -> None:
    deep: Any = {"leaf": [1, 2.5, None, True, "s", {"dataset_id": "not-an-object-id"}]}
    for _ in range(20):
        deep = {"level": deep}
    task = sample_task()
    task["application_container_description"]["parameters"] = {"deep": deep, "big": 2**62, "text": "é\u20ac\U0001f600"}
    answer = await api_server.post("/tasks", task)
    assert answer.status == 200, answer.raw
    stored = await api_server.store.find_one("tasks", {"_id": ObjectId(answer.json["_id"])})
    assert stored is not None
    parameters = task["application_container_description"]["parameters"]
    assert stored["application_container_description"]["parameters"] == parameters
    too_deep: Any = 1
    for _ in range(80):
        too_deep = {"d": too_deep}
    task["application_container_description"]["parameters"] = too_deep
    answer = await api_server.post("/tasks", task)
    assert answer.status == 400
    assert "deeper" in answer.json["error"]


async def _submit(server: Server, user: tuple[str, str], n: int) -> list[str]:
    answer = await server.post("/tasks", {"tasks": [sample_task() for _ in range(n)]}, user=user)
    assert answer.status == 200
    return [t["_id"] for t in answer.json["tasks"]]


@pytest_twisted.ensureDeferred
async def test_cancel_one_and_a_batch(api_server: Server) -> None:
    first, second, third = await _submit(api_server, ALICE, 3)
    answer = await api_server.post("/tasks/cancel", {"_id": first})
    assert (answer.status, answer.json) == (200, {"_id": first, "state": states.CANCELLED})
    answer = await api_server.post("/tasks/cancel", {"tasks": [{"_id": second}, {"_id": third}, {"_id": first}]})
    assert answer.status == 200
    assert answer.json == {"tasks": [{"_id": i, "state": states.CANCELLED} for i in (second, third, first)]}
    task = await api_server.store.find_one("tasks", {"_id": ObjectId(first)})
    assert task is not None
    # the second cancel did not add another transition to an ended task
    assert [t["state"] for t in task["transitions"]] == [states.CREATED, states.WAITING, states.CANCELLED]
    assert api_server.scheduler.wakes == 3


@pytest_twisted.ensureDeferred
async def test_cancel_never_leaves_an_end_state(api_server: Server) -> None:
    (task_id,) = await _submit(api_server, ALICE, 1)
    await api_server.store.update_one("tasks", {"_id": ObjectId(task_id)}, {"$set": {"state": states.SUCCESS}})
    answer = await api_server.post("/tasks/cancel", {"_id": task_id})
    assert answer.json == {"_id": task_id, "state": states.SUCCESS}
    task = await api_server.store.find_one("tasks", {"_id": ObjectId(task_id)})
    assert task is not None and len(task["transitions"]) == 2


@pytest_twisted.ensureDeferred
async def test_cancel_cancels_live_application_containers(api_server: Server) -> None:
    (task_id,) = await _submit(api_server, ALICE, 1)
    tid = ObjectId(task_id)
    await api_server.store.insert_many(
        "application_containers",
        [
            {"task_id": [tid], "state": states.PROCESSING, "username": "alice", "transitions": []},
            {"task_id": [tid], "state": states.FAILED, "username": "alice", "transitions": []},
            {"task_id": [ObjectId()], "state": states.PROCESSING, "username": "alice", "transitions": []},
        ],
    )
    await api_server.post("/tasks/cancel", {"_id": task_id})
    containers = await api_server.store.find("application_containers", {}, sort=[("_id", 1)])
    assert [c["state"] for c in containers] == [states.CANCELLED, states.FAILED, states.PROCESSING]
    assert [t["state"] for t in containers[0]["transitions"]] == [states.CANCELLED]


@pytest_twisted.ensureDeferred
async def test_standard_users_cancel_only_their_own_tasks(api_server: Server) -> None:
    alice_tasks = await _submit(api_server, ALICE, 2)
    (bob_task,) = await _submit(api_server, BOB, 1)
    answer = await api_server.post("/tasks/cancel", {"tasks": [{"_id": bob_task}, {"_id": alice_tasks[0]}]}, user=BOB)
    assert answer.status == 400
    assert alice_tasks[0] in answer.json["error"]
    # all or nothing: bob's own task was not cancelled either
    states_now = {str(t["_id"]): t["state"] for t in await api_server.store.find("tasks", {})}
    assert set(states_now.values()) == {states.WAITING}
    unknown = str(ObjectId())
    answer = await api_server.post("/tasks/cancel", {"_id": unknown}, user=BOB)
    assert answer.status == 400 and unknown in answer.json["error"]
    # an admin may cancel anybody's
    answer = await api_server.post("/tasks/cancel", {"tasks": [{"_id": bob_task}, {"_id": alice_tasks[1]}]}, user=ADMIN)
    assert answer.status == 200
    assert [t["state"] for t in answer.json["tasks"]] == [states.CANCELLED, states.CANCELLED]


@pytest.mark.parametrize(
    "body",
    [
        {"_id": "xyz"},
        {"_id": 5},
        {"_id": None},
        {},
        {"tasks": []},
        {"tasks": [{"_id": "0" * 23}]},
        {"tasks": [{}]},
        {"_id": "0" * 24, "x": 1},
        {"tasks": "all"},
    ],
)
@pytest_twisted.ensureDeferred
async def test_invalid_cancel_bodies_are_400(api_server: Server, body: Any) -> None:
    answer = await api_server.post("/tasks/cancel", body)
    assert answer.status == 400, answer.raw
    assert "error" in answer.json
