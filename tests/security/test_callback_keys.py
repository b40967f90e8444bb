"""Callback keys authenticate only the live container they were made for (issue 8, defects 1
and 3), on the real Docker engine with the real worker.

Defect 1: an ended container's stored key became ``**********``; a callback sending that mask
and repeating the container's last callback (callback 0) was answered again, with the task's
live input credentials, while the task was being retried.  Defect 3: data containers are
shared across users; a user who read the key of a shared data container could fail every
dependant application container, of any user."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest_twisted
import treq
from bson import ObjectId

from ccserver import states
from ccserver.documents import MASK
from tests.e2e.harness import Harness, app_task, wait_for

INPUT_PASSWORD = "input-pw-" + uuid.uuid4().hex[:8]


def with_password(task: dict[str, Any]) -> dict[str, Any]:
    for spec in task["input_files"]:
        spec["connector_access"]["auth"] = {"auth_type": "basic", "username": "u", "password": INPUT_PASSWORD}
    return task


async def callback(ccserver: Harness, kind: str, body: dict[str, Any]) -> tuple[int, bytes]:
    response = await treq.post(
        f"{ccserver.url}/{kind}/callback",
        json.dumps(body).encode(),
        headers={"content-type": "application/json"},
        timeout=30,
    )
    return response.code, await treq.content(response)


@pytest_twisted.ensureDeferred
async def test_an_ended_containers_callbacks_are_refused_and_reveal_nothing(ccserver: Harness) -> None:
    ccserver.archive.inputs["slow.txt"] = b"slow input\n"
    ccserver.archive.delays["slow.txt"] = 300.0  # the worker waits here, after callback 0
    code, body = await ccserver.post(
        "/tasks", with_password(app_task(ccserver.archive_url, uuid.uuid4().hex[:8], ["slow.txt"], no_cache=True))
    )
    assert code == 200, body
    store = ccserver.root.store
    first = await wait_for(
        lambda: store.find_one("application_containers", {"task_id": ObjectId(body["_id"])}),
        lambda c: c is not None and len(c.get("callbacks", [])) >= 1,
        120,
        "callback 0 of the first container",
    )
    assert "callback_key" not in first  # derived from the daemon's secret, never stored
    ccserver.engine.api.kill(str(first["_id"]))
    ended = await wait_for(
        lambda: store.find_one("application_containers", {"_id": first["_id"]}),
        lambda c: states.is_end(c["state"]),
        60,
        "the killed container to fail",
    )
    assert ended["state"] == states.FAILED
    task = await ccserver.task(body["_id"])
    assert not states.is_end(task["state"]) and task["trials"] == 1  # being retried: secrets still live

    # what the container sent (when it was received is the daemon's own note)
    sent = {k: v for k, v in ended["callbacks"][-1].items() if k != "received_at"}
    replay = {**sent, "container_id": str(first["_id"])}
    assert replay["callback_type"] == 0
    for key in (MASK, "", "k" * 48):
        status, raw = await callback(ccserver, "application-containers", {**replay, "callback_key": key})
        assert status == 401, (key, raw)
        assert INPUT_PASSWORD.encode() not in raw
    # even the real key gets nothing from an ended container: its repeat is acknowledged, empty
    real = ccserver.root.vault.callback_key("application_containers", first["_id"])
    status, raw = await callback(ccserver, "application-containers", {**replay, "callback_key": real})
    assert (status, json.loads(raw)) == (200, {})
    replay_next = {**replay, "callback_type": 1}
    status, raw = await callback(ccserver, "application-containers", {**replay_next, "callback_key": real})
    assert status == 400 and INPUT_PASSWORD.encode() not in raw

    code, _ = await ccserver.post("/tasks/cancel", {"_id": body["_id"]})
    assert code == 200
    await ccserver.wait_task(body["_id"], states.END_STATES)
    await wait_for(lambda: store.find("secrets", {}), lambda kept: kept == [], 30, "the task's secrets to go")


@pytest_twisted.ensureDeferred
async def test_a_user_cannot_fail_another_users_task_through_a_shared_data_container(ccserver: Harness) -> None:
    ccserver.archive.inputs["shared.bin"] = b"shared between users\n"
    ccserver.archive.delays["shared.bin"] = 8.0
    store = ccserver.root.store
    code, alice = await ccserver.post("/tasks", with_password(app_task(ccserver.archive_url, "a", ["shared.bin"])))
    assert code == 200, alice
    dc = await wait_for(
        lambda: store.find_one("data_containers", {}), lambda d: d is not None, 60, "alice's data container"
    )
    code, bob = await ccserver.post(
        "/tasks", with_password(app_task(ccserver.archive_url, "b", ["shared.bin"])), user="bob"
    )
    assert code == 200, bob
    bob_id = ObjectId(bob["_id"])
    bob_app = await wait_for(
        lambda: store.find_one("application_containers", {"task_id": bob_id}),
        lambda c: c is not None,
        60,
        "bob's application container",
    )
    assert bob_app["data_container_ids"] == [dc["_id"]]  # shared across users

    # alice reads everything the API shows her of her data container...
    code, seen = await ccserver.post(
        "/data-containers/query",
        {"aggregate": [{"$project": {"k": "$callback_key", "keys": "$input_file_keys", "all": "$$ROOT"}}]},
    )
    assert code == 200 and len(seen["data_containers"]) == 1, seen
    assert INPUT_PASSWORD not in json.dumps(seen)
    shown = seen["data_containers"][0]
    # ...and nothing of it lets her send the shared container an out-of-order callback
    guesses = {MASK, "", str(shown.get("k")), json.dumps(shown.get("keys"))}
    for key in guesses:
        status, _ = await callback(
            ccserver,
            "data-containers",
            {
                "callback_key": key,
                "callback_type": 3,
                "container_id": str(dc["_id"]),
                "content": {"state": states.SUCCESS, "description": "hostile"},
            },
        )
        assert status == 401, key
    bob_task = await ccserver.wait_task(bob["_id"], states.END_STATES, timeout=180)
    assert bob_task["state"] == states.SUCCESS and bob_task["trials"] == 0, bob_task["transitions"]
    alice_task = await ccserver.wait_task(alice["_id"], states.END_STATES, timeout=180)
    assert alice_task["state"] == states.SUCCESS, alice_task["transitions"]
    assert ccserver.archive.results["b-copy"] == b"shared between users\n"
    await wait_for(lambda: store.find("secrets", {}), lambda kept: kept == [], 60, "all secrets to go")
