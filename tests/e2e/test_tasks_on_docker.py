"""Tasks become real containers on the real dockerd and end in the right state (cc-protocol §5–8)."""

from __future__ import annotations

import uuid

import pytest_twisted
from bson import ObjectId

from ccserver import states
from tests.e2e.harness import NOINPUT_IMAGE, Harness, app_task, sleep, wait_for


def tag() -> str:
    return uuid.uuid4().hex[:10]


@pytest_twisted.ensureDeferred
async def test_one_task_succeeds_and_its_results_arrive_intact(ccserver: Harness) -> None:
    data = b"line one\nline two\n" + bytes(range(256))
    ccserver.archive.inputs["one.bin"] = data
    t = tag()
    code, body = await ccserver.post("/tasks", app_task(ccserver.archive_url, t, ["one.bin"], params=["--x", "1"]))
    assert code == 200, body
    task = await ccserver.wait_task(body["_id"], states.END_STATES)
    assert task["state"] == states.SUCCESS, task["transitions"]
    assert ccserver.archive.results[f"{t}-copy"] == data
    assert b"--x" in ccserver.archive.results[f"{t}-parameters"]
    group = await wait_for(
        lambda: ccserver.root.store.find_one("task_groups", {"_id": task["task_group_id"][0]}),
        lambda g: g["state"] in states.END_STATES,
        30,
        "the group to end",
    )
    assert group["state"] == states.SUCCESS
    app = await ccserver.root.store.find_one("application_containers", {"task_id": task["_id"]})
    assert app["state"] == states.SUCCESS
    assert [c["callback_type"] for c in app["callbacks"]] == [0, 1, 2, 3]
    assert app["callbacks"][2]["content"]["telemetry"]["return_code"] == 0
    # callback keys are derived, never stored; the task's secrets are gone once it ended
    assert "callback_key" not in app
    assert await ccserver.root.store.find("secrets", {}) == []


@pytest_twisted.ensureDeferred
async def test_a_batch_sharing_one_input_downloads_it_once(ccserver: Harness) -> None:
    ccserver.archive.inputs["shared.txt"] = b"shared input\n"
    tags = [tag() for _ in range(4)]
    code, body = await ccserver.post(
        "/tasks", {"tasks": [app_task(ccserver.archive_url, t, ["shared.txt"]) for t in tags]}
    )
    assert code == 200, body
    for entry in body["tasks"]:
        task = await ccserver.wait_task(entry["_id"], states.END_STATES, timeout=180)
        assert task["state"] == states.SUCCESS, task["transitions"]
    for t in tags:
        assert ccserver.archive.results[f"{t}-copy"] == b"shared input\n"
    assert ccserver.archive.downloads["shared.txt"] == 1
    dcs = await ccserver.root.store.find("data_containers", {})
    assert len(dcs) == 1
    await wait_for(
        lambda: ccserver.root.store.find_one("data_containers", {"_id": dcs[0]["_id"]}),
        lambda d: d["state"] == states.SUCCESS,
        60,
        "the data container to succeed",
    )


@pytest_twisted.ensureDeferred
async def test_no_cache_downloads_directly(ccserver: Harness) -> None:
    ccserver.archive.inputs["direct.txt"] = b"direct\n"
    tags = [tag(), tag()]
    code, body = await ccserver.post(
        "/tasks", {"tasks": [app_task(ccserver.archive_url, t, ["direct.txt"], no_cache=True) for t in tags]}
    )
    assert code == 200, body
    for entry in body["tasks"]:
        task = await ccserver.wait_task(entry["_id"], states.END_STATES)
        assert task["state"] == states.SUCCESS, task["transitions"]
    assert ccserver.archive.downloads["direct.txt"] == 2
    assert await ccserver.root.store.find("data_containers", {}) == []


@pytest_twisted.ensureDeferred
async def test_a_missing_optional_result_is_skipped(ccserver: Harness) -> None:
    ccserver.archive.inputs["opt.txt"] = b"x"
    t = tag()
    code, body = await ccserver.post(
        "/tasks", app_task(ccserver.archive_url, t, ["opt.txt"], results=["copy", "optional_missing"])
    )
    assert code == 200, body
    task = await ccserver.wait_task(body["_id"], states.END_STATES)
    assert task["state"] == states.SUCCESS, task["transitions"]
    assert f"{t}-optional_missing" not in ccserver.archive.results
    assert ccserver.archive.results[f"{t}-copy"] == b"x"


