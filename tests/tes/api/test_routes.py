"""The TES 1.1 routes over a real socket, on every store backend: service-info, submission
and validation, the three views, secrets, cancel, users, Bearer tokens, the anonymous user."""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytest_twisted
from bson import ObjectId

from ccserver.documents import MASK
from ccserver.tes import states
from ccserver.tes.submission import Storage
from tests.api.conftest import ADMIN, ALICE, BOB, Server
from tests.tes.api.conftest import TES, StartTesServer, sample_tes_task

SECRETS = ("in-secret-pw", "out-secret-pw", "env-secret-value")


async def _submit(server: Server, task: dict[str, Any] | None = None, **kw: Any) -> str:
    answer = await server.post(TES + "/tasks", task if task is not None else sample_tes_task(), **kw)
    assert answer.status == 200, answer.raw
    assert set(answer.json) == {"id"}
    return str(answer.json["id"])


async def _simulate_run(server: Server, task_id: str, state: str = states.COMPLETE) -> None:
    """What the runner writes (contracts §1): one attempt's TaskLog, in the contract's shape."""
    log = {
        "start_time": "2026-12-02T01:00:00.000+00:00",
        "end_time": "2026-12-02T01:00:05.000+00:00",
        "metadata": {"node": "node1"},
        "logs": [
            {
                "start_time": "2026-12-02T01:00:01.000+00:00",
                "end_time": "2026-12-02T01:00:04.000+00:00",
                "stdout": "hello\n",
                "stderr": "warning\n",
                "exit_code": 0,
            }
        ],
        "outputs": [{"url": "ftp://u:**********@example.org/greeting", "path": "/out/greeting", "size_bytes": "6"}],
        "system_logs": ["staged 2 inputs in 0.1 s"],
    }
    matched = await server.store.update_one(
        "tes_tasks", {"_id": ObjectId(task_id)}, {"$set": {"state": state, "trials": 1}, "$push": {"logs": log}}
    )
    assert matched == 1


@pytest_twisted.ensureDeferred
async def test_service_info_is_service_info_1_0_with_the_accepted_storage(start_tes_server: StartTesServer) -> None:
    server = await start_tes_server(storage=Storage(file_roots=("/srv/data",), s3=True))
    answer = await server.get(TES + "/service-info", user=None)
    assert answer.status == 200
    info = answer.json
    assert info["type"] == {"group": "org.ga4gh", "artifact": "tes", "version": "1.1.0"}
    assert {"id", "name", "organization", "version"} <= set(info)
    assert set(info["organization"]) == {"name", "url"}
    assert info["storage"] == ["file", "http", "https", "ftp", "s3", "content"]
    plain = await (await start_tes_server()).get(TES + "/service-info", user=None)
    assert plain.json["storage"] == ["http", "https", "ftp", "content"]


@pytest_twisted.ensureDeferred
async def test_views_are_exactly_as_the_spec_says(tes_server: Server) -> None:
    task_id = await _submit(tes_server)
    await _simulate_run(tes_server, task_id)
    minimal = (await tes_server.get(f"{TES}/tasks/{task_id}?view=MINIMAL")).json
    assert minimal == {"id": task_id, "state": "COMPLETE"}
    default = (await tes_server.get(f"{TES}/tasks/{task_id}")).json
    assert default == minimal  # the spec's default view is MINIMAL
    full = (await tes_server.get(f"{TES}/tasks/{task_id}?view=FULL")).json
    basic = (await tes_server.get(f"{TES}/tasks/{task_id}?view=BASIC")).json
    assert set(full) == {
        "id",
        "state",
        "name",
        "description",
        "inputs",
        "outputs",
        "resources",
        "executors",
        "volumes",
        "tags",
        "logs",
        "creation_time",
    }
    assert full["inputs"][0]["content"] == "echo hello > /out/greeting\n"
    assert full["logs"][0]["logs"][0]["stdout"] == "hello\n"
    assert full["logs"][0]["system_logs"] == ["staged 2 inputs in 0.1 s"]
    assert full["logs"][0]["outputs"][0]["size_bytes"] == "6"
    # BASIC: everything except executor stdout/stderr, input content, system_logs
    expected = json.loads(json.dumps(full))
    del expected["inputs"][0]["content"]
    del expected["logs"][0]["logs"][0]["stdout"]
    del expected["logs"][0]["logs"][0]["stderr"]
    del expected["logs"][0]["system_logs"]
    assert basic == expected
    assert full["executors"][0]["ignore_error"] is True
    assert full["resources"] == {"cpu_cores": 2, "ram_gb": 1.5, "disk_gb": 10, "preemptible": False, "zones": ["a"]}
    assert full["creation_time"].endswith("+00:00")


