"""The reference worker in the real test images on the real dockerd (images of scripts/build-test-images).

A FakeCC bound to the docker bridge's gateway address plays ccserver and the data archive. Every
container created here is removed again, also when a test fails.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.worker.fake_cc import FakeCC

docker = pytest.importorskip("docker")

APP_IMAGE = "ccserver-test/app:1"
NOINPUT_IMAGE = "ccserver-test/app-noinput:1"
ENTRY_POINT = "python3 /opt/container_worker"
WAIT_SECONDS = 120
LABEL = "ccserver-test-worker"


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    try:
        engine = docker.from_env(timeout=60)
        engine.ping()
    except Exception as e:
        pytest.fail(f"no Docker engine to run the worker images on ({e}); run scripts/test", pytrace=False)
    for image in (APP_IMAGE, NOINPUT_IMAGE):
        try:
            engine.images.get(image)
        except docker.errors.ImageNotFound:
            pytest.fail(f"image {image} is missing: run scripts/build-test-images", pytrace=False)
    yield engine
    engine.close()


def bridge_gateway(engine: Any) -> str:
    """The host's address on the default bridge (Docker 20.10 may omit Gateway: first host of Subnet)."""
    config = engine.networks.get("bridge").attrs["IPAM"]["Config"][0]
    if config.get("Gateway"):
        return config["Gateway"].split("/")[0]
    return str(next(ipaddress.ip_network(config["Subnet"], strict=False).hosts()))


@pytest.fixture
def cc(client: Any) -> Iterator[FakeCC]:
    with FakeCC(host=bridge_gateway(client)) as fake:
        yield fake


@pytest.fixture
def containers(client: Any) -> Iterator[list[Any]]:
    created: list[Any] = []
    yield created
    for container in created:
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass


def start(client: Any, created: list[Any], image: str, settings: dict[str, Any], ram_mb: int = 256) -> Any:
    """Starts a container as ccserver does (§6): name = container id, `<entry_point> '<settings>'`, RAM limits."""
    container = client.containers.create(
        image,
        command=f"{ENTRY_POINT} '{json.dumps(settings)}'",
        name=settings.get("container_id"),
        mem_limit=f"{ram_mb}m",
        memswap_limit=f"{ram_mb}m",
        labels={LABEL: "1"},
        detach=True,
    )
    created.append(container)
    container.start()
    return container


def wait_exit(container: Any) -> tuple[int, str]:
    try:
        status = container.wait(timeout=WAIT_SECONDS)["StatusCode"]
    except Exception as e:  # requests' ReadTimeout / ConnectionError
        pytest.fail(f"container did not exit within {WAIT_SECONDS} s: {e}; logs:\n{logs(container)}")
    return status, logs(container)


def logs(container: Any) -> str:
    try:
        return container.logs(stdout=True, stderr=True).decode("utf-8", "replace")[-4000:]
    except Exception as e:
        return f"(no logs: {e})"


def settings_for(cc: FakeCC, container_type: str) -> dict[str, Any]:
    return cc.settings(container_type, container_id="cctest" + secrets.token_hex(10))


def states(cc: FakeCC, container_id: str) -> list[tuple[int, int]]:
    return [(c["callback_type"], c["content"]["state"]) for c in cc.callbacks_of(container_id)]


def result_files(cc: FakeCC) -> list[dict[str, Any]]:
    return [
        {
            "local_result_file": "copy",
            "connector_type": "http",
            "connector_access": {"url": cc.url + "/results/copy", "method": "PUT"},
        },
        {
            "local_result_file": "parameters",
            "connector_type": "http_json",
            "add_meta_data": True,
            "connector_access": {"url": cc.url + "/results/parameters"},
        },
        {
            "local_result_file": "optional_missing",
            "connector_type": "http",
            "connector_access": {"url": cc.url + "/results/optional", "method": "POST"},
        },
        None,
    ]


def test_application_container(client: Any, cc: FakeCC, containers: list[Any]) -> None:
    cc.files["data.txt"] = secrets.token_bytes(2 * 1024 * 1024 + 3)
    settings = settings_for(cc, "application")
    cc.works[settings["container_id"]] = {
        "task_id": "task42",
        "parameters": ["--sleep", "0.2", "a b"],
        "sandbox": None,
        "tracing": None,
        "input_files": [{"connector_type": "http", "connector_access": {"url": cc.url + "/files/data.txt"}}],
        "result_files": result_files(cc),
    }
    container = start(client, containers, APP_IMAGE, settings)
    status, output = wait_exit(container)
    assert status == 0, output
    assert states(cc, settings["container_id"]) == [(0, 3), (1, 3), (2, 3), (3, 3)], output
    assert cc.uploaded("copy")[0]["body"] == cc.files["data.txt"]
    assert json.loads(cc.uploaded("parameters")[0]["body"]) == {
        "argv": ["--sleep", "0.2", "a b"],
        "application_container_id": settings["container_id"],
        "task_id": "task42",
    }
    assert cc.uploaded("optional") == []
    telemetry = cc.callbacks_of(settings["container_id"])[2]["content"]["telemetry"]
    assert telemetry["return_code"] == 0 and telemetry["wall_time"] >= 0.2
    assert telemetry["input_file_sizes"] == [3]


