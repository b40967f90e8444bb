"""What the daemon measures, in Prometheus terms (docs/operations.rst lists every metric).

One :class:`Metrics` per daemon, made by :class:`ccserver.service.CCServer` and handed to the
constructors of the parts that record (store, cluster, scheduler, life cycle, callbacks,
notifier, web site); it holds its own :class:`~prometheus_client.CollectorRegistry`, never
the library's global one, so that several daemons' trees can live in one process (tests).

Label values are bounded sets: states, node names from the configuration, Docker operation
names, route templates, collection names.  No task id, container id or user name is ever a
label.  The gauges of tasks and containers by state, and of each node's RAM and CPUs, are
set by :class:`ccserver.metrics_refresh.StateRefresher` from the store, periodically; a
scrape only reads what is in memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from ccserver import states
from ccserver.tes import states as tes_states

#: seconds: from a second to a day (queue waits and run times)
LONG_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
#: seconds: a millisecond to two minutes (Docker calls, rounds)
CALL_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
#: seconds: a tenth of a millisecond to ten seconds (store operations, HTTP requests)
FAST_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
#: seconds: image pulls
PULL_BUCKETS = (0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800)

#: HTTP methods that get a label of their own; anything else a client sends is "other"
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})
#: the callback types of cc-protocol §7
CALLBACK_TYPES = ("0", "1", "2", "3")

#: the states of TES 1.1 tasks (collection ``tes_tasks``)
TES_STATES = tes_states.ALL

Stop = Callable[[], float]


class Metrics:
    """The daemon's metrics and the calls that record them (each cheap, on any thread)."""

    def __init__(self, registry: CollectorRegistry | None = None, now: Callable[[], float] = time.monotonic) -> None:
        """``now`` times durations (a monotonic clock; a fake one in unit tests)."""
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.now = now
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        r = self.registry
        # the daemon's CPU time, memory and open files (read from /proc when scraped)
        ProcessCollector(registry=r)
        # --- documents by state (set by the refresher) -----------------------------------
        self.tasks = Gauge("ccserver_tasks", "0.10 tasks by state", ["state"], registry=r)
        self.task_groups = Gauge("ccserver_task_groups", "0.10 task groups by state", ["state"], registry=r)
        self.containers = Gauge(
            "ccserver_containers", "Application and data containers by state", ["kind", "state"], registry=r
        )
        self.tes_tasks = Gauge("ccserver_tes_tasks", "TES tasks by state", ["state"], registry=r)
        self.refreshed = Gauge(
            "ccserver_state_refreshed_timestamp_seconds",
            "When the gauges of documents by state and of node reservations were last set (epoch seconds)",
            registry=r,
        )
        self.refresh_failures = Counter(
            "ccserver_state_refresh_failures", "Refreshes of the state gauges that failed", registry=r
        )
        # --- the scheduler --------------------------------------------------------------
        self.queue_wait = Histogram(
            "ccserver_task_queue_wait_seconds",
            "From a task's submission (or its return to waiting for a retry) to its placement (processing)",
            buckets=LONG_BUCKETS,
            registry=r,
        )
        self.run_time = Histogram(
            "ccserver_task_run_seconds",
            "From a task's last start (processing) to its end, by how it ended",
            ["outcome"],
            buckets=LONG_BUCKETS,
            registry=r,
        )
        self.rounds = Histogram(
            "ccserver_scheduling_round_seconds", "Duration of scheduling rounds", buckets=CALL_BUCKETS, registry=r
        )
        self.launches = Gauge(
            "ccserver_launches_in_flight", "Container launches (pull, create, start) under way", registry=r
        )
        self.pulls = Counter(
            "ccserver_image_pulls", "Image pulls, by node and outcome", ["node", "outcome"], registry=r
        )
        self.pull_bytes = Counter(
            "ccserver_image_pull_bytes", "Bytes downloaded by image pulls, by node", ["node"], registry=r
        )
        self.pull_seconds = Histogram(
            "ccserver_image_pull_seconds", "Duration of image pulls", ["node"], buckets=PULL_BUCKETS, registry=r
        )
        # --- the cluster ----------------------------------------------------------------
        self.docker_calls = Histogram(
            "ccserver_docker_call_seconds",
            "Docker calls from when they were asked (thread pool queue included) to their answer",
            ["operation", "node"],
            buckets=CALL_BUCKETS,
            registry=r,
        )
        self.docker_failures = Counter(
            "ccserver_docker_call_failures",
            "Docker calls that failed: queued (no thread before the deadline), timeout, error",
            ["operation", "node", "reason"],
            registry=r,
        )
        self.kube_calls = Histogram(
            "ccserver_kube_call_seconds",
            "Kubernetes API calls from when they were asked to their whole answer",
            ["operation", "node"],
            buckets=CALL_BUCKETS,
            registry=r,
        )
        self.kube_failures = Counter(
            "ccserver_kube_call_failures",
            "Kubernetes API calls that failed: timeout, error (no answer), refused (401/403), status (5xx)",
            ["operation", "node", "reason"],
            registry=r,
        )
        self.node_healthy = Gauge("ccserver_node_healthy", "1 if the node is healthy, else 0", ["node"], registry=r)
        self.node_ram_total = Gauge("ccserver_node_ram_total_bytes", "RAM of each node", ["node"], registry=r)
        self.node_ram_reserved = Gauge(
            "ccserver_node_ram_reserved_bytes", "RAM reserved by live containers on each node", ["node"], registry=r
        )
        self.node_cpus_total = Gauge("ccserver_node_cpus_total", "CPUs of each node", ["node"], registry=r)
        self.node_cpus_reserved = Gauge(
            "ccserver_node_cpus_reserved",
            "CPU cores reserved on each node (TES tasks; 0.10 containers reserve none)",
            ["node"],
            registry=r,
        )
        # --- the web, the callbacks, notifications, the store -------------------------------
        self.http_requests = Counter(
            "ccserver_http_requests",
            "HTTP requests by method, route template and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_seconds = Histogram(
            "ccserver_http_request_seconds",
            "From a request's arrival to its answer, by method and route template",
            ["method", "route"],
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.callbacks = Counter(
            "ccserver_callbacks",
            "Container callbacks by container kind, callback type and outcome (accepted, refused)",
            ["kind", "type", "outcome"],
            registry=r,
        )
        self.notifications = Counter(
            "ccserver_notifications", "Notifications by outcome (delivered, failed)", ["outcome"], registry=r
        )
        self.notification_attempts = Counter(
            "ccserver_notification_attempts", "HTTP tries made to deliver notifications", registry=r
        )
        self.store_seconds = Histogram(
            "ccserver_store_operation_seconds",
            "Store operations by operation and collection, from the call to its answer",
            ["operation", "collection"],
            buckets=FAST_BUCKETS,
            registry=r,
        )

    def _of(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, remembered: the library's look-up costs several
        microseconds, paid on every request and store operation otherwise.  The label sets
        are bounded, and so is what is remembered."""
        key = (id(metric), values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    # --- timing -------------------------------------------------------------------------

    def timer(self) -> Stop:
        """Start timing; the returned function gives the seconds since."""
        started = self.now()
        return lambda: self.now() - started

    # --- the scheduler and the life cycle -------------------------------------------------

    def task_placed(self, task: Mapping[str, Any], now: float) -> None:
        """A waiting task was placed (it is processing now); ``task`` is its stored document."""
        wait = queue_wait(task, now)
        if wait is not None:
            self.queue_wait.observe(wait)

    def task_ended(self, task: Mapping[str, Any]) -> None:
        """A task ended; ``task`` is its stored document, the end transition recorded."""
        ran = run_time(task)
        if ran is not None:
            self.run_time.labels(outcome=outcome(task.get("state"))).observe(ran)

    def round_done(self, seconds: float) -> None:
        self.rounds.observe(seconds)

    def launch_started(self) -> None:
        self.launches.inc()

    def launch_ended(self) -> None:
        self.launches.dec()

    def image_pulled(self, node: str, pulled_bytes: int, seconds: float) -> None:
        self.pulls.labels(node=node, outcome="pulled").inc()
        self.pull_bytes.labels(node=node).inc(pulled_bytes)
        self.pull_seconds.labels(node=node).observe(seconds)

    def image_pull_failed(self, node: str) -> None:
        self.pulls.labels(node=node, outcome="failed").inc()

    # --- the cluster ----------------------------------------------------------------------

    def docker_call(self, operation: str, node: str, seconds: float, failure: str | None = None) -> None:
        """A Docker call answered (``failure`` None) or failed (``queued``, ``timeout``, ``error``)."""
        self._of(self.docker_calls, operation, node).observe(seconds)
        if failure is not None:
            self._of(self.docker_failures, operation, node, failure).inc()

    def kube_call(self, operation: str, node: str, seconds: float, failure: str | None = None) -> None:
        """A Kubernetes API call answered (``failure`` None) or failed (``timeout``, ``error``,
        ``refused``, ``status``)."""
        self._of(self.kube_calls, operation, node).observe(seconds)
        if failure is not None:
            self._of(self.kube_failures, operation, node, failure).inc()

    def nodes(self, nodes: Iterable[NodeFigures]) -> None:
        """Set the gauges of each node (its health, RAM and CPUs, total and reserved)."""
        mb = 1024 * 1024
        for n in nodes:
            self.node_healthy.labels(node=n.name).set(1 if n.healthy else 0)
            self.node_ram_total.labels(node=n.name).set(n.total_ram_mb * mb)
            self.node_ram_reserved.labels(node=n.name).set(n.reserved_ram_mb * mb)
            self.node_cpus_total.labels(node=n.name).set(n.total_cpus)
            self.node_cpus_reserved.labels(node=n.name).set(n.reserved_cpus)

    # --- the web, callbacks, notifications, the store ---------------------------------------

    def http_request(self, method: bytes | str, route: str, status: int, seconds: float) -> None:
        label = method_label(method)
        self._of(self.http_requests, label, route, status_label(status)).inc()
        self._of(self.http_seconds, label, route).observe(seconds)

    def callback(self, collection: str, callback_type: Any, accepted: bool) -> None:
        kind = "application" if collection == "application_containers" else "data"
        kind_of = str(callback_type) if str(callback_type) in CALLBACK_TYPES else "other"
        self.callbacks.labels(kind=kind, type=kind_of, outcome="accepted" if accepted else "refused").inc()

    def notification(self, delivered: bool, attempts: int) -> None:
        self.notifications.labels(outcome="delivered" if delivered else "failed").inc()
        if attempts:
            self.notification_attempts.inc(attempts)

    def store_operation(self, operation: str, collection: str, seconds: float) -> None:
        self._of(self.store_seconds, operation, collection).observe(seconds)


class NodeFigures:
    """What the node gauges show of one node (RAM in MB, as the cluster knows it)."""

    __slots__ = ("healthy", "name", "reserved_cpus", "reserved_ram_mb", "total_cpus", "total_ram_mb")

    def __init__(
        self,
        name: str,
        healthy: bool,
        total_ram_mb: int,
        reserved_ram_mb: int,
        total_cpus: float,
        reserved_cpus: float,
    ) -> None:
        self.name, self.healthy = name, healthy
        self.total_ram_mb, self.reserved_ram_mb = total_ram_mb, reserved_ram_mb
        self.total_cpus, self.reserved_cpus = total_cpus, reserved_cpus


# --- pure parts ---------------------------------------------------------------------------


def queue_wait(task: Mapping[str, Any], now: float) -> float | None:
    """Seconds the task waited to be placed: since its last transition into created or
    waiting (its submission, or its return to the queue for another trial), else since
    ``created_at``; ``None`` when neither is known."""
    since = None
    for record in task.get("transitions") or ():
        if isinstance(record, Mapping) and record.get("state") in (states.CREATED, states.WAITING):
            since = record.get("timestamp", since)
    if since is None:
        since = task.get("created_at")
    if not isinstance(since, int | float):
        return None
    return max(0.0, now - since)


def run_time(task: Mapping[str, Any]) -> float | None:
    """Seconds from the task's last transition into processing to its end (its last
    transition); ``None`` for a task that never processed."""
    records = [r for r in task.get("transitions") or () if isinstance(r, Mapping)]
    if not records or not states.is_end(records[-1].get("state", -1)):
        return None
    started = None
    for record in records[:-1]:
        if record.get("state") == states.PROCESSING:
            started = record.get("timestamp")
    end = records[-1].get("timestamp")
    if not isinstance(started, int | float) or not isinstance(end, int | float):
        return None
    return max(0.0, end - started)


def outcome(state: Any) -> str:
    """The name of an end state (``success``, ``failed``, ``cancelled``), else ``other``."""
    return states.name(state) if isinstance(state, int) and states.is_end(state) else "other"


def method_label(method: bytes | str) -> str:
    text = method.decode("ascii", "replace") if isinstance(method, bytes) else method
    return text if text in HTTP_METHODS else "other"


def status_label(status: Any) -> str:
    return str(status) if isinstance(status, int) and 100 <= status <= 599 else "other"
