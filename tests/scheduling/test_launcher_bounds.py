"""The launcher's bounds, as pure logic (fakes for Docker and the store; the real engine runs
it in tests/e2e/test_launches.py): at most ``launches_per_node`` creates and starts in
flight per node, each node on its own, and one pull per (node, image)."""

from __future__ import annotations

from typing import Any

from bson import ObjectId
from twisted.internet.defer import Deferred, succeed

from ccserver import config as configuration
from ccserver import states
from ccserver.cluster.backend import DockerBackend
from ccserver.cluster.service import QueuedTooLong
from ccserver.kinds import DATA as DATA_KIND
from ccserver.kinds import DEFAULT_KINDS
from ccserver.scheduling.launcher import Launcher

DATA = DATA_KIND.documents


class FakeNode:
    healthy = True


class FakeCluster:
    """Docker calls that wait until the test answers them."""

    def __init__(self, names: list[str]) -> None:
        self.nodes = {n: FakeNode() for n in names}
        self.pull_pool = self.lookup_pool = object()
        self.pending: list[tuple[str, str, Deferred[Any]]] = []

    def knows(self, node: str) -> bool:
        return node in self.nodes

    def health(self, node: str) -> bool:
        return self.nodes[node].healthy

    def backend(self, node: str) -> DockerBackend:
        # the real Docker backend: its calls are this fake's (by docker_ops function name)
        return DockerBackend(self, node, None)  # type: ignore[arg-type]

    def call(self, node: str, fn: Any, *args: Any, **kwargs: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.pending.append((node, fn.__name__, d))
        return d

    def in_flight(self, node: str, what: str) -> int:
        return sum(1 for n, name, d in self.pending if n == node and name == what and not d.called)

    def answer(self, what: str, value: Any = None) -> None:
        for _, name, d in list(self.pending):
            if name == what and not d.called:
                d.callback(value)

    def report_error(self, node: str, error: BaseException) -> None:
        raise AssertionError(f"unexpected Docker error on {node}: {error}")


class FakeStore:
    def __init__(self) -> None:
        self.states: dict[ObjectId, int] = {}

    def find_one(self, collection: str, query: dict[str, Any], projection: Any = None) -> Deferred[Any]:
        return succeed({"_id": query["_id"], "state": self.states.get(query["_id"], states.CREATED)})

    def update_one(self, collection: str, query: dict[str, Any], update: dict[str, Any]) -> Deferred[Any]:
        return succeed(None)


class FakeLifecycle:
    def __init__(self, store: FakeStore) -> None:
        self.store = store
        self.kinds = DEFAULT_KINDS

    async def transition(self, collection: str, _id: ObjectId, state: int, *args: Any, **kwargs: Any) -> bool:
        self.store.states[_id] = state
        return True

    async def container_failed(self, collection: str, _id: ObjectId, why: str, *args: Any) -> bool:
        raise AssertionError(f"container {_id} failed: {why}")


class FakeVault:
    def callback_key(self, collection: str, _id: Any) -> str:
        return "key"

    async def reveal(self, doc: dict[str, Any]) -> dict[str, Any]:
        return doc


class FakeIdentity:
    async def get(self) -> str:
        return "daemon-1"


def make(per_node: int, nodes: list[str], ready: Any = lambda node: True) -> tuple[Launcher, FakeCluster, list[int]]:
    cfg = configuration.from_dict(
        {
            "docker": {"launches_per_node": per_node, "pull_policy": "if-not-present"},
            "defaults": {"data_container_description": {"image": "ccserver-test/app:1"}},
        },
        "<test>",
    )
    cluster, store = FakeCluster(nodes), FakeStore()
    ended: list[int] = []
    launcher = Launcher(
        cfg,
        store,  # type: ignore[arg-type]
        cluster,  # type: ignore[arg-type]
        FakeLifecycle(store),  # type: ignore[arg-type]
        FakeVault(),  # type: ignore[arg-type]
        FakeIdentity(),  # type: ignore[arg-type]
        callback_base=lambda: "http://cc",
        ready=ready,
        launched=lambda: ended.append(1),
        storage_unavailable=lambda e: None,
    )
    return launcher, cluster, ended


def data_container(node: str) -> dict[str, Any]:
    return {"_id": ObjectId(), "cluster_node": node, "container_ram": 128}


def test_at_most_launches_per_node_creates_in_flight_per_node_and_one_pull_per_image() -> None:
    launcher, cluster, ended = make(per_node=2, nodes=["a", "b"])
    docs = [data_container("a") for _ in range(5)] + [data_container("b") for _ in range(3)]
    for doc in docs:
        launcher.launch(DATA, doc)
    for doc in docs[:2]:
        launcher.launch(DATA, doc)  # handed over again by the next round: not launched twice
    # one pull per node for the one image, awaited by every launch on that node
    assert [(n, what) for n, what, _ in cluster.pending] == [("a", "ensure_image"), ("b", "ensure_image")]
    assert launcher.pulls_under_way() == {("a", "ccserver-test/app:1"): 4, ("b", "ccserver-test/app:1"): 2}
    cluster.answer("ensure_image")
    assert cluster.in_flight("a", "create_container") == 2
    assert cluster.in_flight("b", "create_container") == 2
    while cluster.in_flight("a", "create_container") or cluster.in_flight("a", "start_container"):
        assert cluster.in_flight("a", "create_container") + cluster.in_flight("a", "start_container") <= 2
        cluster.answer("create_container", "id")
        cluster.answer("start_container")
        cluster.answer("container_address", "172.17.0.9")
    assert launcher.in_flight() == 0 and len(ended) == len(docs)
    creates = [n for n, what, _ in cluster.pending if what == "create_container"]
    assert creates.count("a") == 5 and creates.count("b") == 3  # each exactly once


class FailedOnce(FakeLifecycle):
    def __init__(self, store: FakeStore) -> None:
        super().__init__(store)
        self.failed: list[str] = []

    async def container_failed(self, collection: str, _id: ObjectId, why: str, *args: Any) -> bool:
        self.failed.append(why)
        return True


def test_a_create_that_never_ran_is_asked_again_and_fails_the_container_after_3_attempts() -> None:
    launcher, cluster, ended = make(per_node=1, nodes=["a"])
    lifecycle = launcher.lifecycle = FailedOnce(launcher.store)  # type: ignore[arg-type,assignment]
    cluster.report_error = lambda node, error: None  # type: ignore[method-assign]
    launcher.launch(DATA, data_container("a"))
    cluster.answer("ensure_image")

    def queued_too_long(what: str) -> None:
        for _, name, d in list(cluster.pending):
            if name == what and not d.called:
                d.errback(QueuedTooLong(f"{what} on node a: no Docker thread was free within 35 s"))

    queued_too_long("create_container")
    assert cluster.in_flight("a", "create_container") == 1 and lifecycle.failed == []  # asked again
    cluster.answer("create_container", "id")
    queued_too_long("start_container")
    queued_too_long("start_container")
    queued_too_long("start_container")  # the third attempt: given up
    assert lifecycle.failed == [
        "could not start the container: start_container on node a: no Docker thread was free within 35 s"
    ]
    assert launcher.in_flight() == 0 and ended == [1]


def application_container(node: str) -> tuple[dict[str, Any], dict[str, Any]]:
    task = {"_id": ObjectId(), "application_container_description": {"image": "ccserver-test/app:1"}}
    return {"_id": ObjectId(), "cluster_node": node, "container_ram": 64, "task_id": [task["_id"]]}, task


def test_a_started_application_container_asks_for_no_round_and_leaves_nothing_created() -> None:
    launcher, cluster, ended = make(per_node=2, nodes=["a"])
    doc, task = application_container("a")
    launcher.launch("application_containers", doc, task)
    for what, value in (("ensure_image", None), ("create_container", "id"), ("start_container", None)):
        cluster.answer(what, value)
    assert launcher.store.states[doc["_id"]] == states.PROCESSING  # type: ignore[attr-defined]
    assert launcher.in_flight() == 0
    # nothing another container waits for, nothing left created: no round is asked, and the
    # next round need not read the created documents
    assert ended == [] and launcher.left_created() is False


def test_a_launch_that_leaves_its_document_created_tells_the_next_round() -> None:
    compared: set[str] = set()
    launcher, cluster, ended = make(per_node=2, nodes=["a"], ready=lambda node: node in compared)
    doc, task = application_container("a")
    launcher.launch("application_containers", doc, task)  # node a not compared with the store yet
    assert cluster.pending == [] and launcher.in_flight() == 0
    assert ended == [1]  # a round is asked for
    assert launcher.left_created() is True
    assert launcher.left_created() is False  # told once
    compared.add("a")
    launcher.launch("application_containers", doc, task)  # the round hands it over again
    for what, value in (("ensure_image", None), ("create_container", "id"), ("start_container", None)):
        cluster.answer(what, value)
    assert launcher.store.states[doc["_id"]] == states.PROCESSING  # type: ignore[attr-defined]
    assert launcher.left_created() is False and ended == [1]


def test_a_data_container_launch_asks_for_a_round_its_application_containers_wait_for() -> None:
    launcher, cluster, ended = make(per_node=2, nodes=["a"])
    launcher.launch(DATA, data_container("a"))
    for what, value in (
        ("ensure_image", None),
        ("create_container", "id"),
        ("start_container", None),
        ("container_address", "172.17.0.9"),
    ):
        cluster.answer(what, value)
    assert ended == [1] and launcher.left_created() is False