@pytest_twisted.ensureDeferred
async def test_secrets_are_masked_in_answers_and_documents_and_kept_in_the_vault(tes_server: Server) -> None:
    task_id = await _submit(tes_server)
    for view in ("BASIC", "FULL"):
        raw = (await tes_server.get(f"{TES}/tasks/{task_id}?view={view}")).raw.decode()
        assert not any(s in raw for s in SECRETS), raw
    listed = (await tes_server.get(f"{TES}/tasks?view=FULL")).raw.decode()
    assert not any(s in listed for s in SECRETS)
    doc = await tes_server.store.find_one("tes_tasks", {"_id": ObjectId(task_id)})
    assert doc is not None
    assert not any(s in json.dumps(doc, default=str) for s in SECRETS)
    assert doc["inputs"][1]["url"] == f"https://user:{MASK}@example.org/in.txt"
    assert doc["executors"][0]["env"] == {"AWS_SECRET_ACCESS_KEY": MASK, "GREETING": "hi"}
    assert doc["username"] == "alice" and doc["state"] == "QUEUED" and doc["trials"] == 0
    assert doc["ram_mb"] == 1536 and doc["cpus"] == 2.0
    assert doc["tag_list"] == [{"key": "project", "value": "p1"}, {"key": "owner", "value": "alice"}]
    assert doc["transitions"][0]["state"] == "QUEUED"
    real = await tes_server.extra["vault"].reveal(doc)
    assert real["inputs"][1]["url"] == "https://user:in-secret-pw@example.org/in.txt"
    assert real["outputs"][0]["url"] == "ftp://u:out-secret-pw@example.org/greeting"
    assert real["executors"][0]["env"]["AWS_SECRET_ACCESS_KEY"] == "env-secret-value"
    assert tes_server.extra["wakeups"], "a submission wakes the runner"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"executors": [{"image": "a", "command": ["x"]}, {"command": ["b"]}]}, "executors[1].image: required"),
        ({"executors": [{"image": "a"}]}, "executors[0].command: required"),
        ({"executors": []}, "executors: needs at least 1"),
        ({"executors": None}, "executors: expected array"),
        (
            {"executors": [{"image": "a", "command": ["x"], "workdir": "rel"}]},
            "executors[0].workdir: must be an absolute path",
        ),
        ({"executors": [{"image": "a", "command": ["x"], "env": {"A": 1}}]}, "executors[0].env.A: expected string"),
        ({"inputs": [{"path": "/in/x"}]}, "inputs[0].url: required (or content)"),
        ({"inputs": [{"url": "https://h/x"}]}, "inputs[0].path: required"),
        (
            {"inputs": [{"url": "https://h/x", "path": "/in/x", "type": "BLOB"}]},
            "inputs[0].type: expected one of FILE, DIRECTORY",
        ),
        ({"inputs": [{"url": "gs://bucket/x", "path": "/in/x"}]}, "inputs[0].url: unsupported URL scheme gs://"),
        (
            {"inputs": [{"url": "s3://bucket/x", "path": "/in/x"}]},
            "inputs[0].url: s3:// is not configured on this server",
        ),
        (
            {"inputs": [{"url": "file:///etc/passwd", "path": "/in/x"}]},
            "inputs[0].url: file:// is not allowed on this server",
        ),
        ({"inputs": [{"content": "x", "path": "/in/d", "type": "DIRECTORY"}]}, "inputs[0].content: a DIRECTORY"),
        ({"outputs": [{"path": "/out/x"}]}, "outputs[0].url: required"),
        ({"outputs": [{"path": "/out/*.txt", "url": "https://h/o/"}]}, "outputs[0].path_prefix: required"),
        ({"resources": {"cpu_cores": 0}}, "resources.cpu_cores: 0 is less than the minimum of 1"),
        ({"resources": {"ram_gb": "lots"}}, "resources.ram_gb: expected number"),
        (
            {"resources": {"backend_parameters": {"VmSize": "x"}, "backend_parameters_strict": True}},
            "resources.backend_parameters.VmSize: not supported",
        ),
        ({"volumes": ["data"]}, "volumes[0]: must be an absolute path"),
        ({"tags": {"a": 1}}, "tags.a: expected string"),
        ({"executors": [{"image": "a", "command": ["x"], "env": {"a.b": "1"}}]}, "executors[0].env.a.b: keys may not"),
        ({"name": 5}, "name: expected string"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_a_bad_task_is_a_400_naming_the_field(tes_server: Server, change: dict[str, Any], message: str) -> None:
    answer = await tes_server.post(TES + "/tasks", sample_tes_task(**change))
    assert answer.status == 400, answer.raw
    assert answer.json["error"].startswith(message), answer.json
    assert answer.json["message"] == answer.json["error"]
    assert await tes_server.store.count("tes_tasks", {}) == 0


@pytest_twisted.ensureDeferred
async def test_file_urls_are_accepted_only_below_the_allowed_roots(start_tes_server: StartTesServer) -> None:
    server = await start_tes_server(storage=Storage(file_roots=("/srv/data",)))
    ok = sample_tes_task(
        inputs=[{"url": "file:///srv/data/a/x", "path": "/in/x"}, {"url": "/srv/data/y", "path": "/in/y"}]
    )
    assert (await server.post(TES + "/tasks", ok)).status == 200
    for url in ("file:///srv/other/x", "file:///srv/data/../etc/passwd", "/srv/database/x"):
        bad = sample_tes_task(inputs=[{"url": url, "path": "/in/x"}])
        answer = await server.post(TES + "/tasks", bad)
        assert answer.status == 400 and "outside the allowed directories" in answer.json["error"], url


@pytest_twisted.ensureDeferred
async def test_unknown_backend_parameters_are_dropped_unless_strict(tes_server: Server) -> None:
    task = sample_tes_task(resources={"ram_gb": 1, "backend_parameters": {"VmSize": "big"}})
    task_id = await _submit(tes_server, task)
    full = (await tes_server.get(f"{TES}/tasks/{task_id}?view=FULL")).json
    assert full["resources"] == {"ram_gb": 1}
    doc = await tes_server.store.find_one("tes_tasks", {"_id": ObjectId(task_id)})
    assert doc is not None and "VmSize" in doc["transitions"][0]["description"]
    assert "big" not in json.dumps(doc, default=str)


@pytest_twisted.ensureDeferred
async def test_read_only_and_unknown_fields_of_a_submission_are_ignored(tes_server: Server) -> None:
    task = sample_tes_task(id="mine", state="COMPLETE", logs=[{"x": 1}], creation_time="yesterday", color="blue")
    task_id = await _submit(tes_server, task)
    full = (await tes_server.get(f"{TES}/tasks/{task_id}?view=FULL")).json
    assert full["id"] == task_id and full["state"] == "QUEUED" and full["logs"] == []
    assert "color" not in full


@pytest_twisted.ensureDeferred
async def test_content_inputs_of_more_than_128_kib_are_taken(tes_server: Server) -> None:
    content = "".join(f"line {i:07d} of a long job script\n" for i in range(12_000))  # ~400 KB
    assert len(content) > 128 * 1024 and len(content) > tes_server.config.server.inline_body_bytes
    task_id = await _submit(tes_server, sample_tes_task(inputs=[{"path": "/data/big.sh", "content": content}]))
    full = (await tes_server.get(f"{TES}/tasks/{task_id}?view=FULL")).json
    assert full["inputs"][0]["content"] == content


@pytest.mark.parametrize("path", ["/tasks/0123456789abcdef01234567", "/tasks/not-an-id", "/tasks/service-info"])
@pytest_twisted.ensureDeferred
async def test_an_unknown_task_is_a_404(tes_server: Server, path: str) -> None:
    for answer in (await tes_server.get(TES + path + "?view=FULL"), await tes_server.post(TES + path + ":cancel")):
        assert answer.status == 404, answer.raw
        assert "no such task" in answer.json["message"]


@pytest_twisted.ensureDeferred
async def test_an_unknown_view_is_a_400(tes_server: Server) -> None:
    task_id = await _submit(tes_server)
    for path in (f"/tasks/{task_id}?view=EVERYTHING", "/tasks?view=full"):
        answer = await tes_server.get(TES + path)
        assert answer.status == 400 and answer.json["error"].startswith("view: expected one of MINIMAL, BASIC, FULL")


@pytest_twisted.ensureDeferred
async def test_cancel_of_a_queued_task_cancels_it_at_once_and_forgets_its_secrets(tes_server: Server) -> None:
    task_id = await _submit(tes_server)
    answer = await tes_server.post(f"{TES}/tasks/{task_id}:cancel")
    assert answer.status == 200 and answer.json == {}
    doc = await tes_server.store.find_one("tes_tasks", {"_id": ObjectId(task_id)})
    assert doc is not None and doc["state"] == "CANCELED" and doc["ended_at"] is not None
    assert [t["state"] for t in doc["transitions"]] == ["QUEUED", "CANCELED"]
    assert await tes_server.extra["vault"].kept([doc["_id"]]) == set()
    # again: {} and nothing changes
    assert (await tes_server.post(f"{TES}/tasks/{task_id}:cancel")).json == {}
    again = await tes_server.store.find_one("tes_tasks", {"_id": ObjectId(task_id)})
    assert again is not None and len(again["transitions"]) == 2


@pytest.mark.parametrize("state", ["INITIALIZING", "RUNNING", "PAUSED"])
@pytest_twisted.ensureDeferred
async def test_cancel_of_a_running_task_asks_the_runner(tes_server: Server, state: str) -> None:
    task_id = await _submit(tes_server)
    await tes_server.store.update_one("tes_tasks", {"_id": ObjectId(task_id)}, {"$set": {"state": state}})
    woken = len(tes_server.extra["wakeups"])
    assert (await tes_server.post(f"{TES}/tasks/{task_id}:cancel")).json == {}
    doc = await tes_server.store.find_one("tes_tasks", {"_id": ObjectId(task_id)})
    assert doc is not None and doc["state"] == "CANCELING" and doc["ended_at"] is None
    assert doc["transitions"][-1]["state"] == "CANCELING"
    assert len(tes_server.extra["wakeups"]) == woken + 1
    assert await tes_server.extra["vault"].kept([doc["_id"]]) == {doc["_id"]}, "the runner still needs them"


@pytest.mark.parametrize("state", ["COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED", "CANCELING"])
@pytest_twisted.ensureDeferred
async def test_cancel_of_an_ended_task_changes_nothing(tes_server: Server, state: str) -> None:
    task_id = await _submit(tes_server)
    await tes_server.store.update_one("tes_tasks", {"_id": ObjectId(task_id)}, {"$set": {"state": state}})
    assert (await tes_server.post(f"{TES}/tasks/{task_id}:cancel")).json == {}
    doc = await tes_server.store.find_one("tes_tasks", {"_id": ObjectId(task_id)})
    assert doc is not None and doc["state"] == state and len(doc["transitions"]) == 1


@pytest_twisted.ensureDeferred
async def test_users_see_and_cancel_only_their_own_tasks_admins_all(tes_server: Server) -> None:
    alice_task = await _submit(tes_server, user=ALICE)
    bob_task = await _submit(tes_server, user=BOB)
    for view in ("MINIMAL", "FULL"):
        assert (await tes_server.get(f"{TES}/tasks/{bob_task}?view={view}", user=ALICE)).status == 404
    assert (await tes_server.post(f"{TES}/tasks/{bob_task}:cancel", user=ALICE)).status == 404
    bob_doc = await tes_server.store.find_one("tes_tasks", {"_id": ObjectId(bob_task)})
    assert bob_doc is not None and bob_doc["state"] == "QUEUED"
    listed = (await tes_server.get(TES + "/tasks", user=ALICE)).json["tasks"]
    assert [t["id"] for t in listed] == [alice_task]
    everything = (await tes_server.get(TES + "/tasks", user=ADMIN)).json["tasks"]
    assert {t["id"] for t in everything} == {alice_task, bob_task}
    assert (await tes_server.get(f"{TES}/tasks/{bob_task}", user=ADMIN)).status == 200
    assert (await tes_server.post(f"{TES}/tasks/{bob_task}:cancel", user=ADMIN)).status == 200


@pytest_twisted.ensureDeferred
async def test_requests_without_or_with_wrong_credentials_are_401(tes_server: Server) -> None:
    for answer in (
        await tes_server.get(TES + "/tasks", user=None),
        await tes_server.post(TES + "/tasks", sample_tes_task(), user=None),
        await tes_server.get(TES + "/tasks", user=("alice", "wrong")),
        await tes_server.get(TES + "/tasks", user=None, headers={"Authorization": "Bearer " + "ab" * 24}),
        await tes_server.get(TES + "/tasks", user=None, headers={"Authorization": "Bearer short"}),
        # without an anonymous user, py-tes 0.4's None:None is a wrong password of user "None"
        await tes_server.get(TES + "/tasks", user=None, headers={"Authorization": "Basic Tm9uZTpOb25l"}),
    ):
        assert answer.status == 401, answer.raw
        assert answer.json["message"]
    assert await tes_server.store.count("tes_tasks", {}) == 0


@pytest_twisted.ensureDeferred
async def test_a_bearer_token_from_get_token_authenticates_its_user(tes_server: Server) -> None:
    token = (await tes_server.get("/token", user=BOB)).json["token"]
    bearer = {"Authorization": f"Bearer {token}"}
    task_id = await _submit(tes_server, user=None, headers=bearer)
    doc = await tes_server.store.find_one("tes_tasks", {"_id": ObjectId(task_id)})
    assert doc is not None and doc["username"] == "bob"
    assert (await tes_server.get(f"{TES}/tasks/{task_id}", user=None, headers=bearer)).status == 200
    # the 0.10 API takes it too, where it takes tokens
    assert (await tes_server.get("/nodes", user=None, headers=bearer)).status == 200
    # but not where only a password will do
    assert (await tes_server.get("/token", user=None, headers=bearer)).status == 401


@pytest_twisted.ensureDeferred
async def test_the_anonymous_user_acts_for_requests_without_credentials(start_tes_server: StartTesServer) -> None:
    server = await start_tes_server(tes={"anonymous_user": "alice"})
    task_id = await _submit(server, user=None)
    doc = await server.store.find_one("tes_tasks", {"_id": ObjectId(task_id)})
    assert doc is not None and doc["username"] == "alice"
    bob_task = await _submit(server, user=BOB)
    listed = (await server.get(TES + "/tasks", user=None)).json["tasks"]
    assert [t["id"] for t in listed] == [task_id], "anonymous is a standard user"
    assert (await server.get(f"{TES}/tasks/{bob_task}", user=None)).status == 404
    # py-tes 0.4 without credentials sends None:None: that is no credentials
    none_none = {"Authorization": "Basic Tm9uZTpOb25l"}
    assert [t["id"] for t in (await server.get(TES + "/tasks", user=None, headers=none_none)).json["tasks"]] == [
        task_id
    ]
    # wrong credentials are still wrong
    assert (await server.get(TES + "/tasks", user=("alice", "wrong"))).status == 401
    # and the 0.10 API still needs credentials
    assert (await server.get("/nodes", user=None)).status == 401


@pytest_twisted.ensureDeferred
async def test_without_tes_the_routes_are_404(start_tes_server: StartTesServer) -> None:
    server = await start_tes_server(tes={"enabled": False})
    for path in (TES + "/service-info", TES + "/tasks", "/v1/tasks/service-info"):
        answer = await server.get(path)
        assert answer.status == 404, path


@pytest_twisted.ensureDeferred
async def test_the_routes_live_under_the_api_prefix(start_tes_server: StartTesServer) -> None:
    server = await start_tes_server(api_prefix="/cc")
    assert (await server.get("/cc" + TES + "/service-info", user=None, root=True)).status == 200
    assert (await server.get(TES + "/service-info", user=None, root=True)).status == 404
    task_id = await _submit(server)
    assert (await server.get(f"/cc/v1/tasks/{task_id}", root=True)).json["state"] == "QUEUED"


@pytest_twisted.ensureDeferred
async def test_the_openapi_document_is_served(tes_server: Server) -> None:
    from ccserver.web import tes_openapi

    answer = await tes_server.get(TES + "/openapi.json", user=None)
    assert answer.status == 200
    assert answer.json == json.loads(json.dumps(tes_openapi.document("", Storage().schemes())))
    assert set(answer.json["paths"]) == {"/service-info", "/tasks", "/tasks/{id}", "/tasks/{id}:cancel"}


@pytest_twisted.ensureDeferred
async def test_unknown_paths_and_methods_answer_in_the_tes_error_shape(tes_server: Server) -> None:
    missing = await tes_server.get(TES + "/nothing-here")
    assert missing.status == 404 and missing.json == {"error": "no such endpoint", "message": "no such endpoint"}
    wrong = await tes_server.request("DELETE", TES + "/tasks")
    assert wrong.status == 405 and wrong.json["message"] == "method not allowed for this endpoint"


@pytest_twisted.ensureDeferred
async def test_tags_with_dots_and_dollars_are_kept_and_filtered(tes_server: Server) -> None:
    """A tag key may hold "." or "$" (``ccserver.notify``; MongoDB field names may not): the
    tags are stored as a list, answered as the object TES knows, and filtered on."""
    tags = {"ccserver.notify": "http://127.0.0.1:9/hook", "$where": "x", "plain": "1"}
    task_id = await _submit(tes_server, sample_tes_task(tags=tags))
    basic = (await tes_server.get(f"{TES}/tasks/{task_id}?view=BASIC")).json
    assert basic["tags"] == tags
    listed = (await tes_server.get(f"{TES}/tasks?tag_key=ccserver.notify&tag_value=http://127.0.0.1:9/hook")).json
    assert [t["id"] for t in listed["tasks"]] == [task_id]
    listed = (await tes_server.get(f"{TES}/tasks?tag_key=$where")).json
    assert [t["id"] for t in listed["tasks"]] == [task_id]
