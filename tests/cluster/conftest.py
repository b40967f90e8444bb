"""Fixtures of the cluster tests: extra Docker engines on this machine, and ccservers that use
several of them as nodes (configured through ``docker.nodes``).

The engines live for the session (start and image load take a few seconds each); a test that
kills one leaves it to ``engines`` to start it again before the next test.  Their containers
reach the daemon and the archive on the main bridge gateway, like the main engine's do.
"""

from __future__ import annotations

import concurrent.futures
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.web.server import Site

from ccserver.cluster.docker_ops import KIND_LABEL
from tests.cluster.engines import Engine, TLSFiles, free_port, make_other_ca, make_tls_files, save_images
from tests.e2e.conftest import daemon_log, e2e_config, engine, gateway, start_harness, stop_harness  # noqa: F401
from tests.e2e.harness import APP_IMAGE, NOINPUT_IMAGE, Archive, Harness, wait_for

MAIN_URL = "unix:///var/run/docker.sock"
IMAGES = [APP_IMAGE, NOINPUT_IMAGE]
#: health settings of the cluster tests: a short heartbeat, so that nodes are found dead or
#: back quickly; an api_timeout that a loaded CI machine still meets when it starts containers
HEARTBEAT = 1.0
API_TIMEOUT = 10.0


@dataclass
class Engines:
    """The extra engines of the session: three plain ones on unix sockets and one on TCP with
    mutual TLS (listening on 127.0.0.1 and 127.0.0.2; its certificate names 127.0.0.1 and
    ``ccserver-engine.test``).

    Tests run their tasks on these rather than on the main engine, which other test runs on the
    machine share (the end-to-end tests remove every ccserver container they find there)."""

    e1: Engine
    e2: Engine
    e3: Engine
    tls_engine: Engine
    tls: TLSFiles
    other_ca: str
    archive: Path
    all: list[Engine] = field(default_factory=list)

    def by_url(self) -> dict[str, Engine]:
        return {e.base_url: e for e in self.all}


@pytest.fixture(scope="session")
def engines(engine: Any) -> Iterator[Engines]:  # noqa: F811
    root = Path(tempfile.mkdtemp(prefix="ccengines-", dir="/tmp"))
    tls = make_tls_files(root / "tls")
    found = Engines(
        e1=Engine("e1", root / "e1"),
        e2=Engine("e2", root / "e2"),
        e3=Engine("e3", root / "e3"),
        tls_engine=Engine("tls", root / "tls-engine", tls=tls, tcp_hosts=("127.0.0.1", "127.0.0.2")),
        tls=tls,
        other_ca=make_other_ca(root / "other-ca" / "ca.pem"),
        archive=root / "images.tar",
    )
    found.all = [found.e1, found.e2, found.e3, found.tls_engine]
    try:
        save_images(IMAGES, found.archive)
        for e in found.all:
            e.start()
        with concurrent.futures.ThreadPoolExecutor(len(found.all)) as pool:
            for future in [pool.submit(e.load_images, found.archive, IMAGES) for e in found.all]:
                future.result()
        yield found
    finally:
        problems = []
        for e in found.all:
            try:
                e.destroy()
            except Exception as error:
                problems.append(str(error))
        import shutil

        shutil.rmtree(root, ignore_errors=True)
        if problems:
            raise RuntimeError("; ".join(problems))


def ccserver_containers(client: docker.DockerClient) -> list[str]:
    return [c["Names"][0].lstrip("/") for c in client.api.containers(all=True, filters={"label": KIND_LABEL})]


@pytest.fixture
def running_engines(engines: Engines) -> Iterator[Engines]:
    """The engines, each started again if an earlier test killed it; afterwards no container
    of ccserver may be left on any of them."""
    for e in engines.all:
        e.start()
        client = e.client(timeout=30)
        try:  # left over by an earlier test that failed while the engine was down
            for name in ccserver_containers(client):
                client.api.remove_container(name, force=True)
        finally:
            client.close()
    yield engines
    leftovers = []
    for e in engines.all:
        if not e.running:
            continue
        client = e.client(timeout=30)
        try:
            for name in ccserver_containers(client):
                leftovers.append(f"{e.name}:{name}")
                client.api.remove_container(name, force=True)
        finally:
            client.close()
    assert not leftovers, f"containers left behind on the extra engines: {leftovers}"


def unix_node(e: Engine) -> dict[str, Any]:
    return {"base_url": e.base_url}


