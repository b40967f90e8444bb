"""The pod watch's resume logic and the tracker's reading of pods, with a fake API and a
MemoryReactorClock (the real watch against a real cluster: tests/kube/test_kube_node.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.testing import MemoryReactorClock

from ccserver.kubernetes.errors import KubeAPIError, KubeUnavailable
from ccserver.kubernetes.jobs import NO_EXIT_CODE
from ccserver.kubernetes.watch import PodTracker, PodWatch


class FakeStream:
    def __init__(self) -> None:
        self.ended: Deferred[bool] = Deferred()
        self.closed = False

    def close(self) -> None:
        self.closed = True
        if not self.ended.called:
            self.ended.callback(False)


class FakeAPI:
    def __init__(self) -> None:
        self.lists: list[dict[str, Any]] = []
        self.listed: list[dict[str, Any]] = []
        self.opens: list[tuple[dict[str, Any], Callable[[bytes], None], FakeStream]] = []
        self.open_errors: list[BaseException] = []

    async def call(self, operation: str, method: str, path: str, query: dict[str, Any] | None = None) -> Any:
        assert (operation, method, path) == ("list_pods", "GET", "/api/v1/namespaces/ns/pods")
        self.listed.append(dict(query or {}))
        return self.lists.pop(0)

    async def open_stream(self, path: str, query: dict[str, Any], on_data: Callable[[bytes], None]) -> FakeStream:
        assert path == "/api/v1/namespaces/ns/pods"
        if self.open_errors:
            raise self.open_errors.pop(0)
        stream = FakeStream()
        self.opens.append((dict(query), on_data, stream))
        return stream

    def send(self, *events: dict[str, Any]) -> None:
        on_data = self.opens[-1][1]
        data = b"".join(json.dumps(e).encode() + b"\n" for e in events)
        on_data(data[:7])  # lines come in pieces
        on_data(data[7:])


def pod_event(kind: str, version: str, name: str = "c1", phase: str = "Running") -> dict[str, Any]:
    return {
        "type": kind,
        "object": {
            "metadata": {
                "name": f"{name}-x",
                "resourceVersion": version,
                "labels": {"io.curious-containers.container": name},
            },
            "status": {"phase": phase},
        },
    }


def make(api: FakeAPI, clock: MemoryReactorClock) -> tuple[PodWatch, list[tuple[str, str]], list[BaseException]]:
    seen: list[tuple[str, str]] = []
    broken: list[BaseException] = []
    watch = PodWatch(
        api,
        clock,
        "ns",
        "io.curious-containers.daemon=d1",
        lambda kind, pod: seen.append((kind, pod["metadata"]["resourceVersion"])),
        broken.append,
        timeout_seconds=60,
        read_slack=5,
        max_failures=3,
        backoff=(0.5, 2.0),
    )
    return watch, seen, broken


def listing(version: str, *pods: str) -> dict[str, Any]:
    items = [pod_event("ADDED", p)["object"] for p in pods]
    return {"metadata": {"resourceVersion": version}, "items": items}


def test_lists_then_watches_from_the_version_and_resumes_from_the_last_one() -> None:
    api, clock = FakeAPI(), MemoryReactorClock()
    api.lists.append(listing("10", "9"))
    watch, seen, broken = make(api, clock)
    watch.start()
    assert api.listed == [{"labelSelector": "io.curious-containers.daemon=d1"}]
    query = api.opens[0][0]
    assert query == {
        "watch": "1",
        "labelSelector": "io.curious-containers.daemon=d1",
        "allowWatchBookmarks": "true",
        "timeoutSeconds": "60",
        "resourceVersion": "10",
    }
    api.send(
        pod_event("ADDED", "11"),
        pod_event("MODIFIED", "12"),
        {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "20"}}},
    )
    assert seen == [("LISTED", "9"), ("ADDED", "11"), ("MODIFIED", "12")]
    clock.advance(60)
    api.opens[0][2].ended.callback(True)  # the server's timeoutSeconds
    assert len(api.opens) == 2 and api.opens[1][0]["resourceVersion"] == "20"
    assert len(api.listed) == 1  # resumed, not listed again
    watch.stop()
    assert api.opens[1][2].closed and not broken and not watch.running


def test_a_410_relists() -> None:
    api, clock = FakeAPI(), MemoryReactorClock()
    api.lists += [listing("10"), listing("30", "29")]
    watch, seen, _ = make(api, clock)
    watch.start()
    clock.advance(2)
    api.send({"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}})
    assert api.opens[0][2].closed
    assert len(api.listed) == 2 and api.opens[1][0]["resourceVersion"] == "30"
    assert seen == [("LISTED", "29")]
    # a 410 answer to the watch request itself relists too
    api.lists.append(listing("40"))
    api.open_errors.append(KubeAPIError("gone", 410, "Expired"))
    api.opens[1][2].ended.callback(True)
    clock.advance(2)
    assert len(api.listed) == 3 and api.opens[-1][0]["resourceVersion"] == "40"
    watch.stop()


def test_a_disconnect_reopens_after_a_backoff_from_the_last_version() -> None:
    api, clock = FakeAPI(), MemoryReactorClock()
    api.lists.append(listing("10"))
    watch, _, broken = make(api, clock)
    watch.start()
    api.send(pod_event("MODIFIED", "15"))
    api.opens[0][2].ended.callback(False)  # the connection broke
    assert len(api.opens) == 1
    clock.advance(0.4)
    assert len(api.opens) == 1
    clock.advance(0.2)
    assert len(api.opens) == 2 and api.opens[1][0]["resourceVersion"] == "15"
    assert len(api.listed) == 1 and not broken
    watch.stop()


def test_a_silent_watch_is_reopened_after_its_read_deadline() -> None:
    api, clock = FakeAPI(), MemoryReactorClock()
    api.lists.append(listing("10"))
    watch, _, _ = make(api, clock)
    watch.start()
    clock.advance(60)
    api.send(pod_event("MODIFIED", "11"))  # a byte resets the deadline
    clock.advance(64)
    assert not api.opens[0][2].closed
    clock.advance(1.5)  # 65 s without a byte (timeoutSeconds 60 + slack 5)
    assert api.opens[0][2].closed
    clock.advance(0.5)
    assert len(api.opens) == 2 and api.opens[1][0]["resourceVersion"] == "11"
    watch.stop()


def test_repeated_failures_report_a_broken_watch_once_and_stop() -> None:
    api, clock = FakeAPI(), MemoryReactorClock()
    api.lists.append(listing("10"))
    refused = KubeUnavailable(
        "kubernetes.clusters.k1.server: nothing listens at https://127.0.0.1:1 (connection refused)"
    )
    api.open_errors += [refused, refused, refused, refused]
    watch, _, broken = make(api, clock)
    watch.start()
    for _ in range(10):
        clock.advance(2)
    assert broken == [refused]
    assert not watch.running and api.opens == [] and len(api.open_errors) == 1  # stopped trying


def test_a_good_watch_between_failures_resets_the_count() -> None:
    api, clock = FakeAPI(), MemoryReactorClock()
    api.lists.append(listing("10"))
    failure = KubeUnavailable("refused")
    api.open_errors += [failure, failure]
    watch, _, broken = make(api, clock)
    watch.start()
    clock.advance(0.5)
    clock.advance(1)
    assert len(api.opens) == 1
    clock.advance(30)
    api.opens[0][2].ended.callback(True)
    api.open_errors += [failure, failure]
    for _ in range(5):
        clock.advance(2)
    assert len(api.opens) == 2 and not broken
    watch.stop()


class Events:
    def __init__(self, log: list[Any]) -> None:
        self.log = log

    def container_running(self, node: str, name: str) -> None:
        self.log.append(("running", node, name))

    def container_died(self, node: str, name: str, code: int, owner: str | None) -> None:
        self.log.append(("died", node, name, code, owner))

    def container_stuck(self, node: str, name: str, reason: str) -> None:
        self.log.append(("stuck", node, name, reason))


def tracked(clock: MemoryReactorClock) -> tuple[PodTracker, list[Any]]:
    log: list[Any] = []

    def delete(name: str) -> Deferred[bool]:
        log.append(("deleted", name))
        return succeed(True)

    return PodTracker("k1", Events(log), clock, 120, delete), log


def pod(phase: str, state: dict[str, Any] | None = None, conditions: list[Any] | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase, "conditions": conditions or []}
    if state is not None:
        status["containerStatuses"] = [{"name": "app", "state": state}]
    labels = {"io.curious-containers.container": "c1", "io.curious-containers.daemon": "d1"}
    return {"metadata": {"name": "c1-x", "labels": labels}, "status": status}


UNSCHEDULABLE = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/1 nodes: memory"}]


def test_an_ended_pod_is_reported_once() -> None:
    tracker, log = tracked(MemoryReactorClock())
    tracker.pod("ADDED", pod("Running", {"running": {}}))
    tracker.pod("MODIFIED", pod("Running", {"running": {}}))
    tracker.pod("LISTED", pod("Running", {"running": {}}))  # a relist
    ended = pod("Failed", {"terminated": {"exitCode": 3}})
    tracker.pod("MODIFIED", ended)
    tracker.pod("MODIFIED", ended)
    tracker.pod("LISTED", ended)  # a relist
    tracker.pod("DELETED", ended)
    assert log == [("running", "k1", "c1"), ("died", "k1", "c1", 3, "d1")]


def test_a_pod_pending_or_initializing_is_not_running() -> None:
    tracker, log = tracked(MemoryReactorClock())
    tracker.pod("ADDED", pod("Pending", {"waiting": {"reason": "ContainerCreating"}}))
    tracker.pod("MODIFIED", pod("Running", {"waiting": {"reason": "PodInitializing"}}))
    assert log == []
    tracker.pod("MODIFIED", pod("Running", {"running": {"startedAt": "2026-12-02T08:00:00Z"}}))
    assert log == [("running", "k1", "c1")]


def test_a_pod_deleted_before_it_ended_ended_its_container() -> None:
    tracker, log = tracked(MemoryReactorClock())
    tracker.pod("ADDED", pod("Running", {"running": {}}))
    tracker.pod("DELETED", pod("Running", {"running": {}}))
    assert log == [("running", "k1", "c1"), ("died", "k1", "c1", NO_EXIT_CODE, "d1")]


def test_pending_too_long_deletes_the_job_then_reports_the_reason() -> None:
    clock = MemoryReactorClock()
    tracker, log = tracked(clock)
    tracker.pod("ADDED", pod("Pending"))
    clock.advance(60)
    tracker.pod("MODIFIED", pod("Pending", conditions=UNSCHEDULABLE))  # the timer keeps its start
    clock.advance(59)
    assert log == []
    clock.advance(1)
    assert log == [
        ("deleted", "c1"),
        (
            "stuck",
            "k1",
            "c1",
            "the pod stayed Pending longer than 120 s (pending_timeout_seconds): "
            "pod not scheduled: Unschedulable: 0/1 nodes: memory",
        ),
    ]
    tracker.pod("DELETED", pod("Pending", conditions=UNSCHEDULABLE))
    assert len(log) == 2  # not reported again as died


def test_a_pod_that_starts_in_time_is_not_stuck() -> None:
    clock = MemoryReactorClock()
    tracker, log = tracked(clock)
    tracker.pod("ADDED", pod("Pending", conditions=UNSCHEDULABLE))
    clock.advance(100)
    tracker.pod("MODIFIED", pod("Running", {"running": {}}))
    clock.advance(100)
    assert log == [("running", "k1", "c1")] and not clock.getDelayedCalls()


def test_an_image_that_is_never_pulled_fails_at_once() -> None:
    tracker, log = tracked(MemoryReactorClock())
    tracker.pod("ADDED", pod("Pending", {"waiting": {"reason": "ErrImageNeverPull", "message": "not present"}}))
    assert log == [
        ("deleted", "c1"),
        ("stuck", "k1", "c1", "the pod cannot start: container app waiting: ErrImageNeverPull: not present"),
    ]


def test_the_pending_bound_counts_from_the_pods_creation() -> None:
    """A daemon that restarts lists its pods again: one Pending for 100 s already gets the 20 s
    that are left of its 120, not 120 more."""
    clock = MemoryReactorClock()
    clock.advance(datetime(2026, 12, 2, 8, 0, 0, tzinfo=UTC).timestamp())
    tracker, log = tracked(clock)
    old = pod("Pending", conditions=UNSCHEDULABLE)
    old["metadata"]["creationTimestamp"] = "2026-12-02T07:58:19Z"  # 100 s ago (from the end of that second)
    tracker.pod("LISTED", old)
    clock.advance(19)
    assert log == []
    clock.advance(1)
    assert [entry[0] for entry in log] == ["deleted", "stuck"]


def test_a_creation_time_ahead_of_the_clock_or_unreadable_gets_the_whole_bound() -> None:
    for stamp in ("2026-12-02T09:00:00Z", "not a time", "2026-12-02T07:00:00"):
        clock = MemoryReactorClock()
        clock.advance(datetime(2026, 12, 2, 8, 0, 0, tzinfo=UTC).timestamp())
        tracker, log = tracked(clock)
        young = pod("Pending")
        young["metadata"]["creationTimestamp"] = stamp
        tracker.pod("ADDED", young)
        clock.advance(119)
        assert log == [], stamp
        clock.advance(1)
        assert [entry[0] for entry in log] == ["deleted", "stuck"], stamp
