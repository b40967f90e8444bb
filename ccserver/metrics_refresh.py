"""The gauges that come from the store: documents by state, and what each node reserves.

Every ``metrics.refresh_seconds`` the refresher counts the documents of each state (one
indexed ``count`` per collection and state: no document is read, however many tasks the
store holds), and asks the cluster for each node's reservations (the live containers only,
as ``GET /nodes`` does).  A scrape never waits for the store: it reads the last values.  A
refresh has a deadline; one that fails is counted and logged once per outage, and the next
interval tries again.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ccserver import states
from ccserver.metrics import TES_STATES, Metrics, NodeFigures
from ccserver.storage.base import COLLECTIONS, Store
from ccserver.tes import states as tes_states

log = Logger(namespace="ccserver.metrics")

#: TES states in which a task holds its node's CPUs
TES_HOLDING = tes_states.LIVE


class NodeView(Protocol):
    """What the refresher reads of a node (``ccserver.cluster.service.Node``)."""

    name: str
    healthy: bool | None
    total_ram: int
    total_cpus: int | None


class ClusterView(Protocol):
    #: the Docker engines and the Kubernetes clusters
    nodes: dict[str, Any]
    clusters: dict[str, Any]

    def nodes_status(self) -> Deferred[dict[str, Any]]: ...


class StateRefresher(Service):
    name = "metrics-refresher"  # type: ignore[assignment]  # Twisted's Service has an untyped `name = None`

    def __init__(self, metrics: Metrics, store: Store, cluster: ClusterView, clock: Any, interval: float) -> None:
        self.metrics = metrics
        self.store = store
        self.cluster = cluster
        self.clock = clock
        self.interval = interval
        self._loop = LoopingCall(self._refresh_quietly)
        self._loop.clock = clock
        self._failing = False

    def startService(self) -> None:
        super().startService()
        self._loop.start(self.interval, now=True)

    def stopService(self) -> None:
        super().stopService()
        if self._loop.running:
            self._loop.stop()

    def _refresh_quietly(self) -> Deferred[None]:
        d = Deferred.fromCoroutine(self.refresh())
        # a store that hangs must not stop the loop: the refresh gives up at the next interval
        d.addTimeout(max(self.interval, 1.0), self.clock)
        d.addCallbacks(self._done, self._failed)
        return d

    def _done(self, _: Any) -> None:
        if self._failing:
            log.info("metrics: the state gauges are refreshed again")
        self._failing = False

    def _failed(self, failure: Any) -> None:
        self.metrics.refresh_failures.inc()
        if not self._failing:
            log.warn(
                "metrics: could not refresh the state gauges ({error}); trying again every {s} s",
                error=failure.getErrorMessage() or failure.type.__name__,
                s=self.interval,
            )
        self._failing = True

    async def refresh(self) -> None:
        m = self.metrics
        for state in states.LIVE_STATES + states.END_STATES:
            name = states.name(state)
            m.tasks.labels(state=name).set(await self.store.count("tasks", {"state": state}))
            m.task_groups.labels(state=name).set(await self.store.count("task_groups", {"state": state}))
            for kind in ("application", "data"):
                count = await self.store.count(f"{kind}_containers", {"state": state})
                m.containers.labels(kind=kind, state=name).set(count)
        tes = tes_states.COLLECTION in COLLECTIONS
        if tes:
            for tes_state in TES_STATES:
                m.tes_tasks.labels(state=tes_state).set(
                    await self.store.count(tes_states.COLLECTION, {"state": tes_state})
                )
        status = await self.cluster.nodes_status()
        reserved_ram = {n["name"]: int(n.get("reserved_ram") or 0) for n in status.get("healthy_nodes", [])}
        reserved_cpus = await self._tes_cpus() if tes else {}
        m.nodes(
            NodeFigures(
                name,
                bool(node.healthy),
                int(node.total_ram or 0),
                reserved_ram.get(name, 0),
                float(node.total_cpus or 0),
                reserved_cpus.get(name, 0.0),
            )
            for name, node in {**self.cluster.nodes, **self.cluster.clusters}.items()
        )
        m.refreshed.set(self.clock.seconds())

    async def _tes_cpus(self) -> dict[str, float]:
        """CPU cores held by TES tasks on each node (the live ones only: a bounded read)."""
        held = await self.store.find(
            tes_states.COLLECTION, {"state": {"$in": list(TES_HOLDING)}}, projection={"node": 1, "cpus": 1}
        )
        cpus: dict[str, float] = {}
        for task in held:
            node = task.get("node")
            if isinstance(node, str):
                cpus[node] = cpus.get(node, 0.0) + float(task.get("cpus") or 0)
        return cpus
