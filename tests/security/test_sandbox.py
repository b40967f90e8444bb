"""``sandbox`` and ``tracing`` reach the worker, and the worker applies ``sandbox.limits``.

On the real Docker engine: a task whose ``application_container_description`` carries
``sandbox.limits`` runs the sample application, which writes the resource limits it finds
(``limits.json``); the result shows each limit applied.  The image is the sample application
image with the worker and application of this checkout copied in (other checkouts rebuild
``ccserver-test/app:1`` from their own worker at any time).  On the host, against the worker
tests' loopback server: bad limits fail the container with a clear description.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import uuid
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from ccserver import states
from ccserver.callbacks import Callbacks
from ccserver.kinds import APPLICATION
from ccserver.storage.base import Store
from ccserver.vault import Vault
from ccserver.worker import sandbox
from tests.e2e.conftest import ccserver, daemon_log, engine, gateway  # noqa: F401
from tests.e2e.harness import NOINPUT_IMAGE, Harness, app_task
from tests.worker.fake_cc import FakeCC
from tests.worker.test_worker_unit import run_worker, work, write_config

APP = APPLICATION.documents
REPO = Path(__file__).resolve().parents[2]
LIMITS = {
    "num_open_files": 77,
    "create_file_size": 5_000_000,
    "cpu_usage": 120,
    "stack_size": 4 * 1024 * 1024,
    "heap_size": 512 * 1024 * 1024,
    "child_processes": 500,
}


def _checkout_image(client: Any) -> str:
    """NOINPUT_IMAGE with this checkout's worker, sample application and config (built once)."""
    files = {f"container_worker/{p.name}": p.read_bytes() for p in sorted((REPO / "ccserver/worker").glob("*.py"))}
    files["algorithm.py"] = (REPO / "tests/images/app/algorithm.py").read_bytes()
    files["config.json"] = (REPO / "tests/images/app/config-noinput.json").read_bytes()
    files["Dockerfile"] = (
        f"FROM {NOINPUT_IMAGE}\nCOPY container_worker /opt/container_worker\n"
        "COPY algorithm.py /opt/app/algorithm.py\nCOPY config.json /opt/config.json\n"
    ).encode()
    digest = hashlib.sha256(b"".join(name.encode() + b"\0" + data for name, data in sorted(files.items())))
    tag = f"ccserver-test/app-checkout:{digest.hexdigest()[:16]}"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    client.images.build(fileobj=buffer, custom_context=True, tag=tag, rm=True, pull=False, timeout=300)
    return tag


@pytest.fixture(scope="module")
def checkout_image(engine: Any) -> str:  # noqa: F811
    return _checkout_image(engine)


@pytest_twisted.ensureDeferred
async def test_sandbox_limits_of_a_task_apply_to_its_application(
    ccserver: Harness,  # noqa: F811
    checkout_image: str,
) -> None:
    t = uuid.uuid4().hex[:10]
    task = app_task(ccserver.archive_url, t, [], results=["parameters", "limits"])
    description = task["application_container_description"]
    description["image"] = checkout_image
    description["sandbox"] = {"limits": LIMITS}
    description["tracing"] = {"enabled": True}
    code, body = await ccserver.post("/tasks", task)
    assert code == 200, body
    done = await ccserver.wait_task(body["_id"], states.END_STATES)
    assert done["state"] == states.SUCCESS, done["transitions"]
    applied = json.loads(ccserver.archive.results[f"{t}-limits"])
    assert {name: applied[name] for name in LIMITS} == LIMITS
    # the worker logs what it got but does not apply (tracing): it did receive it
    app = await ccserver.root.store.find_one("application_containers", {"task_id": done["_id"]})
    assert app is not None and app["state"] == states.SUCCESS


@pytest_twisted.ensureDeferred
async def test_without_a_sandbox_the_application_keeps_the_containers_limits(
    ccserver: Harness,  # noqa: F811
    checkout_image: str,
) -> None:
    t = uuid.uuid4().hex[:10]
    task = app_task(ccserver.archive_url, t, [], results=["limits"])
    task["application_container_description"]["image"] = checkout_image
    code, body = await ccserver.post("/tasks", task)
    assert code == 200, body
    done = await ccserver.wait_task(body["_id"], states.END_STATES)
    assert done["state"] == states.SUCCESS, done["transitions"]
    applied = json.loads(ccserver.archive.results[f"{t}-limits"])
    assert applied["num_open_files"] != LIMITS["num_open_files"]
    assert applied["create_file_size"] == -1


# --- the worker on the host, against the worker tests' loopback server -------------------------


@pytest.fixture
def cc() -> Any:
    with FakeCC() as fake:
        yield fake


