"""Two daemons on one Docker engine leave each other's containers alone.

Two real ``twistd -n ccserver`` processes, each with its own store (one embedded, one on
FerretDB) and data directory, share the local dockerd.  Daemon B runs a long task; daemon A
runs a task of its own, is restarted (its start-up reconcile) and keeps running full
scheduling rounds (its periodic reconcile and clean-up): B's container keeps running and B's
task stays on its first trial.  Each daemon's identity survives its restart, every container carries its
maker's identity, and a container of an older ccserver without the label that A's store does
not know is left alone, with one warning.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import pytest_twisted
from bson import ObjectId
from twisted.internet.defer import DeferredList
from twisted.internet.threads import deferToThread

from ccserver.cluster.docker_ops import DAEMON_LABEL, KIND_LABEL
from ccserver.identity import DaemonIdentity
from ccserver.storage.base import Store
from tests.e2e.conftest import ccserver, daemon_log, engine  # noqa: F401
from tests.e2e.harness import Harness, sleep, wait_for
from tests.resilience.conftest import gateway  # noqa: F401
from tests.resilience.harness import Cluster, wait_until

BUSYBOX = "ccserver-test/busybox:1"
#: A keeps running full rounds (every 2 s) for this long while B's container runs
WATCH_SECONDS = 10.0


@pytest.fixture
def two_daemons(tmp_path: Path, gateway: str, request: pytest.FixtureRequest) -> Iterator[tuple[Cluster, Cluster]]:  # noqa: F811
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = Cluster(tmp_path / "a", gateway)
    b = Cluster(tmp_path / "b", gateway, request.getfixturevalue("ferretdb").uri)
    try:
        yield a, b
    finally:
        print("=== daemon A ===\n" + a.output()[-10000:] + "\n=== daemon B ===\n" + b.output()[-10000:])
        a.close()
        b.close()


def container(client: docker.DockerClient, name: str) -> dict[str, Any] | None:
    found = client.api.containers(all=True, filters={"name": name})
    return next((c for c in found if c["Names"][0].lstrip("/") == name), None)


def app_container_name(c: Cluster, task_id: str) -> str:
    docs = wait_until(
        lambda: c.query("application-containers", [{"$match": {"task_id": task_id}}]),
        lambda d: bool(d),
        60,
        "the application container document",
    )
    return str(docs[0]["_id"])


def wait_task(c: Cluster, task_id: str, timeout: float = 120) -> dict[str, Any]:
    def get() -> dict[str, Any]:
        return c.query("tasks", [{"$match": {"_id": task_id}}])[0]

    return wait_until(get, lambda t: t["state"] in (3, 4, 5), timeout, f"task {task_id} to end", interval=0.5)


def test_a_restarted_daemon_leaves_another_daemons_running_container_alone(
    two_daemons: tuple[Cluster, Cluster],
) -> None:
    a, b = two_daemons
    a.start()
    b.start()
    assert a.identity and b.identity and a.identity != b.identity
    legacy_name = str(ObjectId())
    docker_engine = a.engine
    docker_engine.containers.run(
        BUSYBOX, ["sleep", "300"], name=legacy_name, labels={KIND_LABEL: "application"}, detach=True
    )
    try:
        code, answer = b.call("POST", "/tasks", b.task("b-long", sleep=WATCH_SECONDS + 15))
        assert code == 200, answer
        b_task = answer["_id"]
        b_name = app_container_name(b, b_task)
        running = wait_until(
            lambda: container(docker_engine, b_name),
            lambda c: c is not None and c["State"] == "running",
            60,
            "B's container to run",
        )
        assert running["Labels"][DAEMON_LABEL] == b.identity

        # A runs a task of its own to its end (its containers are created, collected, removed)
        code, answer = a.call("POST", "/tasks", a.task("a-short"))
        assert code == 200, answer
        a_name = app_container_name(a, answer["_id"])
        assert wait_task(a, answer["_id"])["state"] == 3
        wait_until(lambda: container(docker_engine, a_name), lambda c: c is None, 60, "A's container to be removed")

        # A restarts: its start-up reconcile, then full rounds with reconcile and clean-up
        identity = a.identity
        a.terminate()
        a.start()
        assert a.identity == identity  # kept in its store
        deadline = time.monotonic() + WATCH_SECONDS
        while time.monotonic() < deadline:
            seen = container(docker_engine, b_name)
            assert seen is not None and seen["State"] == "running", f"B's running container was touched: {seen}"
            time.sleep(0.5)
        assert container(docker_engine, legacy_name) is not None  # an unlabelled stranger: left alone
        assert a.daemon is not None
        assert a.daemon.output.count(f"container {legacy_name} on node") == 1  # warned about once per run
        # and B's own view: its task is still processing, on its first trial
        task = b.query("tasks", [{"$match": {"_id": b_task}}])[0]
        assert task["state"] == 2 and task["trials"] == 0, task  # processing, never failed
    finally:
        try:
            docker_engine.api.remove_container(legacy_name, force=True)
        except docker.errors.NotFound:
            pass


# --- the identity in the store, on both backends ---------------------------------------------


@pytest_twisted.ensureDeferred
async def test_the_identity_is_made_once_and_kept_in_the_store(store: Store) -> None:
    first = DaemonIdentity(store)
    ids = await DeferredList([first.get() for _ in range(5)], fireOnOneErrback=True, consumeErrors=True)
    values = {value for _, value in ids}
    assert len(values) == 1 and len(values.pop()) == 32
    assert first.value == await first.get()
    assert await store.count("daemon", {}) == 1  # concurrent asks share one read and one write
    again = DaemonIdentity(store)  # a restart: a new process on the same store
    assert await again.get() == first.value


def test_the_identity_is_unknown_before_it_was_read() -> None:
    with pytest.raises(RuntimeError, match="not read from the store yet"):
        assert DaemonIdentity(None).value  # type: ignore[arg-type]


# --- the event stream: ends of other daemons' containers are none of ours ---------------------


@pytest_twisted.ensureDeferred
async def test_a_container_of_another_daemon_that_ends_is_left_alone(ccserver: Harness) -> None:  # noqa: F811
    docker_engine = ccserver.engine
    mine, foreign = str(ObjectId()), str(ObjectId())
    other_daemon = "0" * 32
    try:
        for name, owner in ((foreign, other_daemon), (mine, ccserver.root.identity.value)):
            labels = {KIND_LABEL: "application", DAEMON_LABEL: owner}
            await deferToThread(
                docker_engine.containers.run, BUSYBOX, ["sleep", "0"], name=name, labels=labels, detach=True
            )
        # ours ends unknown to our store: removed through the event stream (the control)
        await wait_for(
            lambda: deferToThread(container, docker_engine, mine),
            lambda c: c is None,
            30,
            "our ended, unknown container to be removed",
        )
        # the other daemon's ended at the same moment, and stays for its owner to collect
        await sleep(2 * ccserver.root.config.server.scheduling_interval_seconds)
        seen = await deferToThread(container, docker_engine, foreign)
        assert seen is not None and seen["State"] == "exited", seen
    finally:
        for name in (mine, foreign):
            try:
                await deferToThread(docker_engine.api.remove_container, name, force=True)
            except docker.errors.NotFound:
                pass
