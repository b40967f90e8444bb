"""The pure parts of the metrics: durations from documents, labels, route templates, the
registry of each daemon, and what the store and the refresher record (on both backends)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_twisted
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from ccserver import states
from ccserver.metrics import Metrics, method_label, outcome, queue_wait, run_time, status_label
from ccserver.metrics_refresh import StateRefresher
from ccserver.storage.base import Store
from ccserver.web.api import API
from ccserver.web.route_names import REMEMBERED, STATIC, UNMATCHED, RouteNames
from tests.conftest import STORE_BACKENDS, _wait, make_store


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def get(metrics: Metrics, name: str, **labels: str) -> float:
    return samples(metrics).get((name, tuple(sorted(labels.items()))), 0.0)


def record(state: int, at: float) -> dict[str, Any]:
    return states.transition(state, "x", at)


# --- durations from the documents ------------------------------------------------------------


def test_queue_wait_counts_from_the_last_time_the_task_began_to_wait() -> None:
    first = {"created_at": 100.0, "transitions": [record(states.CREATED, 100.0)]}
    assert queue_wait(first, 107.5) == 7.5
    retried = {
        "created_at": 100.0,
        "transitions": [
            record(states.CREATED, 100.0),
            record(states.PROCESSING, 110.0),
            record(states.WAITING, 200.0),  # its trial failed: back in the queue
        ],
    }
    assert queue_wait(retried, 230.0) == 30.0
    assert queue_wait({"created_at": 50.0}, 60.0) == 10.0  # no transitions: its submission
    assert queue_wait({}, 60.0) is None
    assert queue_wait({"created_at": 70.0}, 60.0) == 0.0  # clocks disagree: never negative


def test_run_time_is_from_the_last_start_to_the_end() -> None:
    succeeded = {
        "transitions": [record(states.CREATED, 1.0), record(states.PROCESSING, 5.0), record(states.SUCCESS, 65.0)]
    }
    assert run_time(succeeded) == 60.0
    retried = {
        "transitions": [
            record(states.CREATED, 1.0),
            record(states.PROCESSING, 5.0),
            record(states.WAITING, 10.0),
            record(states.PROCESSING, 20.0),
            record(states.FAILED, 26.0),
        ]
    }
    assert run_time(retried) == 6.0
    never_ran = {"transitions": [record(states.CREATED, 1.0), record(states.CANCELLED, 3.0)]}
    assert run_time(never_ran) is None
    still_running = {"transitions": [record(states.CREATED, 1.0), record(states.PROCESSING, 5.0)]}
    assert run_time(still_running) is None
    assert run_time({}) is None


def test_labels_are_bounded_sets() -> None:
    assert [outcome(s) for s in (states.SUCCESS, states.FAILED, states.CANCELLED)] == ["success", "failed", "cancelled"]
    assert outcome(states.PROCESSING) == outcome(None) == outcome("3") == "other"
    assert method_label(b"GET") == method_label("GET") == "GET"
    assert method_label(b"BREW") == method_label(b"get") == method_label(b"\xff") == "other"
    assert status_label(404) == "404"
    assert status_label(1000) == status_label(None) == status_label("200") == "other"


# --- route templates -------------------------------------------------------------------------


def test_route_templates_replace_raw_paths() -> None:
    names = RouteNames(API.app.url_map, "", False, {"/metrics": "/metrics"})
    assert names.name(b"POST", b"/tasks/query") == "/tasks/query"
    assert names.name(b"POST", b"/tasks/") == "/tasks"  # no redirects: the same route
    assert names.name(b"GET", b"/") == "/"
    assert names.name(b"GET", b"/metrics") == "/metrics"
    assert names.name(b"GET", b"/tasks/5f1e0c1f9b1e8a0001234567") == UNMATCHED
    assert names.name(b"DELETE", b"/tasks") == UNMATCHED  # no such method for the route
    assert names.name(b"GET", b"/%74oken") == "/token"  # percent-encoded, as Klein decodes it
    assert names.name(b"GET", b"/token?x=1") == "/token"


def test_remembered_route_names_stay_bounded() -> None:
    names = RouteNames(API.app.url_map, "", False)
    for n in range(REMEMBERED + 10):
        assert names.name(b"GET", f"/tasks/{n:024x}".encode()) == UNMATCHED
    assert len(names._known) <= REMEMBERED
    assert names.name(b"POST", b"/tasks") == "/tasks"


def test_route_templates_under_a_prefix_and_beside_static_files() -> None:
    names = RouteNames(API.app.url_map, "/cc", True, {"/cc/metrics": "/metrics"})
    assert names.name(b"POST", b"/cc/tasks") == "/tasks"
    assert names.name(b"GET", b"/cc") == "/"
    assert names.name(b"GET", b"/cc/metrics") == "/metrics"
    assert names.name(b"GET", b"/cc/nope") == UNMATCHED
    assert names.name(b"GET", b"/index.html") == STATIC
    assert names.name(b"GET", b"/ccx/tasks") == STATIC
    bare = RouteNames(API.app.url_map, "", True)
    assert bare.name(b"GET", b"/static/js/main.js") == STATIC
    assert bare.name(b"GET", b"/nodes") == "/nodes"


# --- the registry ----------------------------------------------------------------------------


def test_each_daemon_has_its_own_registry() -> None:
    clock = Clock()
    one, two = Metrics(now=clock.seconds), Metrics(now=clock.seconds)
    one.http_request(b"GET", "/nodes", 200, 0.01)
    one.http_request(b"GET", "/nodes", 200, 0.02)
    two.http_request(b"POST", "/tasks", 400, 0.5)
    assert get(one, "ccserver_http_requests_total", method="GET", route="/nodes", status="200") == 2
    assert get(two, "ccserver_http_requests_total", method="GET", route="/nodes", status="200") == 0
    assert get(two, "ccserver_http_request_seconds_count", method="POST", route="/tasks") == 1
    assert get(one, "ccserver_http_request_seconds_sum", method="GET", route="/nodes") == pytest.approx(0.03)


def test_what_the_scheduler_and_the_life_cycle_record() -> None:
    clock = Clock()
    m = Metrics(now=clock.seconds)
    m.task_placed({"created_at": 10.0, "transitions": [record(states.CREATED, 10.0)]}, 12.0)
    m.task_ended(
        {
            "state": states.SUCCESS,
            "transitions": [record(states.CREATED, 0.0), record(states.PROCESSING, 1.0), record(states.SUCCESS, 4.0)],
        }
    )
    m.task_ended({"state": states.CANCELLED, "transitions": [record(states.CANCELLED, 3.0)]})  # never ran
    assert get(m, "ccserver_task_queue_wait_seconds_count") == 1
    assert get(m, "ccserver_task_queue_wait_seconds_bucket", le="2.0") == 1
    assert get(m, "ccserver_task_queue_wait_seconds_bucket", le="1.0") == 0
    assert get(m, "ccserver_task_run_seconds_sum", outcome="success") == 3.0
    assert get(m, "ccserver_task_run_seconds_count", outcome="cancelled") == 0
    elapsed = m.timer()
    clock.advance(0.25)
    m.round_done(elapsed())
    assert get(m, "ccserver_scheduling_round_seconds_sum") == 0.25
    m.launch_started()
    m.launch_started()
    m.launch_ended()
    assert get(m, "ccserver_launches_in_flight") == 1
    m.image_pulled("n1", 1_000_000, 12.0)
    m.image_pull_failed("n1")
    assert get(m, "ccserver_image_pulls_total", node="n1", outcome="pulled") == 1
    assert get(m, "ccserver_image_pulls_total", node="n1", outcome="failed") == 1
    assert get(m, "ccserver_image_pull_bytes_total", node="n1") == 1_000_000
    m.docker_call("start_container", "n1", 0.2)
    m.docker_call("start_container", "n1", 30.0, "timeout")
    assert get(m, "ccserver_docker_call_seconds_count", operation="start_container", node="n1") == 2
    assert get(m, "ccserver_docker_call_failures_total", operation="start_container", node="n1", reason="timeout") == 1
    m.callback("data_containers", 1, accepted=True)
    m.callback("application_containers", 99, accepted=False)  # what a client made up
    assert get(m, "ccserver_callbacks_total", kind="data", type="1", outcome="accepted") == 1
    assert get(m, "ccserver_callbacks_total", kind="application", type="other", outcome="refused") == 1
    m.notification(True, 1)
    m.notification(False, 4)
    assert get(m, "ccserver_notifications_total", outcome="failed") == 1
    assert get(m, "ccserver_notification_attempts_total") == 5


# --- the store and the refresher, on both backends ---------------------------------------------


@pytest_twisted.async_yield_fixture(params=STORE_BACKENDS)
async def observed(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[tuple[Store, Metrics]]:
    metrics = Metrics()
    instance = make_store(request.param, request, tmp_path, observer=metrics)
    await _wait(instance.startService())
    if hasattr(instance, "when_indexed"):
        await _wait(instance.when_indexed())
    try:
        yield instance, metrics
    finally:
        if hasattr(instance, "drop_database"):
            await _wait(instance.drop_database())
        await _wait(instance.stopService())


@pytest_twisted.ensureDeferred
async def test_store_operations_are_timed_by_operation_and_collection(observed: tuple[Store, Metrics]) -> None:
    store, metrics = observed
    await store.insert_one("tasks", {"state": 1})
    await store.find_one("tasks", {"state": 1})
    await store.update_one("tasks", {"state": 1}, {"$set": {"state": 2}})
    await store.count("tasks", {})
    await store.aggregate("tasks", [{"$match": {}}], max_documents=10, timeout=10)
    await store.delete_many("users", {})
    for operation, collection in [
        ("insert_many", "tasks"),
        ("find", "tasks"),
        ("update_one", "tasks"),
        ("count", "tasks"),
        ("aggregate", "tasks"),
        ("delete_many", "users"),
    ]:
        assert get(metrics, "ccserver_store_operation_seconds_count", operation=operation, collection=collection) == 1
    assert get(metrics, "ccserver_store_operation_seconds_count", operation="find", collection="users") == 0


class Node:
    def __init__(self, name: str, healthy: bool | None, total_ram: int, total_cpus: int | None) -> None:
        self.name, self.healthy, self.total_ram, self.total_cpus = name, healthy, total_ram, total_cpus


class Nodes:
    """The two things the refresher reads of the cluster (the daemon test has the real one)."""

    def __init__(self) -> None:
        self.nodes = {"n1": Node("n1", True, 4096, 4), "n2": Node("n2", False, 2048, 2)}
        self.clusters: dict[str, Node] = {}

    def nodes_status(self) -> Deferred[dict[str, Any]]:
        return succeed({"healthy_nodes": [{"name": "n1", "reserved_ram": 640}], "dead_nodes": [{"name": "n2"}]})


@pytest_twisted.ensureDeferred
async def test_the_refresher_counts_documents_by_state(store: Store) -> None:
    await store.insert_many("tasks", [{"state": states.WAITING} for _ in range(3)] + [{"state": states.SUCCESS}])
    await store.insert_many("application_containers", [{"state": states.PROCESSING, "cluster_node": "n1"}])
    metrics = Metrics()
    refresher = StateRefresher(metrics, store, Nodes(), reactor, 60)
    await Deferred.fromCoroutine(refresher.refresh())
    assert get(metrics, "ccserver_tasks", state="waiting") == 3
    assert get(metrics, "ccserver_tasks", state="success") == 1
    assert get(metrics, "ccserver_tasks", state="failed") == 0
    assert get(metrics, "ccserver_containers", kind="application", state="processing") == 1
    assert get(metrics, "ccserver_containers", kind="data", state="processing") == 0
    assert get(metrics, "ccserver_node_healthy", node="n1") == 1
    assert get(metrics, "ccserver_node_healthy", node="n2") == 0
    assert get(metrics, "ccserver_node_ram_total_bytes", node="n1") == 4096 * 1024 * 1024
    assert get(metrics, "ccserver_node_ram_reserved_bytes", node="n1") == 640 * 1024 * 1024
    assert get(metrics, "ccserver_node_ram_reserved_bytes", node="n2") == 0
    assert get(metrics, "ccserver_node_cpus_total", node="n2") == 2
    assert get(metrics, "ccserver_state_refreshed_timestamp_seconds") > 0
    # the next refresh sees what changed
    await store.update_many("tasks", {"state": states.WAITING}, {"$set": {"state": states.PROCESSING}})
    await Deferred.fromCoroutine(refresher.refresh())
    assert get(metrics, "ccserver_tasks", state="waiting") == 0
    assert get(metrics, "ccserver_tasks", state="processing") == 3


class Hanging(Nodes):
    def nodes_status(self) -> Deferred[dict[str, Any]]:
        return Deferred()  # never answers


@pytest_twisted.ensureDeferred
async def test_a_refresh_that_hangs_gives_up_and_the_loop_goes_on(store: Store) -> None:
    clock = Clock()
    metrics = Metrics()
    refresher = StateRefresher(metrics, store, Hanging(), clock, 5)
    refresher.startService()
    try:
        for _ in range(100):  # the counts run on the real store; the refresh then waits forever
            await Deferred.fromCoroutine(_tick())
        assert get(metrics, "ccserver_state_refresh_failures_total") == 0
        clock.advance(5)  # the deadline of the first refresh
        assert get(metrics, "ccserver_state_refresh_failures_total") == 1
        clock.advance(5)  # the loop's next call (at the next multiple of the interval)
        for _ in range(100):
            await Deferred.fromCoroutine(_tick())
        clock.advance(5)  # the next refresh hung too
        assert get(metrics, "ccserver_state_refresh_failures_total") == 2
    finally:
        refresher.stopService()


async def _tick() -> None:
    from twisted.internet.task import deferLater

    await deferLater(reactor, 0.005, lambda: None)


@pytest_twisted.ensureDeferred
async def test_tes_tasks_are_counted_by_state_with_the_cpus_they_hold(store: Store) -> None:
    metrics = Metrics()
    refresher = StateRefresher(metrics, store, Nodes(), reactor, 60)
    await store.insert_many(
        "tes_tasks",
        [
            {"state": "QUEUED", "node": None, "cpus": 1.0},
            {"state": "QUEUED", "node": None, "cpus": 1.0},
            {"state": "RUNNING", "node": "n1", "cpus": 1.5},
            {"state": "INITIALIZING", "node": "n1", "cpus": 0.5},
            {"state": "COMPLETE", "node": "n1", "cpus": 4.0},
        ],
    )
    await Deferred.fromCoroutine(refresher.refresh())
    assert get(metrics, "ccserver_tes_tasks", state="QUEUED") == 2
    assert get(metrics, "ccserver_tes_tasks", state="RUNNING") == 1
    assert get(metrics, "ccserver_tes_tasks", state="CANCELED") == 0
    assert get(metrics, "ccserver_node_cpus_reserved", node="n1") == 2.0  # the ended one holds none
    assert get(metrics, "ccserver_node_cpus_reserved", node="n2") == 0


def test_the_metrics_page_sits_beside_the_api_under_its_prefix() -> None:
    from twisted.web.resource import Resource, getChildForRequest
    from twisted.web.test.requesthelper import DummyRequest

    from ccserver.web.metrics_page import MetricsMount, metrics_only
    from ccserver.web.root import JSONNotFound, Root

    class Leaf(Resource):
        isLeaf = True

    api, page = Leaf(), Leaf()

    def find(root: Any, path: str) -> tuple[Any, list[bytes]]:
        request = DummyRequest([s.encode() for s in path.strip("/").split("/")] if path != "/" else [])
        return getChildForRequest(root, request), request.postpath

    prefixed = MetricsMount(Root(api, "/cc", None), page, "/cc")
    assert find(prefixed, "/cc/metrics")[0] is page
    assert find(prefixed, "/cc/metrics/")[0] is page
    assert find(prefixed, "/cc/tasks") == (api, [b"tasks"])
    assert find(prefixed, "/cc/metrics/x")[0] is api  # the API answers its 404
    assert isinstance(find(prefixed, "/metrics")[0], JSONNotFound)
    bare = MetricsMount(api, page, "")
    assert find(bare, "/metrics")[0] is page
    assert find(bare, "/tasks/query") == (api, [b"tasks", b"query"])
    alone = metrics_only(page)
    assert find(alone, "/metrics")[0] is page
    assert isinstance(find(alone, "/tasks")[0], JSONNotFound)
