"""``docker.net``: every container joins that network and a data container is addressed by its
name there (cc-protocol §6).  The network is a user-defined bridge on the main engine, as an
overlay network would be on a swarm; it is made for the test and removed after it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from bson import ObjectId

from ccserver import states
from tests.cluster.conftest import MAIN_URL, MakeCluster
from tests.e2e.harness import app_task, wait_for


@pytest.fixture
def docker_net(engine: Any) -> Iterator[str]:
    """A user-defined bridge network on the main engine (set up before, and so removed after,
    the daemon of the test and its containers)."""
    name = f"ccserver-test-net-{uuid.uuid4().hex[:8]}"
    network = engine.networks.create(name, driver="bridge", labels={"io.curious-containers.test": "1"})
    yield name
    deadline = time.monotonic() + 60
    while True:
        network.reload()
        if not network.attrs.get("Containers") or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    for container_id in network.attrs.get("Containers") or {}:
        network.disconnect(container_id, force=True)
    network.remove()


class Recording(dict[Any, str]):
    """The scheduler's cache of data container addresses, remembering every entry."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[Any, str] = {}

    def __setitem__(self, key: Any, value: str) -> None:
        self.seen[key] = value
        super().__setitem__(key, value)


@pytest_twisted.ensureDeferred
async def test_containers_join_docker_net_and_data_containers_are_reached_by_name(
    docker_net: str, cluster: MakeCluster, engine: Any
) -> None:
    harness = await cluster(
        "embedded", {"local": {"base_url": MAIN_URL}}, docker_settings={"net": docker_net}, main_engine=True
    )
    addresses = harness.root.scheduler._addresses = Recording()
    data = b"through the data container, by name\n"
    harness.archive.inputs["net.txt"] = data
    tag = uuid.uuid4().hex[:10]
    code, body = await harness.post("/tasks", app_task(harness.archive_url, tag, ["net.txt"], params=["--sleep", "3"]))
    assert code == 200, body
    app = await wait_for(
        lambda: harness.root.store.find_one("application_containers", {"task_id": ObjectId(body["_id"])}),
        lambda a: a is not None and a["state"] in (states.PROCESSING, *states.END_STATES),
        120,
        "the application container to run",
    )
    assert app["state"] == states.PROCESSING, app["transitions"]
    dc_id = app["data_container_ids"][0]
    for name in (str(app["_id"]), str(dc_id)):
        networks = engine.api.inspect_container(name)["NetworkSettings"]["Networks"]
        assert list(networks) == [docker_net], (name, list(networks))

    task = await harness.wait_task(body["_id"], states.END_STATES, timeout=120)
    assert task["state"] == states.SUCCESS, task["transitions"]
    assert harness.archive.results[f"{tag}-copy"] == data
    assert harness.archive.downloads["net.txt"] == 1  # once, by the data container
    # the application container was given the data container's name, not an address: the
    # launcher wrote it into the data container's document, and no callback asked Docker
    dc = await harness.root.store.find_one("data_containers", {"_id": dc_id})
    assert dc is not None and dc["address"] == str(dc_id)
    assert addresses.seen == {}
