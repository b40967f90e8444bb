"""GET /, GET /token, the nodes endpoints, and the error classes every endpoint shares."""

from __future__ import annotations

import base64
from typing import Any

import pytest
import pytest_twisted
from bson import ObjectId

from ccserver import __version__
from tests.api.conftest import ADMIN, ALICE, BOB, Server, sample_task

USER_ENDPOINTS = [
    ("GET", "/nodes"),
    ("POST", "/nodes"),
    ("POST", "/tasks"),
    ("POST", "/tasks/cancel"),
    ("POST", "/tasks/query"),
    ("POST", "/task-groups/query"),
    ("POST", "/application-containers/query"),
    ("POST", "/data-containers/query"),
]


@pytest_twisted.ensureDeferred
async def test_root_answers_the_version_to_anyone(api_server: Server) -> None:
    answer = await api_server.get("/", user=None)
    assert answer.status == 200
    assert answer.json == {"version": __version__}
    assert answer.header("content-type") == "application/json"


@pytest_twisted.ensureDeferred
async def test_token_is_issued_for_a_password_and_replaces_it_elsewhere(api_server: Server) -> None:
    answer = await api_server.get("/token")
    assert answer.status == 200
    body = answer.json
    assert set(body) == {"token", "valid_for_seconds"}
    assert len(body["token"]) == 48 and int(body["token"], 16) >= 0
    assert body["valid_for_seconds"] == 172800
    with_token = (ALICE[0], body["token"])
    assert (await api_server.get("/nodes", user=with_token)).status == 200
    assert (await api_server.post("/tasks/query", {"aggregate": []}, user=with_token)).status == 200
    # password only on GET /token
    refused = await api_server.get("/token", user=with_token)
    assert refused.status == 401
    # a token is bound to its user
    assert (await api_server.get("/nodes", user=(BOB[0], body["token"]))).status == 401


@pytest_twisted.ensureDeferred
async def test_every_user_endpoint_wants_credentials(api_server: Server) -> None:
    for method, path in USER_ENDPOINTS + [("GET", "/token")]:
        answer = await api_server.request(method, path, {}, user=None)
        assert answer.status == 401, (method, path)
        assert "error" in answer.json
        # no challenge: a browser would take the login over from CC-UI (docs/authentication.rst)
        assert answer.header("www-authenticate") is None


@pytest_twisted.ensureDeferred
async def test_wrong_and_malformed_credentials_are_401(api_server: Server) -> None:
    assert (await api_server.get("/nodes", user=(BOB[0], "wrong"))).status == 401
    assert (await api_server.get("/nodes", user=("nobody", "x"))).status == 401
    for header in ["Basic !!!", "Bearer abc", "Basic " + base64.b64encode(b"no-colon").decode(), "Basic"]:
        answer = await api_server.get("/nodes", user=None, headers={"Authorization": header})
        assert answer.status == 401, header
        assert "error" in answer.json


@pytest_twisted.ensureDeferred
async def test_unknown_path_is_404_and_wrong_method_405_as_json(api_server: Server) -> None:
    for path in ["/nope", "/tasks/nope", "/cc/tasks"]:
        answer = await api_server.post(path, {})
        assert answer.status == 404, path
        assert answer.json == {"error": "no such endpoint"}
    for method, path in [
        ("GET", "/tasks"),
        ("DELETE", "/tasks"),
        ("PUT", "/nodes"),
        ("POST", "/"),
        ("GET", "/tasks/query"),
        ("POST", "/token"),
    ]:
        answer = await api_server.request(method, path)
        assert answer.status == 405, (method, path)
        assert answer.json == {"error": "method not allowed for this endpoint"}
        assert answer.header("allow")


@pytest_twisted.ensureDeferred
async def test_trailing_and_doubled_slashes_reach_the_route(api_server: Server) -> None:
    for path in ["/tasks/", "//tasks"]:
        answer = await api_server.post(path, sample_task())
        assert answer.status == 200, (path, answer.raw)


@pytest_twisted.ensureDeferred
async def test_body_over_the_limit_is_413(start_server) -> None:
    server = await start_server(max_body_bytes=2000)
    answer = await server.post("/tasks", {"tasks": [sample_task() for _ in range(10)]})
    assert answer.status == 413
    assert "max_body_bytes" in answer.json["error"]
    assert (await server.post("/tasks", sample_task())).status == 200