def tls_node(e: Engine, host: str, ca: str, tls: TLSFiles, assert_hostname: Any = None) -> dict[str, Any]:
    settings: dict[str, Any] = {"verify": ca, "client_cert": [tls.client_cert, tls.client_key]}
    if assert_hostname is not None:
        settings["assert_hostname"] = assert_hostname
    return {"base_url": e.tcp_url(host), "tls": settings}


MakeCluster = Callable[..., Awaitable[Harness]]


@dataclass
class Notifications:
    """A second archive on loopback for ``dead_node_notification`` (the daemon itself sends
    those, so it must be known before the daemon's configuration is)."""

    archive: Archive
    url: str
    port: Any


@pytest_twisted.async_yield_fixture
async def cluster(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    engine: Any,  # noqa: F811 (the e2e fixture, imported above)
    gateway: str,  # noqa: F811
    daemon_log: Any,  # noqa: F811
    running_engines: Engines,
) -> AsyncIterator[MakeCluster]:
    """``await cluster(backend, nodes, allocation=..., docker_settings={...}, errors={...})``: a started
    ccserver with these ``docker.nodes``; ``harness.notifications`` receives its dead-node
    notifications (basic auth ``cc``/``dead-pw``).  Stopped after the test."""
    started: list[Harness] = []
    clients: list[Any] = []

    async def make(
        backend: str,
        nodes: dict[str, dict[str, Any]],
        allocation: str = "spread",
        docker_settings: dict[str, Any] | None = None,
        server_settings: dict[str, Any] | None = None,
        errors: dict[str, Any] | None = None,
        wait_healthy: bool = True,
        main_engine: bool = False,
    ) -> Harness:
        notify_archive = Archive()
        notify_port = reactor.listenTCP(0, Site(notify_archive), interface="127.0.0.1")
        notifications = Notifications(
            notify_archive, f"http://127.0.0.1:{notify_port.getHost().port}/notify", notify_port
        )
        port = free_port(gateway)
        config = e2e_config(
            tmp_path / f"ccserver-{len(started)}",
            gateway,
            backend,
            request,
            server={
                "listen": [f"tcp:{port}:interface={gateway}"],
                "host": f"http://{gateway}:{port}",
                "scheduling_interval_seconds": 2,
                **(server_settings or {}),
            },
            docker={
                "pull_policy": "never",
                "thread_limit": 8,
                "api_timeout": API_TIMEOUT,
                "heartbeat_seconds": HEARTBEAT,
                "nodes": nodes,
                **(docker_settings or {}),
            },
            defaults={
                "data_container_description": {"image": APP_IMAGE, "container_ram": 128},
                "scheduling_strategies": {"container_allocation": allocation},
                "error_handling": {
                    "max_task_trials": 3,
                    "dead_node_invalidation": True,
                    "dead_node_notification": {
                        "url": notifications.url,
                        "auth": {"auth_type": "basic", "username": "cc", "password": "dead-pw"},
                    },
                    **(errors or {}),
                },
            },
        )
        # the engine whose leftovers stop_harness checks: the main one only when the test uses it
        primary = engine if main_engine else running_engines.e1.client(timeout=30)
        if not main_engine:
            clients.append(primary)
        try:
            harness = await start_harness(config, primary, gateway)
        except BaseException:
            await notify_port.stopListening()
            raise
        harness.notifications = notifications  # type: ignore[attr-defined]
        started.append(harness)
        if wait_healthy:
            await wait_for(
                lambda: harness.root.cluster.healthy_names(),
                lambda names: len(names) == len(nodes),
                30,
                "every node to be healthy",
            )
        return harness

    yield make
    for harness in started:
        try:
            await wait_for_no_containers(harness, running_engines)
            await stop_harness(harness)
        except BaseException:
            if harness.root.running:
                await harness.root.stopService()
            raise
        finally:
            await harness.notifications.port.stopListening()  # type: ignore[attr-defined]
            print(f"daemon log: {daemon_log}")
    for client in clients:
        client.close()


async def wait_for_no_containers(harness: Harness, engines: Engines) -> None:
    """Every container ccserver started on the extra engines is removed (bounded)."""
    clients = {e.name: e.client(timeout=30) for e in engines.all if e.running}
    try:
        await wait_for(
            lambda: {n: ccserver_containers(c) for n, c in clients.items()},
            lambda found: not any(found.values()),
            60,
            "the task containers on the extra engines to go",
        )
    finally:
        for client in clients.values():
            client.close()
