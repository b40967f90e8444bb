"""The dashboard's read endpoints on every backend: scoped to the user, keyset pages that
together hold every task once, filters, the activity plot's counts, one task's page."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from bson import ObjectId

from ccserver import states
from tests.api.conftest import ADMIN, ALICE, BOB, Server

TASK: dict[str, Any] = {
    "application_container_description": {"image": "ccserver-test/app-noinput:1", "container_ram": 64},
    "input_files": [],
    "result_files": [],
}


def _cc(username: str, created_at: float, state: int = states.WAITING, image: str = "img/a") -> dict[str, Any]:
    return {
        "_id": ObjectId(),
        "username": username,
        "state": state,
        "created_at": created_at,
        "application_container_description": {"image": image, "container_ram": 64},
        "transitions": [states.transition(state, "made by the test", created_at)],
        "trials": 0,
    }


def _tes(username: str, created_at: float, state: str = "QUEUED", image: str = "img/t") -> dict[str, Any]:
    return {
        "_id": ObjectId(),
        "username": username,
        "state": state,
        "created_at": created_at,
        "name": "tes task",
        "executors": [{"image": image, "command": ["true"]}],
        "transitions": [{"state": state, "timestamp": created_at, "description": "made by the test"}],
        "logs": [],
    }


async def _all_pages(server: Server, query: str, user: tuple[str, str], limit: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):
        path = f"/dashboard/tasks?limit={limit}" + (f"&{query}" if query else "")
        answer = await server.get(path + (f"&cursor={cursor}" if cursor else ""), user=user)
        assert answer.status == 200, answer.json
        rows += answer.json["tasks"]
        cursor = answer.json["next"]
        if cursor is None:
            return rows
    raise AssertionError("paging did not end")


@pytest_twisted.ensureDeferred
async def test_pages_hold_every_task_once_newest_first_and_only_ones_own(api_server: Server) -> None:
    store = api_server.store
    # equal created_at values on purpose (a batch shares its time): the _id breaks the tie
    cc = [_cc("alice", 1000.0 + i // 3) for i in range(25)] + [_cc("bob", 1000.5 + i) for i in range(5)]
    tes = [_tes("alice", 1000.0 + i // 2) for i in range(12)] + [_tes("bob", 1003.0)]
    await store.insert_many("tasks", cc)
    await store.insert_many("tes_tasks", tes)

    mine = await _all_pages(api_server, "", ALICE, 7)
    expected = sorted(
        [(d["created_at"], d["_id"].binary, str(d["_id"])) for d in cc + tes if d["username"] == "alice"],
        reverse=True,
    )
    assert [r["id"] for r in mine] == [e[2] for e in expected]
    assert {r["kind"] for r in mine} == {"cc", "tes"}
    assert {r["username"] for r in mine} == {"alice"}

    everything = await _all_pages(api_server, "", ADMIN, 50)
    assert len(everything) == len(cc) + len(tes)
    bobs = await _all_pages(api_server, "user=bob", ADMIN, 4)
    assert len(bobs) == 6 and {r["username"] for r in bobs} == {"bob"}

    refused = await api_server.get("/dashboard/tasks?user=alice", user=BOB)
    assert refused.status == 400 and "only admins" in refused.json["error"]


@pytest_twisted.ensureDeferred
async def test_filters_by_state_image_and_time(api_server: Server) -> None:
    store = api_server.store
    await store.insert_many(
        "tasks",
        [
            _cc("alice", 10.0, states.PROCESSING),
            _cc("alice", 20.0, states.SUCCESS, image="img/b"),
            _cc("alice", 30.0, states.FAILED),
        ],
    )
    await store.insert_many("tes_tasks", [_tes("alice", 15.0, "RUNNING"), _tes("alice", 25.0, "COMPLETE", "img/b")])

    async def ids(query: str) -> list[tuple[str, float]]:
        answer = await api_server.get("/dashboard/tasks?" + query, user=ALICE)
        assert answer.status == 200, answer.json
        return [(r["state"], r["created_at"]) for r in answer.json["tasks"]]

    assert await ids("state=processing") == [("processing", 10.0)]
    assert await ids("state=RUNNING") == [("RUNNING", 15.0)]
    assert await ids("image=img/b") == [("COMPLETE", 25.0), ("success", 20.0)]
    assert await ids("since=15&until=30") == [("COMPLETE", 25.0), ("success", 20.0), ("RUNNING", 15.0)]
    for bad, word in (
        ("state=running", "state"),
        ("since=soon", "since"),
        ("limit=0", "limit"),
        ("cursor=nope", "cursor"),
        ("colour=red", "unknown query parameter"),
    ):
        answer = await api_server.get("/dashboard/tasks?" + bad, user=ALICE)
        assert answer.status == 400, bad
        assert word in answer.json["error"], (bad, answer.json)


@pytest_twisted.ensureDeferred
async def test_one_task_with_its_containers_for_its_owner_only(api_server: Server) -> None:
    created = await api_server.post("/tasks", TASK, user=ALICE)
    assert created.status == 200, created.json
    task_id = ObjectId(created.json["_id"])
    await api_server.store.insert_one(
        "application_containers",
        {"_id": ObjectId(), "task_id": [task_id], "username": "alice", "state": states.PROCESSING,
         "cluster_node": "node1", "container_ram": 64, "callback_key": "secret-key", "transitions": []},
    )  # fmt: skip
    answer = await api_server.get(f"/dashboard/tasks/cc/{task_id}", user=ALICE)
    assert answer.status == 200, answer.json
    body = answer.json
    assert body["task"]["_id"] == str(task_id) and body["task"]["state_name"] == "waiting"
    assert [t["state_name"] for t in body["task"]["transitions"]] == ["created", "waiting"]
    assert [(c["cluster_node"], c["state_name"]) for c in body["containers"]] == [("node1", "processing")]
    assert "callback_key" not in body["containers"][0]

    assert (await api_server.get(f"/dashboard/tasks/cc/{task_id}", user=ADMIN)).status == 200
    foreign = await api_server.get(f"/dashboard/tasks/cc/{task_id}", user=BOB)
    assert foreign.status == 404 and "no such task" in foreign.json["error"]
    assert (await api_server.get(f"/dashboard/tasks/tes/{task_id}", user=ALICE)).status == 404
    secret = await api_server.post(
        "/tasks",
        {**TASK, "application_container_description": {**TASK["application_container_description"],
                                                       "registry_auth": {"username": "u", "password": "hunter2"}}},
        user=ALICE,
    )  # fmt: skip
    shown = await api_server.get(f"/dashboard/tasks/cc/{secret.json['_id']}", user=ALICE)
    assert "hunter2" not in shown.raw.decode()
    assert shown.json["task"]["application_container_description"]["registry_auth"]["password"] == "**********"
    assert (await api_server.get("/dashboard/tasks/cc/xyz", user=ALICE)).status == 400
    assert (await api_server.get(f"/dashboard/tasks/k8s/{task_id}", user=ALICE)).status == 400
    assert (await api_server.get(f"/dashboard/tasks/cc/{task_id}", user=None)).status == 401


@pytest_twisted.ensureDeferred
async def test_activity_counts_and_minutes_of_ones_own_tasks(api_server: Server) -> None:
    from twisted.internet import reactor

    now = reactor.seconds()
    minute = (now // 60) * 60
    done = _cc("alice", minute - 120 + 5, states.SUCCESS)
    done["transitions"] = [
        states.transition(states.WAITING, "waiting", minute - 120 + 5),
        states.transition(states.PROCESSING, "processing", minute - 60 + 1),
        states.transition(states.SUCCESS, "ended", minute + 1),
    ]
    await api_server.store.insert_many("tasks", [done, _cc("alice", minute + 2), _cc("bob", minute + 3)])
    await api_server.store.insert_one("tes_tasks", _tes("alice", minute + 4, "RUNNING"))
    answer = await api_server.get("/activity?minutes=3", user=ALICE)
    assert answer.status == 200, answer.json
    body = answer.json
    assert body["minutes"] == 3 and body["start"] == minute - 120
    assert body["submitted"] == [1, 0, 2]
    assert body["started"] == [0, 1, 1]  # the TES task was made RUNNING
    assert body["ended"] == [0, 0, 1]
    assert body["truncated"] is False
    counts = body["counts"]
    assert (counts["waiting"], counts["success"], counts["RUNNING"], counts["processing"]) == (1, 1, 1, 0)
    everybody = (await api_server.get("/activity?minutes=3", user=ADMIN)).json
    assert everybody["submitted"] == [1, 0, 3] and everybody["counts"]["waiting"] == 2
    for bad in ("minutes=0", "minutes=1441", "minutes=x", "hours=1"):
        assert (await api_server.get("/activity?" + bad, user=ALICE)).status == 400, bad


@pytest_twisted.ensureDeferred
async def test_a_tes_task_page(api_server: Server) -> None:
    task = _tes("alice", 50.0, "RUNNING")
    task["transitions"].append({"state": "CANCELING", "timestamp": 51.0, "description": "cancel asked"})
    task["logs"] = [{"start_time": "t0", "metadata": {"node": "node1"}, "logs": [], "system_logs": []}]
    await api_server.store.insert_one("tes_tasks", task)
    answer = await api_server.get(f"/dashboard/tasks/tes/{task['_id']}", user=ALICE)
    assert answer.status == 200, answer.json
    body = answer.json
    assert body["kind"] == "tes" and body["containers"] == []
    assert body["task"]["state_name"] == "RUNNING"
    assert [t["state_name"] for t in body["task"]["transitions"]] == ["RUNNING", "CANCELING"]
    assert body["task"]["logs"][0]["metadata"] == {"node": "node1"}
    assert (await api_server.get(f"/dashboard/tasks/tes/{task['_id']}", user=BOB)).status == 404