@pytest_twisted.ensureDeferred
async def test_a_failing_app_is_retried_then_failed(ccserver: Harness) -> None:
    ccserver.archive.inputs["f.txt"] = b"x"
    code, body = await ccserver.post("/tasks", app_task(ccserver.archive_url, tag(), ["f.txt"], params=["--fail"]))
    assert code == 200, body
    task = await ccserver.wait_task(body["_id"], states.END_STATES, timeout=240)
    assert task["state"] == states.FAILED
    assert task["trials"] == 3
    waits = [t for t in task["transitions"] if t["state"] == states.WAITING]
    assert any("trial 1 of 3" in t["description"] for t in waits)
    assert any("trial 2 of 3" in t["description"] for t in waits)
    assert "trial 3 of 3" in task["transitions"][-1]["description"]
    apps = await ccserver.root.store.find("application_containers", {"task_id": task["_id"]})
    assert len(apps) == 3 and all(a["state"] == states.FAILED for a in apps)
    group = await wait_for(
        lambda: ccserver.root.store.find_one("task_groups", {"_id": task["task_group_id"][0]}),
        lambda g: g["state"] in states.END_STATES,
        30,
        "the group to end",
    )
    assert group["state"] == states.FAILED


@pytest_twisted.ensureDeferred
async def test_cancelling_a_running_task_removes_its_container(ccserver: Harness) -> None:
    task = app_task(ccserver.archive_url, tag(), [], params=["--sleep", "120"], results=["parameters"])
    task["application_container_description"]["image"] = NOINPUT_IMAGE
    code, body = await ccserver.post("/tasks", task)
    assert code == 200, body
    app = await wait_for(
        lambda: ccserver.root.store.find_one("application_containers", {"task_id": ObjectId(body["_id"])}),
        lambda a: a is not None and a["state"] == states.PROCESSING,
        60,
        "the container to run",
    )
    name = str(app["_id"])
    running = ccserver.engine.containers.get(name)
    # the memory limit (and memory+swap) is the task's container_ram
    assert running.attrs["HostConfig"]["Memory"] == 256 * 1024 * 1024
    assert running.attrs["HostConfig"]["MemorySwap"] == 256 * 1024 * 1024
    code, answer = await ccserver.post("/tasks/cancel", {"_id": body["_id"]})
    assert code == 200 and answer["state"] == states.CANCELLED
    await wait_for(
        lambda: name in ccserver.our_containers(),
        lambda present: not present,
        60,
        "the cancelled container to be removed",
    )
    task = await ccserver.task(body["_id"])
    group = await wait_for(
        lambda: ccserver.root.store.find_one("task_groups", {"_id": task["task_group_id"][0]}),
        lambda g: g["state"] in states.END_STATES,
        30,
        "the group to end",
    )
    assert group["state"] == states.FAILED  # all its tasks ended, none succeeded
    container = await ccserver.root.store.find_one("application_containers", {"_id": app["_id"]})
    assert container["state"] == states.CANCELLED


@pytest_twisted.ensureDeferred
async def test_memory_limit_stops_an_app_that_takes_more(ccserver: Harness) -> None:
    task = app_task(ccserver.archive_url, tag(), [], params=["--alloc", "400"], ram=128, results=["parameters"])
    task["application_container_description"]["image"] = NOINPUT_IMAGE
    code, body = await ccserver.post("/tasks", task)
    assert code == 200, body
    done = await ccserver.wait_task(body["_id"], states.END_STATES, timeout=240)
    assert done["state"] == states.FAILED


@pytest_twisted.ensureDeferred
async def test_notifications_arrive_when_a_task_ends(ccserver: Harness) -> None:
    task = app_task(ccserver.archive_url, tag(), [], results=["parameters"])
    task["application_container_description"]["image"] = NOINPUT_IMAGE
    task["notifications"] = [
        {
            "connector_access": {
                "url": f"{ccserver.archive_url}/notify",
                "json_data": {"hello": "world"},
                "auth": {"auth_type": "basic", "username": "n", "password": "secret-pw"},
            },
            "add_meta_data": True,
        }
    ]
    code, body = await ccserver.post("/tasks", task)
    assert code == 200, body
    done = await ccserver.wait_task(body["_id"], states.END_STATES)
    assert done["state"] == states.SUCCESS, done["transitions"]
    await wait_for(lambda: ccserver.archive.notifications, bool, 30, "the notification")
    assert ccserver.archive.notifications == [{"hello": "world", "task_id": body["_id"]}]
    assert ccserver.archive.notification_auth[0].startswith("Basic ")
    # the password of the notification is masked in the ended task (after it was used)
    await wait_for(
        lambda: ccserver.task(body["_id"]),
        lambda t: t["notifications"][0]["connector_access"]["auth"]["password"] == "**********",
        30,
        "the notification password to be masked",
    )


@pytest_twisted.ensureDeferred
async def test_a_task_too_large_for_the_cluster_fails_at_once(ccserver: Harness) -> None:
    task = app_task(ccserver.archive_url, tag(), [], ram=10_000_000)
    code, body = await ccserver.post("/tasks", task)
    assert code == 200, body
    done = await ccserver.wait_task(body["_id"], states.END_STATES, timeout=30)
    assert done["state"] == states.FAILED
    assert "too large" in done["transitions"][-1]["description"]
    await sleep(0)