def test_noinput_image_with_object_parameters(client: Any, cc: FakeCC, containers: list[Any]) -> None:
    settings = settings_for(cc, "application")
    parameters = {"msg": "it's a test", "n": 3}
    cc.works[settings["container_id"]] = {
        "task_id": "task43",
        "parameters": parameters,
        "sandbox": None,
        "tracing": None,
        "input_files": [],
        "result_files": [
            {
                "local_result_file": "parameters",
                "connector_type": "http",
                "connector_access": {"url": cc.url + "/results/parameters", "method": "POST"},
            }
        ],
    }
    status, output = wait_exit(start(client, containers, NOINPUT_IMAGE, settings))
    assert status == 0, output
    assert states(cc, settings["container_id"]) == [(0, 3), (1, 3), (2, 3), (3, 3)], output
    argv = json.loads(cc.uploaded("parameters")[0]["body"])["argv"]
    assert [json.loads(a) for a in argv] == [parameters]


def written_bytecode(container: Any) -> list[str]:
    """The bytecode files a container wrote into its own layer (docker diff)."""
    return [c["Path"] for c in container.diff() or [] if "__pycache__" in c["Path"] or c["Path"].endswith(".pyc")]


@pytest.mark.parametrize("image", [APP_IMAGE, NOINPUT_IMAGE])
def test_the_images_carry_the_workers_bytecode(client: Any, cc: FakeCC, containers: list[Any], image: str) -> None:
    # compiled at build time (scripts/build-test-images): a container neither compiles the
    # worker's modules when it starts nor writes them into its layer
    settings = settings_for(cc, "application")
    cc.works[settings["container_id"]] = {"task_id": "t", "input_files": [], "result_files": [], "parameters": []}
    if image == APP_IMAGE:
        cc.files["data.txt"] = b"x"
        cc.works[settings["container_id"]]["input_files"] = [
            {"connector_type": "http", "connector_access": {"url": cc.url + "/files/data.txt"}}
        ]
    container = start(client, containers, image, settings)
    status, output = wait_exit(container)
    assert status == 0, output
    assert states(cc, settings["container_id"]) == [(0, 3), (1, 3), (2, 3), (3, 3)], output
    assert written_bytecode(container) == []


def test_data_container_feeds_application_container(client: Any, cc: FakeCC, containers: list[Any]) -> None:
    cc.files["data.txt"] = b"cached through the data container\n" * 1000
    key = secrets.token_hex(16)
    data_settings = settings_for(cc, "data")
    cc.works[data_settings["container_id"]] = {
        "input_files": [{"connector_type": "http", "connector_access": {"url": cc.url + "/files/data.txt"}}],
        "input_file_keys": [key],
    }
    data_container = start(client, containers, APP_IMAGE, data_settings, ram_mb=128)
    ready = cc.wait_for(lambda: len(cc.callbacks_of(data_settings["container_id"])) >= 2, timeout=WAIT_SECONDS)
    assert ready, logs(data_container)
    assert states(cc, data_settings["container_id"]) == [(0, 3), (1, 3)]
    data_container.reload()
    address = data_container.attrs["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]

    app_settings = settings_for(cc, "application")
    cc.works[app_settings["container_id"]] = {
        "task_id": "task44",
        "parameters": [],
        "sandbox": None,
        "tracing": None,
        "input_files": [{"connector_type": "http", "connector_access": {"url": f"http://{address}/{key}"}}],
        "result_files": result_files(cc)[:1],
    }
    status, output = wait_exit(start(client, containers, APP_IMAGE, app_settings))
    assert status == 0, output
    assert states(cc, app_settings["container_id"]) == [(0, 3), (1, 3), (2, 3), (3, 3)], output
    assert cc.uploaded("copy")[0]["body"] == cc.files["data.txt"]

    # still serving; a docker stop ends it through SIGTERM (PID 1 has a handler), not by a SIGKILL
    started = time.monotonic()
    data_container.stop(timeout=20)
    data_container.reload()
    assert data_container.attrs["State"]["ExitCode"] == 143, logs(data_container)
    assert time.monotonic() - started < 15
    assert key not in logs(data_container)


def test_memory_limit_fails_the_application(client: Any, cc: FakeCC, containers: list[Any]) -> None:
    cc.files["data.txt"] = b"x"
    settings = settings_for(cc, "application")
    cc.works[settings["container_id"]] = {
        "task_id": "task45",
        "parameters": ["--alloc", "300"],
        "sandbox": None,
        "tracing": None,
        "input_files": [{"connector_type": "http", "connector_access": {"url": cc.url + "/files/data.txt"}}],
        "result_files": result_files(cc),
    }
    status, output = wait_exit(start(client, containers, APP_IMAGE, settings, ram_mb=96))
    assert status == 9, output
    assert states(cc, settings["container_id"]) == [(0, 3), (1, 3), (2, 4)], output
    telemetry = cc.callbacks_of(settings["container_id"])[2]["content"]["telemetry"]
    assert telemetry["return_code"] != 0
    assert "allocated" not in telemetry["std_out"]
    assert cc.uploads == []


def test_inspection_container(client: Any, cc: FakeCC, containers: list[Any]) -> None:
    settings = {"container_type": "inspection", "inspection_url": cc.url}
    container = client.containers.create(
        APP_IMAGE,
        command=f"{ENTRY_POINT} '{json.dumps(settings)}'",
        labels={LABEL: "1"},
        mem_limit="64m",
        memswap_limit="64m",
    )
    containers.append(container)
    container.start()
    status, output = wait_exit(container)
    assert status == 0, output
