"""The follower in process, on the real Docker engine and the real store: containers it is
told of by the engine's events or finds running, a dropped connection opened again with
``since`` (no line lost or repeated), the end, a dead node, a stop; no connection left."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import docker
import pytest
import pytest_twisted
from bson import ObjectId
from twisted.internet import reactor
from twisted.internet.threads import deferToThread

from ccserver import config as configuration
from ccserver.cluster.docker_ops import DAEMON_LABEL, KIND_LABEL
from ccserver.identity import DaemonIdentity
from ccserver.livelogs.follower import LogFollower
from ccserver.storage.base import Store
from ccserver.threads import ThreadPoolService
from tests.e2e.harness import wait_for

IMAGE = "ccserver-test/busybox:1"


def ticker(count: int) -> list[str]:
    return ["sh", "-c", f'i=0; while [ $i -lt {count} ]; do i=$((i+1)); echo "tick $i"; sleep 0.5; done']


class Setup:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.engine = docker.from_env(timeout=60)
        self.identity = DaemonIdentity(store)
        self.pool = ThreadPoolService(reactor, "test-logs", 2)
        config = configuration.from_dict({"logs": {"tail_bytes": 4096}}, None, {})
        self.follower = LogFollower(config, store, self.identity, reactor, self.pool)
        self.names: list[str] = []

    async def run(self, command: list[str]) -> str:
        """A running container of this daemon's, with an application container document."""
        name = str(ObjectId())
        daemon = await self.identity.get()
        await self.store.insert_one("application_containers", {"_id": ObjectId(name), "state": 2, "task_id": []})
        self.names.append(name)
        labels = {KIND_LABEL: "application", DAEMON_LABEL: daemon}
        await deferToThread(self.engine.containers.run, IMAGE, command, name=name, labels=labels, detach=True)
        return name

    def texts(self, name: str) -> list[str]:
        return [line.text for line in self.follower.lines(name)]

    async def close(self) -> None:
        if self.follower.running:
            await self.follower.stopService()
        self.pool.stopService()
        for name in self.names:
            try:
                await deferToThread(self.engine.api.remove_container, name, force=True)
            except docker.errors.NotFound:
                pass
        self.engine.close()


@pytest_twisted.async_yield_fixture
async def setup(store: Store) -> AsyncIterator[Setup]:
    s = Setup(store)
    s.pool.startService()
    try:
        yield s
    finally:
        await s.close()


@pytest_twisted.ensureDeferred
async def test_follows_started_containers_survives_a_dropped_connection_and_lets_go_at_the_end(
    setup: Setup,
) -> None:
    follower = setup.follower
    await follower.startService()
    follower.node_healthy("local")
    await wait_for(lambda: follower._watchers["local"].stream, bool, 30, "the node's event stream to open")
    name = await setup.run(ticker(16))
    await wait_for(lambda: setup.texts(name), lambda t: len(t) >= 3, 30, "three lines")
    assert follower.is_running(name) and follower.following() == 1 and follower.open_connections() == 1

    # the connection breaks while the container runs: opened again with since=, nothing lost
    stream = follower._tails[name].stream
    assert stream is not None and stream.transport is not None
    stream.transport._producer.loseConnection()  # type: ignore[attr-defined]
    await wait_for(lambda: follower._tails[name].stream, lambda s: s is not None and s is not stream, 30, "a new one")
    assert follower.open_connections() == 1

    await wait_for(lambda: follower.is_running(name), lambda r: not r, 60, "the follow to end with the container")
    assert follower.following() == 0 and follower.open_connections() == 0
    doc = await wait_for(
        lambda: setup.store.find_one("application_containers", {"_id": ObjectId(name)}),
        lambda d: "log_tail" in d,
        30,
        "the tail kept in the document",
    )
    assert [line["text"] for line in doc["log_tail"]["lines"]] == [f"tick {i}" for i in range(1, 17)]
    assert doc["log_tail"]["truncated"] is False
    await wait_for(lambda: follower.known(name), lambda k: not k, 10, "the tail to leave memory once kept")


@pytest_twisted.ensureDeferred
async def test_finds_running_containers_and_stops_on_a_dead_node_and_on_stop(setup: Setup) -> None:
    first = await setup.run(ticker(600))
    second = await setup.run(ticker(600))
    follower = setup.follower
    await follower.startService()
    follower.node_healthy("local")  # as the cluster tells at start-up
    for name in (first, second):
        await wait_for(lambda n=name: setup.texts(n), lambda t: len(t) >= 2, 30, "lines of a container found running")
    assert follower.following() == 2 and follower.open_connections() == 2

    follower.node_dead("local")
    await wait_for(follower.open_connections, lambda n: n == 0, 10, "every connection closed")
    assert follower.following() == 0 and "local" not in follower._watchers
    # what was read is kept in the container's document (the endpoint reads it there)
    doc = await wait_for(
        lambda: setup.store.find_one("application_containers", {"_id": ObjectId(first)}),
        lambda d: "log_tail" in d,
        30,
        "the tail kept in the document",
    )
    assert [line["text"] for line in doc["log_tail"]["lines"]][:2] == ["tick 1", "tick 2"]

    follower.node_healthy("local")  # back: followed again
    await wait_for(follower.following, lambda n: n == 2, 30, "both followed again")
    await wait_for(follower.open_connections, lambda n: n == 2, 30, "two connections")
    await follower.stopService()
    assert follower.following() == 0 and follower.open_connections() == 0


@pytest_twisted.ensureDeferred
async def test_no_more_than_max_followed(setup: Setup) -> None:
    config = configuration.from_dict({"logs": {"max_followed": 1}}, None, {})
    follower = setup.follower = LogFollower(config, setup.store, setup.identity, reactor, setup.pool)
    first = await setup.run(ticker(600))
    second = await setup.run(ticker(600))
    await follower.startService()
    follower.node_healthy("local")
    await wait_for(follower.following, lambda n: n == 1, 30, "one container followed")
    await wait_for(lambda: setup.texts(first) or setup.texts(second), bool, 30, "its lines")
    assert follower.following() == 1 and not (follower.known(first) and follower.known(second))
    follower.stop(first if follower.known(first) else second)
    assert follower.following() == 0
    await wait_for(follower.open_connections, lambda n: n == 0, 10, "its connection closed")


@pytest_twisted.ensureDeferred
async def test_a_stop_while_the_stream_opens_leaves_no_connection(setup: Setup) -> None:
    name = await setup.run(ticker(600))
    follower = setup.follower
    await follower.startService()
    follower.follow("local", name)
    follower.stop(name)  # before its stream is open
    done = follower._tails[name].done
    assert done is not None
    await wait_for(lambda: done.called, bool, 30, "the follow to end")
    assert follower.open_connections() == 0 and follower.following() == 0


def test_nothing_is_followed_when_off(store: Any) -> None:
    config = configuration.from_dict({"logs": {"follow": False}}, None, {})
    follower = LogFollower(config, store, DaemonIdentity(store), reactor, ThreadPoolService(reactor, "x", 1))
    follower.follow("local", "abc")
    assert not follower.known("abc") and follower.following() == 0


@pytest.fixture(autouse=True)
def _image() -> None:
    client = docker.from_env(timeout=30)
    try:
        client.images.get(IMAGE)  # built by scripts/build-test-images, never pulled
    finally:
        client.close()
