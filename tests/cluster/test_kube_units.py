"""A Kubernetes cluster as a node of the Cluster service, with a fake KubeNode (the pure
logic: health, dead cluster → retries, stuck pods → a trial, placement traits).  The real
cluster is in tests/kube."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest_twisted
from bson import ObjectId
from twisted.internet import reactor
from twisted.internet.task import Clock, deferLater

from ccserver import config as configuration
from ccserver import states
from ccserver.cluster.backend import ContainerExists, KubeBackend
from ccserver.cluster.service import Cluster
from ccserver.config import KubeClusterConfig, KubernetesConfig
from ccserver.identity import DaemonIdentity
from ccserver.kubernetes.node import KubeConflict, KubeUnavailable
from ccserver.lifecycle import Lifecycle
from ccserver.scheduling.service import Scheduler
from ccserver.storage.base import Store
from ccserver.threads import ThreadPoolService
from ccserver.vault import Vault
from ccserver.wiring import CallbackAddress

CA_PROBLEM = "kubernetes.clusters.k.ca_file: the API server's certificate is not signed by this CA"


class FakeKube:
    """A KubeNode whose answers the test sets."""

    def __init__(self, config: KubeClusterConfig, events: Any) -> None:
        self.name = config.name
        self.config = config
        self.pull_policy = "if-not-present"
        self.callback_base = config.callback_url.rstrip("/")
        self.events = events
        #: the label selectors Jobs were listed by, and the Jobs removed
        self.listed: list[str] = []
        self.removed: list[str] = []
        self.jobs: list[str] = []
        self.problem: Exception | None = None
        self.infos = 0
        self.watching: str | None = None
        self.created: list[tuple[Any, ...]] = []

    async def info(self) -> tuple[int, int]:
        self.infos += 1
        if self.problem is not None:
            raise self.problem
        return 6000, 3

    async def create(
        self, name: str, image: str, command: str, ram_mb: int, kind: str, daemon: str, cpus: float | None
    ) -> None:
        if any(c[0] == name for c in self.created):
            raise KubeConflict(name)
        self.created.append((name, image, command, ram_mb, kind, daemon, cpus))

    async def start(self, name: str) -> None: ...

    async def remove(self, name: str, daemon: str) -> bool:
        self.removed.append(name)
        return True

    async def jobs_labelled(self, selector: str) -> list[str]:
        self.listed.append(selector)
        return list(self.jobs)

    async def state(self, name: str) -> tuple[str, int]:
        return "running", 0

    async def ours(self, daemon: str) -> dict[str, tuple[str, str, bool]]:
        return {}

    async def logs_tail(self, name: str, limit: int, container: str = "app") -> str:
        return ""

    def watch(self, daemon: str) -> None:
        self.watching = daemon

    def stop_watch(self) -> None:
        self.watching = None

    async def close(self) -> None: ...


def kube_config(max_trials: int = 3) -> configuration.Config:
    base = configuration.from_dict(
        {
            "docker": {"nodes": {"d1": {"base_url": "unix:///nonexistent.sock"}}},
            "defaults": {"error_handling": {"max_task_trials": max_trials}},
        },
        "<kube unit test>",
    )
    clusters = (KubeClusterConfig(name="k", callback_url="http://10.0.0.1:5000/", api_timeout_seconds=2),)
    return dataclasses.replace(base, kubernetes=KubernetesConfig(clusters))


class Parts:
    def __init__(self, store: Store, config: configuration.Config) -> None:
        self.store = store
        self.clock = Clock()
        self.identity = DaemonIdentity(store)
        self.fakes: dict[str, FakeKube] = {}
        vault = Vault(store, b"k" * 32)
        self.lifecycle = Lifecycle(store, self.clock, max_task_trials=config.defaults.max_task_trials, vault=vault)
        address = CallbackAddress("http://127.0.0.1:1")
        self.cluster = Cluster(
            config,
            store,
            ThreadPoolService(reactor, "unit-docker", 1),
            self.clock,
            self.identity,
            address,
            kube_factory=self._make,
        )
        self.scheduler = Scheduler(
            config, store, self.cluster, self.lifecycle, self.clock, vault, self.identity, address
        )
        self.cluster.add_listener(self.scheduler)

    def _make(self, config: KubeClusterConfig, events: Any) -> FakeKube:
        self.fakes[config.name] = fake = FakeKube(config, events)
        return fake


async def seed_running(store: Store, node: str) -> tuple[ObjectId, ObjectId]:
    gid, tid = ObjectId(), ObjectId()
    await store.insert_one("task_groups", {"_id": gid, "state": states.PROCESSING, "transitions": []})
    await store.insert_one(
        "tasks",
        {
            "_id": tid,
            "state": states.PROCESSING,
            "trials": 0,
            "task_group_id": [gid],
            "transitions": [],
            "application_container_description": {"image": "x", "container_ram": 64},
        },
    )
    app = await store.insert_one(
        "application_containers",
        {
            "state": states.PROCESSING,
            "task_id": [tid],
            "data_container_ids": [],
            "transitions": [],
            "cluster_node": node,
            "container_ram": 64,
        },
    )
    return tid, app


async def eventually(check: Callable[[], Any], what: str) -> None:
    for _ in range(200):
        if await check():
            return
        await deferLater(reactor, 0.02, lambda: None)
    raise AssertionError(f"not within 4 s: {what}")


@pytest_twisted.ensureDeferred
async def test_a_cluster_is_a_node_checked_by_info_and_watched_while_healthy(store: Store) -> None:
    parts = Parts(store, kube_config())
    cluster, fake = parts.cluster, parts.fakes["k"]
    daemon = await parts.identity.get()
    assert set(cluster.node_names()) == {"d1", "k"} and list(cluster.nodes) == ["d1"]  # Docker-only parts see d1
    assert cluster.health("k") is None
    assert await cluster.check("k")
    assert cluster.health("k") is True and fake.watching == daemon
    assert ("k", 6000) in cluster.capacities() and cluster.cpu_totals()["k"] == 3
    assert cluster.traits() == {"k": (False, False, False)}  # no staging_image: no TES tasks
    status = await cluster.nodes_status()
    (listed,) = [n for n in status["healthy_nodes"] if n["name"] == "k"]
    assert (listed["total_ram"], listed["total_cpus"], listed["kind"]) == (6000, 3, "kubernetes")
    assert status["dead_nodes"] == [{"name": "d1", "description": "not checked yet", "kind": "docker"}]
    backend = cluster.backend("k")
    assert isinstance(backend, KubeBackend) and backend.callback_base("http://daemon:1") == "http://10.0.0.1:5000"
    assert await backend.ensure_image("img", "never", None) is None  # the kubelet pulls
    await backend.create("n", "img", "cmd", 64, "application", daemon, 1.0)
    try:
        await backend.create("n", "img", "cmd", 64, "application", daemon, 1.0)
        raise AssertionError("a second create of one name must say it exists")
    except ContainerExists:
        pass
    # POST /nodes re-checks a cluster as it re-checks an engine
    asked = fake.infos
    await cluster.recheck(["k"])
    assert fake.infos == asked + 1
    # a watch that cannot be resumed re-checks the cluster, which starts the watch again
    before = fake.infos
    cluster.watch_broken("k", RuntimeError("410 Gone, and the relist failed"))
    assert fake.watching is None or fake.infos > before
    await eventually(lambda: _true(fake.infos > before and fake.watching == daemon), "a re-check after the watch broke")


async def _true(value: bool) -> bool:
    return value


@pytest_twisted.ensureDeferred
async def test_a_dead_cluster_fails_its_containers_into_retries(store: Store) -> None:
    parts = Parts(store, kube_config())
    cluster, fake = parts.cluster, parts.fakes["k"]
    await parts.identity.get()
    assert await cluster.check("k")
    tid, app = await seed_running(store, "k")
    fake.problem = KubeUnavailable(CA_PROBLEM)
    assert not await cluster.check("k")
    assert cluster.health("k") is False and fake.watching is None
    assert ("k", 6000) not in cluster.capacities()
    status = await cluster.nodes_status()
    assert {d["name"]: d["description"] for d in status["dead_nodes"]}["k"] == f"cluster k: {CA_PROBLEM}"

    async def retried() -> bool:
        task = await store.find_one("tasks", {"_id": tid})
        return task is not None and task["state"] == states.WAITING

    await eventually(retried, "the task of the dead cluster back to waiting")
    container = await store.find_one("application_containers", {"_id": app})
    assert container is not None and container["state"] == states.FAILED
    assert container["transitions"][-1]["description"] == "node k is dead"
    assert await store.find("dead_nodes", {"name": "k"})
    # back: healthy again, watched again, its dead_nodes entry gone
    fake.problem = None
    assert await cluster.check("k") and fake.watching is not None
    assert not await store.find("dead_nodes", {"name": "k"})


@pytest_twisted.ensureDeferred
async def test_an_api_server_that_hangs_makes_the_cluster_dead_within_its_deadline(store: Store) -> None:
    from twisted.internet.defer import Deferred

    parts = Parts(store, kube_config())
    cluster, fake = parts.cluster, parts.fakes["k"]

    async def hangs() -> tuple[int, int]:
        await Deferred()  # never answers
        raise AssertionError("unreachable")

    fake.info = hangs  # type: ignore[method-assign]
    checking = cluster.check("k")
    parts.clock.advance(2.9)  # api_timeout_seconds (2) + HEALTH_SLACK (1)
    assert not checking.called
    parts.clock.advance(0.2)
    assert (await checking) is False
    assert "did not answer within 3 s" in (await cluster.nodes_status())["dead_nodes"][-1]["description"]


@pytest_twisted.ensureDeferred
async def test_a_stuck_pod_is_a_failed_trial_with_the_schedulers_reason(store: Store) -> None:
    parts = Parts(store, kube_config(max_trials=2))
    cluster = parts.cluster
    reason = "pod Pending for more than 120 s: 0/1 nodes are available: 1 Insufficient cpu."
    tid, app = await seed_running(store, "k")
    cluster.container_stuck("k", str(app), reason)

    async def state_is(state: int) -> bool:
        task = await store.find_one("tasks", {"_id": tid})
        return task is not None and task["state"] == state

    await eventually(lambda: state_is(states.WAITING), "the task back to waiting (a trial)")
    container = await store.find_one("application_containers", {"_id": app})
    assert container is not None and container["state"] == states.FAILED
    assert container["transitions"][-1]["description"] == reason
    task = await store.find_one("tasks", {"_id": tid})
    assert task is not None and task["trials"] == 1
    # its second trial sticks too: max_task_trials (2) reached, the task fails
    await store.update_one("tasks", {"_id": tid}, {"$set": {"state": states.PROCESSING}})
    second = await store.insert_one(
        "application_containers",
        {
            "state": states.PROCESSING,
            "task_id": [tid],
            "data_container_ids": [],
            "transitions": [],
            "cluster_node": "k",
            "container_ram": 64,
        },
    )
    cluster.container_stuck("k", "not-an-object-id", "ignored")  # not ours: nothing happens
    cluster.container_stuck("k", str(second), "ErrImageNeverPull: image x is not present with pull policy Never")
    await eventually(lambda: state_is(states.FAILED), "the task failed after max_task_trials")
    done = await store.find_one("application_containers", {"_id": second})
    assert done is not None and done["transitions"][-1]["description"].startswith("ErrImageNeverPull")


@pytest_twisted.ensureDeferred
async def test_the_tes_runner_asks_a_cluster_through_its_api_never_through_docker(store: Store) -> None:
    """TES tasks on a cluster are Jobs: the runner's sweeps and cancels ask the cluster's API
    for the Jobs by label and remove them; never a Docker call for a cluster (it would fail)."""
    from ccserver.tes.runner import TesRunner
    from tests.tes.runner.conftest import executor, insert_task

    parts = Parts(store, kube_config())
    daemon = await parts.identity.get()
    assert await parts.cluster.check("k")
    fake = parts.fakes["k"]
    asked: list[str] = []

    def call(name: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        asked.append(name)
        raise AssertionError(f"a Docker call for node {name}")

    parts.cluster.call = call  # type: ignore[method-assign]
    runner = TesRunner(
        parts.cluster.config,
        store,
        parts.cluster,
        Vault(store, b"k" * 32),
        parts.identity,
        stager=None,  # type: ignore[arg-type]
        ensure_image=None,  # type: ignore[arg-type]
        send=lambda url, body: None,
        wake=lambda: None,
        clock=parts.clock,
    )
    task_id = await insert_task(store, [executor("true")], state="CANCELING", node=None, trials=1)
    orphan = f"ccserver-tes-{task_id}-1"
    fake.jobs = [orphan]
    await runner._sweep_cluster("k")  # the Job of a task that is not live on k goes
    assert fake.removed == [orphan]
    assert fake.listed == [f"io.curious-containers.kind=tes-executor,io.curious-containers.daemon={daemon}"]
    doc = await store.find_one("tes_tasks", {"_id": task_id})
    assert doc is not None
    await runner._cancel_without_attempt(doc)  # the Docker node d1 is not checked yet: skipped
    assert fake.listed[-1] == f"io.curious-containers.tes-task={task_id},io.curious-containers.daemon={daemon}"
    assert fake.removed == [orphan, orphan]
    ended = await store.find_one("tes_tasks", {"_id": task_id})
    assert ended is not None and ended["state"] == "CANCELED"
    assert asked == []


@pytest_twisted.ensureDeferred
async def test_a_stuck_pods_reason_wins_over_a_reconcile_that_finds_its_job_gone(store: Store) -> None:
    """The cluster deletes a stuck pod's Job, then reports it: a reconcile in between sees
    the Job gone, and waits one reconcile for the report before it calls it vanished."""
    parts = Parts(store, kube_config())
    await parts.identity.get()
    assert await parts.cluster.check("k")
    _, stuck = await seed_running(store, "k")
    _, gone = await seed_running(store, "k")
    await parts.scheduler.reconcile(["k"])  # no Job for either (FakeKube.ours is empty)
    for app in (stuck, gone):
        doc = await store.find_one("application_containers", {"_id": app})
        assert doc is not None and doc["state"] == states.PROCESSING
    reason = "the pod cannot start: container app waiting: ErrImageNeverPull: not present"
    await parts.scheduler._container_stuck("k", str(stuck), reason)
    await parts.scheduler.reconcile(["k"])
    described = {}
    for app in (stuck, gone):
        doc = await store.find_one("application_containers", {"_id": app})
        assert doc is not None and doc["state"] == states.FAILED
        described[app] = doc["transitions"][-1]["description"]
    assert described == {stuck: reason, gone: "container vanished from Kubernetes cluster k"}


@pytest_twisted.ensureDeferred
async def test_a_launch_on_a_cluster_calls_back_from_the_pod_network_with_its_cpus(store: Store) -> None:
    from ccserver.kinds import APPLICATION

    for legacy, cpus in ((0.5, 0.5), (0.0, None)):  # 0: counted as nothing, and not limited
        config = kube_config()
        config = dataclasses.replace(config, tes=dataclasses.replace(config.tes, legacy_container_cpus=legacy))
        parts = Parts(store, config)
        daemon = await parts.identity.get()
        assert await parts.cluster.check("k")
        parts.scheduler.cleaner.reconciled.add("k")
        tid, _ = await seed_running(store, "k")
        await store.update_one(
            "tasks", {"_id": tid}, {"$set": {"application_container_description.image": "ccserver-test/app:1"}}
        )
        app = {"_id": ObjectId(), "state": states.CREATED, "task_id": [tid], "data_container_ids": []}
        app.update({"transitions": [], "cluster_node": "k", "container_ram": 64, "callbacks": []})
        await store.insert_one("application_containers", app)
        await parts.scheduler.launcher._launch(APPLICATION, app)
        ((name, image, command, ram, kind, owner, given),) = parts.fakes["k"].created
        assert (name, image, ram, kind, owner, given) == (
            str(app["_id"]),
            "ccserver-test/app:1",
            64,
            "application",
            daemon,
            cpus,
        )
        # the cluster's callback_url (pods call from the pod network), not the daemon's own address
        assert '"callback_url": "http://10.0.0.1:5000/application-containers/callback"' in command, command
        done = await store.find_one("application_containers", {"_id": app["_id"]})
        assert done is not None and done["state"] == states.PROCESSING
