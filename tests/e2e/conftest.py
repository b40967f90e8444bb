"""Fixtures of the end-to-end tests: a ccserver on the real dockerd, per storage backend."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import docker
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.logger import globalLogPublisher, textFileLogObserver
from twisted.web.server import Site

from ccserver import config as configuration
from ccserver.auth.users import create_user
from ccserver.cluster.engine import bridge_gateway
from ccserver.config import NodeConfig
from ccserver.service import CCServer
from tests.conftest import STORE_BACKENDS
from tests.e2e.harness import APP_IMAGE, NOINPUT_IMAGE, Archive, Harness, wait_for

LOCAL = NodeConfig(name="local", base_url="unix:///var/run/docker.sock", tls=None)


@pytest.fixture(scope="session")
def engine() -> Any:
    client = docker.from_env(timeout=60)
    for image in (APP_IMAGE, NOINPUT_IMAGE):
        client.images.get(image)  # built by scripts/build-test-images; never pulled
    yield client
    client.close()


@pytest.fixture(scope="session")
def gateway(engine: Any) -> str:
    return bridge_gateway(LOCAL, 10)


def e2e_config(
    tmp_path: Any, gateway: str, backend: str, request: pytest.FixtureRequest, **overrides: Any
) -> configuration.Config:
    raw: dict[str, Any] = {
        "server": {
            "listen": [f"tcp:0:interface={gateway}"],
            "data_dir": str(tmp_path / "data"),
            "scheduling_interval_seconds": 2,
        },
        "docker": {"pull_policy": "never", "thread_limit": 8, "api_timeout": 30},
        "defaults": {
            "data_container_description": {"image": APP_IMAGE, "container_ram": 128},
            "error_handling": {"max_task_trials": 3},
        },
    }
    if backend != "embedded":
        uri = (
            request.getfixturevalue("ferretdb").uri
            if backend == "ferretdb"
            else __import__("os").environ["CCSERVER_TEST_MONGODB_URI"]
        )
        raw["mongo"] = {"uri": uri, "db": "cce2e_" + uuid.uuid4().hex[:12]}
    for section, values in overrides.items():
        raw.setdefault(section, {}).update(values)
    return configuration.from_dict(raw, f"<e2e test config, {backend}>")


async def start_harness(config: configuration.Config, engine: Any, gateway: str) -> Harness:
    archive = Archive()
    archive_port = reactor.listenTCP(0, Site(archive), interface=gateway)
    root = CCServer(config, reactor)
    root.startService()
    await root.ready
    await root.identity.get()  # read at start, not waited for by it; our_containers() needs it
    port = root.web.bound()[0][1]
    harness = Harness(
        root=root,
        url=f"http://{gateway}:{port}",
        archive=archive,
        archive_url=f"http://{gateway}:{archive_port.getHost().port}",
        engine=engine,
    )
    harness.archive_port = archive_port  # type: ignore[attr-defined]
    for name, admin in (("alice", False), ("bob", False), ("admin", True)):
        password = "pw-" + uuid.uuid4().hex
        await create_user(root.store, root.hash_pool, name, password, admin)
        harness.users[name] = password
    await wait_for(lambda: root.cluster.healthy_names(), bool, 30, "the local node to be healthy")
    return harness


async def stop_harness(harness: Harness) -> None:
    # nothing of ours may be left behind once every task ended
    await wait_for(lambda: harness.our_containers(), lambda cs: not cs, 60, "all task containers to be removed")
    await harness.root.stopService()
    await harness.archive_port.stopListening()  # type: ignore[attr-defined]


@pytest.fixture
def daemon_log(tmp_path: Any) -> Any:
    """The in-process daemon's log lines go to a file of the test (shown when it fails)."""
    path = tmp_path / "ccserver.log"
    stream = open(path, "w")
    observer = textFileLogObserver(stream)
    globalLogPublisher.addObserver(observer)
    yield path
    globalLogPublisher.removeObserver(observer)
    stream.close()


@pytest_twisted.async_yield_fixture(params=STORE_BACKENDS)
async def ccserver(
    request: pytest.FixtureRequest, tmp_path: Any, engine: Any, gateway: str, daemon_log: Any
) -> AsyncIterator[Harness]:
    async with running(e2e_config(tmp_path, gateway, request.param, request), engine, gateway, daemon_log) as harness:
        yield harness


@asynccontextmanager
async def running(config: configuration.Config, engine: Any, gateway: str, daemon_log: Any) -> AsyncIterator[Harness]:
    """A daemon of ``config`` for one test; at the end nothing of it may be left on the engine
    (what is, is removed after the test failed)."""
    harness = await start_harness(config, engine, gateway)
    try:
        yield harness
    finally:
        try:
            await stop_harness(harness)
        finally:
            for name in harness.our_containers():
                engine.api.remove_container(name, force=True)
            print(f"daemon log: {daemon_log}")
