"""The four query endpoints: isolation, masking, the operator deny-list, limits."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from bson import ObjectId

from ccserver import states
from tests.api.conftest import ADMIN, ALICE, BOB, Server, sample_task

QUERY_PATHS = {
    "tasks": "/tasks/query",
    "task_groups": "/task-groups/query",
    "application_containers": "/application-containers/query",
    "data_containers": "/data-containers/query",
}


async def _load(server: Server) -> dict[str, list[str]]:
    """Two tasks of alice, one of bob, and a container of each with a callback key."""
    ids: dict[str, list[str]] = {}
    for user, n in ((ALICE, 2), (BOB, 1)):
        answer = await server.post("/tasks", {"tasks": [sample_task() for _ in range(n)]}, user=user)
        ids[user[0]] = [t["_id"] for t in answer.json["tasks"]]
    for collection in ("application_containers", "data_containers"):
        await server.store.insert_many(
            collection,
            [
                {
                    "username": name,
                    "state": states.PROCESSING,
                    "callback_key": "secret-" + name,
                    "input_file_keys": ["k1"],
                    "task_id": [ObjectId(ids[name][0])],
                }
                for name in ("alice", "bob")
            ],
        )
    return ids


@pytest_twisted.ensureDeferred
async def test_standard_users_read_only_their_own_documents(api_server: Server) -> None:
    await _load(api_server)
    for collection, path in QUERY_PATHS.items():
        for user, expected in ((ALICE, {"alice"}), (BOB, {"bob"}), (ADMIN, {"alice", "bob"})):
            answer = await api_server.post(path, {"aggregate": []}, user=user)
            assert answer.status == 200, (path, answer.raw)
            assert list(answer.json) == [collection]
            assert {d["username"] for d in answer.json[collection]} == expected, (collection, user)
    # a $match on another user's name finds nothing; $group cannot reach past the user filter
    answer = await api_server.post("/tasks/query", {"aggregate": [{"$match": {"username": "alice"}}]}, user=BOB)
    assert answer.json == {"tasks": []}
    answer = await api_server.post(
        "/tasks/query", {"aggregate": [{"$group": {"_id": "$username", "n": {"$sum": 1}}}]}, user=BOB
    )
    assert answer.json == {"tasks": [{"_id": "bob", "n": 1}]}


@pytest_twisted.ensureDeferred
async def test_answers_mask_secrets_and_show_ids_as_hex(api_server: Server) -> None:
    ids = await _load(api_server)
    answer = await api_server.post("/tasks/query", {"aggregate": [{"$match": {"_id": ids["alice"][0]}}]})
    (task,) = answer.json["tasks"]
    assert task["_id"] == ids["alice"][0]
    assert isinstance(task["task_group_id"][0], str) and len(task["task_group_id"][0]) == 24
    assert task["application_container_description"]["registry_auth"] == {"username": "U", "password": "**********"}
    assert task["notifications"][0]["connector_access"]["auth"]["password"] == "**********"
    for path, collection in (
        ("/application-containers/query", "application_containers"),
        ("/data-containers/query", "data_containers"),
    ):
        (doc,) = (await api_server.post(path, {"aggregate": []})).json[collection]
        assert doc["callback_key"] == "**********"
        assert doc["input_file_keys"] == "**********"
        assert doc["task_id"] == [ids["alice"][0]]
    # secrets renamed by the pipeline are masked too, at any depth
    answer = await api_server.post(
        "/application-containers/query",
        {"aggregate": [{"$project": {"wrapped": {"inner": {"MyKey": "$callback_key"}}}}]},
    )
    assert "secret" not in answer.raw.decode()


@pytest_twisted.ensureDeferred
async def test_ids_in_match_are_converted(api_server: Server) -> None:
    ids = await _load(api_server)
    group = (await api_server.post("/task-groups/query", {"aggregate": []})).json["task_groups"][0]
    for match in (
        {"_id": ids["alice"][1]},
        {"_id": {"$in": ids["alice"][1:] + [str(ObjectId())]}},
        {"task_group_id": group["_id"], "_id": {"$ne": ids["alice"][0]}},
    ):
        answer = await api_server.post("/tasks/query", {"aggregate": [{"$match": match}]})
        assert [t["_id"] for t in answer.json["tasks"]] == [ids["alice"][1]], match
    answer = await api_server.post("/tasks/query", {"aggregate": [{"$match": {"task_group_id": "nope"}}]})
    assert answer.status == 400
    assert "aggregate[0].$match.task_group_id" in answer.json["error"] and "nope" in answer.json["error"]


@pytest_twisted.ensureDeferred
async def test_pipeline_stages_work(api_server: Server) -> None:
    await _load(api_server)
    answer = await api_server.post(
        "/tasks/query",
        {
            "aggregate": [
                {"$sort": {"created_at": -1}},
                {"$skip": 1},
                {"$limit": 1},
                {"$project": {"state": 1, "_id": 0}},
            ]
        },
    )
    assert answer.json == {"tasks": [{"state": states.WAITING}]}
    answer = await api_server.post("/tasks/query", {"aggregate": [{"$count": "n"}]}, user=ADMIN)
    assert answer.json == {"tasks": [{"n": 3}]}


DENIED = [
    [{"$match": {"$where": "sleep(1000)"}}],
    [{"$match": {"$and": [{"state": 1}, {"$where": "true"}]}}],
    [{"$match": {"$expr": {"$function": {"body": "x", "args": [], "lang": "js"}}}}],
    [{"$match": {"$or": [{"a": {"$elemMatch": {"$where": "1"}}}]}}],
    [{"$project": {"x": {"$function": {"body": "x", "args": [], "lang": "js"}}}}],
    [{"$addFields": {"x": {"$cond": [True, {"$function": {}}, 1]}}}],
    [{"$group": {"_id": None, "x": {"$accumulator": {"init": "function(){}"}}}}],
    [{"$replaceRoot": {"newRoot": {"$mergeObjects": [{"$lookup": {}}]}}}],
    [{"$unwind": "$tags"}, {"$match": {"x": [{"y": [{"$graphLookup": {}}]}]}}],
    [{"$lookup": {"from": "users", "localField": "username", "foreignField": "username", "as": "u"}}],
    [{"$unionWith": "users"}],
    [{"$out": "tasks2"}],
    [{"$merge": {"into": "users"}}],
    [{"$facet": {"a": [{"$lookup": {}}]}}],
    [{"$documents": [{}]}],
    [{"$collStats": {}}],
    [{"$currentOp": {}}],
    [{"$indexStats": {}}],
    [{"$planCacheStats": {}}],
    [{"$listSessions": {}}],
    [{"$changeStream": {}}],
    [{"$set": {"a": 1}}],
    [{"$match": {"a": 1}, "$limit": 1}],
    [{}],
    ["$match"],
    [{"$limit": 5}, {"$sort": {"x": {"$where": 1}}}],
]


@pytest.mark.parametrize("pipeline", DENIED, ids=range(len(DENIED)))
@pytest_twisted.ensureDeferred
async def test_denied_operators_and_stages_are_400(api_server: Server, pipeline: list[Any]) -> None:
    for user in (ALICE, ADMIN):
        answer = await api_server.post("/tasks/query", {"aggregate": pipeline}, user=user)
        assert answer.status == 400, (pipeline, answer.raw)
        assert "error" in answer.json


@pytest.mark.parametrize("body", [{}, {"aggregate": {}}, {"aggregate": [], "x": 1}, {"pipeline": []}])
@pytest_twisted.ensureDeferred
async def test_invalid_query_bodies_are_400(api_server: Server, body: Any) -> None:
    answer = await api_server.post("/task-groups/query", body)
    assert answer.status == 400


@pytest_twisted.ensureDeferred
async def test_too_many_documents_are_refused(start_server) -> None:
    server = await start_server(query_max_documents=3)
    await server.post("/tasks", {"tasks": [sample_task() for _ in range(4)]})
    answer = await server.post("/tasks/query", {"aggregate": []})
    assert answer.status == 400
    assert answer.json["error"] == "query returns more than 3 documents; add $limit"
    answer = await server.post("/tasks/query", {"aggregate": [{"$limit": 3}]})
    assert answer.status == 200 and len(answer.json["tasks"]) == 3


@pytest_twisted.ensureDeferred
async def test_engine_refusals_are_400(api_server: Server) -> None:
    await _load(api_server)
    for pipeline in ([{"$limit": -1}], [{"$skip": "x"}], [{"$match": {"state": {"$bogus": 1}}}], [{"$unwind": 5}]):
        answer = await api_server.post("/tasks/query", {"aggregate": pipeline}, user=ADMIN)
        assert answer.status == 400, (pipeline, answer.raw)
    # the engines differ in what they let pass; neither may fail with a 5xx
    for pipeline in (
        [{"$sort": {"x": 7}}],
        [{"$project": {}}],
        [{"$sample": {"size": -1}}],
        [{"$replaceRoot": {"newRoot": "$tags"}}],
        [{"$group": {"x": 1}}],
    ):
        answer = await api_server.post("/tasks/query", {"aggregate": pipeline}, user=ADMIN)
        assert answer.status in (200, 400), (pipeline, answer.raw)