def _limits_config(tmp_path: Path) -> Path:
    return write_config(
        tmp_path, extra_results={"limits": {"dir": str(tmp_path / "result_files"), "name": "limits.json"}}
    )


def _limits_result(cc: FakeCC) -> list[dict[str, Any]]:
    return [
        {
            "local_result_file": "limits",
            "connector_type": "http",
            "connector_access": {"url": cc.url + "/results/limits", "method": "PUT"},
        }
    ]


def test_the_worker_sets_each_limit_in_the_application_only(cc: FakeCC, tmp_path: Path) -> None:
    cc.work = work(cc, result_files=_limits_result(cc))
    cc.work["sandbox"] = {
        "limits": {"num_open_files": 64, "create_file_size": 1_000_000, "rss_size": None},
        "seccomp": {"mode": "whitelist"},
    }
    cc.work["tracing"] = {"enabled": True}
    done = run_worker(cc.settings(), tmp_path, _limits_config(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "sandbox.seccomp was requested; this worker does not apply it" in done.stderr
    assert "tracing was requested; this worker does not apply it" in done.stderr
    applied = json.loads(cc.uploaded("limits")[0]["body"])
    assert applied["num_open_files"] == 64 and applied["create_file_size"] == 1_000_000
    assert "with 2 resource limits" in done.stderr


def test_a_write_past_create_file_size_fails_the_application(cc: FakeCC, tmp_path: Path) -> None:
    config = json.loads(_limits_config(tmp_path).read_text())
    config["application_command"] = "head -c 100000 /dev/zero > " + str(tmp_path / "big")
    (tmp_path / "config.json").write_text(json.dumps(config))
    cc.work = work(cc, result_files=[])
    cc.work["sandbox"] = {"limits": {"create_file_size": 1000}}
    done = run_worker(cc.settings(), tmp_path, tmp_path / "config.json")
    assert done.returncode == 9, done.stderr
    assert (tmp_path / "big").stat().st_size <= 1000
    assert cc.callbacks[2]["content"]["state"] == states.FAILED


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"limits": {"open_files": 10}}, "sandbox.limits.open_files: unknown limit"),
        ({"limits": {"num_open_files": -1}}, "sandbox.limits.num_open_files: expected a non-negative integer"),
        ({"limits": {"num_open_files": "10"}}, "expected a non-negative integer"),
        ({"limits": [1]}, "sandbox.limits must be an object"),
        ("strict", "sandbox must be an object"),
    ],
)
def test_bad_limits_fail_the_container_before_the_application_runs(
    cc: FakeCC, tmp_path: Path, bad: Any, message: str
) -> None:
    cc.work = work(cc, result_files=_limits_result(cc))
    cc.work["sandbox"] = bad
    done = run_worker(cc.settings(), tmp_path, _limits_config(tmp_path))
    assert done.returncode == 8, done.stderr
    failed = cc.callbacks[-1]
    assert failed["callback_type"] == 2 and failed["content"]["state"] == states.FAILED
    assert message in failed["content"]["description"]
    assert not (tmp_path / "result_files" / "limits.json").exists()  # the application never ran


def test_limit_names_are_those_of_0_10() -> None:
    assert set(sandbox.LIMITS) == {
        "cpu_usage",
        "create_file_size",
        "num_open_files",
        "heap_size",
        "stack_size",
        "rss_size",
        "child_processes",
    }
    assert sandbox.limits_of(None) == [] and sandbox.limits_of({}) == [] and sandbox.preexec([]) is None


# --- the server's answer to callback 0, on both storage backends --------------------------------


@pytest_twisted.ensureDeferred
async def test_callback_0_answers_sandbox_and_tracing_of_the_description(store: Store) -> None:
    description = {
        "image": "x",
        "container_ram": 64,
        "parameters": ["--a"],
        "sandbox": {"limits": LIMITS},
        "tracing": {"enabled": True},
    }
    task_id = await store.insert_one(
        "tasks",
        {"application_container_description": description, "input_files": [], "result_files": [], "no_cache": True},
    )
    container_id = await store.insert_one(APP, {"task_id": [task_id], "state": states.PROCESSING, "callbacks": []})
    vault = Vault(store, b"k" * 32)
    callbacks = Callbacks(store, lifecycle=None, data_container_address=None, wake=lambda: None, vault=vault)  # type: ignore[arg-type]
    body = {
        "callback_key": vault.callback_key(APP, container_id),
        "callback_type": 0,
        "container_id": container_id,
        "content": {"state": states.SUCCESS, "description": "Container started."},
    }
    answer = await callbacks.handle(APP, body)
    assert answer["sandbox"] == {"limits": LIMITS} and answer["tracing"] == {"enabled": True}
    assert answer["parameters"] == ["--a"] and answer["task_id"] == str(task_id)