@pytest_twisted.ensureDeferred
async def test_nodes_status_is_the_cluster_answer(api_server: Server) -> None:
    api_server.cluster.dead["node2"] = "unreachable"
    answer = await api_server.get("/nodes")
    assert answer.status == 200
    assert [n["name"] for n in answer.json["healthy_nodes"]] == ["node1"]
    assert answer.json["dead_nodes"] == [{"name": "node2", "description": "unreachable"}]
    assert set(answer.json["healthy_nodes"][0]) == {
        "name",
        "total_ram",
        "reserved_ram",
        "total_cpus",
        "reserved_cpus",
        "active_application_containers",
        "active_data_containers",
    }


@pytest_twisted.ensureDeferred
async def test_post_nodes_rechecks_for_admins_only(api_server: Server) -> None:
    api_server.cluster.dead["node2"] = "unreachable"
    refused = await api_server.post("/nodes", {"nodes": [{"name": "node2"}]}, user=BOB)
    assert refused.status == 403
    assert api_server.cluster.rechecked == []
    answer = await api_server.post("/nodes", {"nodes": [{"name": "node2"}]}, user=ADMIN)
    assert (answer.status, answer.json) == (200, {})
    assert api_server.cluster.rechecked == [["node2"]]
    assert (await api_server.get("/nodes")).json["dead_nodes"] == []


@pytest_twisted.ensureDeferred
async def test_post_nodes_refuses_unknown_names_and_bad_bodies(api_server: Server) -> None:
    unknown = await api_server.post("/nodes", {"nodes": [{"name": "node1"}, {"name": "ghost"}]}, user=ADMIN)
    assert unknown.status == 400
    assert "ghost" in unknown.json["error"]
    for body in [{}, {"nodes": "node1"}, {"nodes": [{"name": 1}]}, {"nodes": [], "x": 1}]:
        answer = await api_server.post("/nodes", body, user=ADMIN)
        assert answer.status == 400, body
    assert api_server.cluster.rechecked == []


def _callback(container_id: str, key: str, callback_type: int = 0) -> dict[str, Any]:
    return {
        "callback_key": key,
        "callback_type": callback_type,
        "container_id": container_id,
        "content": {
            "state": 3,
            "description": "ok",
            "exception": None,
            "telemetry": {"wall_time": 1.5, "std_out": "", "return_code": 0},
        },
    }


@pytest_twisted.ensureDeferred
async def test_callbacks_reach_the_handler_with_ids_and_answer_unmasked(api_server: Server) -> None:
    (container_id,) = await api_server.store.insert_many(
        "data_containers", [{"callback_key": "the-key", "state": 2, "username": "alice"}]
    )
    task_id = ObjectId()
    handler = api_server.api.callbacks
    handler.answer = {"task_id": task_id, "input_file_keys": ["k1"], "connector_access": {"password": "p"}}
    answer = await api_server.post("/data-containers/callback", _callback(str(container_id), "the-key"), user=None)
    assert answer.status == 200
    assert answer.json == {"task_id": str(task_id), "input_file_keys": ["k1"], "connector_access": {"password": "p"}}
    ((collection, body),) = handler.received
    assert collection == "data_containers" and body["container_id"] == container_id
    wrong = await api_server.post("/data-containers/callback", _callback(str(container_id), "nope"), user=None)
    assert wrong.status == 401
    elsewhere = await api_server.post(
        "/application-containers/callback", _callback(str(container_id), "the-key"), user=None
    )
    assert elsewhere.status == 401


@pytest.mark.parametrize(
    "body",
    [
        {},
        _callback("xyz", "k"),
        {**_callback("0" * 24, "k"), "extra": 1},
        {**_callback("0" * 24, "k"), "content": {"state": 3}},
        _callback("0" * 24, "k", callback_type=-1),
    ],
)
@pytest_twisted.ensureDeferred
async def test_invalid_callbacks_are_400(api_server: Server, body: Any) -> None:
    answer = await api_server.post("/application-containers/callback", body, user=None)
    assert answer.status == 400, answer.raw
