"""The scheduler: a loop of rounds that turns waiting tasks into running containers.

A round (cc-protocol §8): place waiting tasks (the pure :mod:`ccserver.scheduling.placement`
decides, this service writes the documents), hand what was placed to the
:mod:`launcher <ccserver.scheduling.launcher>` (which pulls, creates and starts each container
on its own, data containers first, application containers once their data containers are
processing; a round never waits for a launch, and every launch that ends asks for a round),
and clean up (remove containers of ended documents, end data containers nobody
needs).  Rounds run every ``scheduling_interval_seconds`` and at once on ``wake()``; they never
overlap, and any number of wake-ups during a round cause exactly one more round.

The first round starts with the start-up recovery (:mod:`ccserver.scheduling.recovery`), and
each node is reconciled with the store once it is known to be healthy, before anything is
launched on it: containers that kept running while the daemon was down go on, those that
ended are collected.  A round that finds the database unavailable stops quietly; one warning
is logged per outage, and the next interval tries again.

The parts: :mod:`~ccserver.scheduling.rounds` and :mod:`~ccserver.scheduling.placement`
decide, :mod:`~ccserver.scheduling.placement_writes` records the decisions,
:mod:`~ccserver.scheduling.launcher` pulls, creates and starts, :mod:`~ccserver.scheduling.cleanup`
reconciles the engines with the store and removes what is no longer needed, and
:mod:`~ccserver.scheduling.recovery` repairs what a crash left half-done.  This service owns
the loop that runs them.
"""

from __future__ import annotations

from typing import Any, Protocol

from bson import ObjectId
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ccserver import states
from ccserver.cluster.service import Cluster
from ccserver.collector import CollectorPause
from ccserver.config import Config
from ccserver.identity import DaemonIdentity
from ccserver.kinds import Kind
from ccserver.lifecycle import Lifecycle
from ccserver.metrics import Metrics
from ccserver.scheduling import rounds
from ccserver.scheduling.cleanup import Cleanup
from ccserver.scheduling.launcher import Launcher
from ccserver.scheduling.messages import first_line
from ccserver.scheduling.placement_writes import write_placement
from ccserver.scheduling.recovery import Recovery
from ccserver.storage.base import StorageUnavailable, Store
from ccserver.threads import ThreadPoolService
from ccserver.vault import Vault
from ccserver.wiring import CallbackAddress

log = Logger(namespace="ccserver.scheduler")

LIVE = {"$in": list(states.LIVE_STATES)}


class TesPlacements(Protocol):
    """Where a round's TES decisions go (:class:`ccserver.tes.runner.TesRunner`)."""

    async def place(self, doc: dict[str, Any], node: str) -> None: ...

    async def too_large(self, task_id: ObjectId, why: str) -> None: ...


class Scheduler(Service):
    name = "scheduler"  # type: ignore[assignment]  # Twisted's Service has an untyped `name = None`

    def __init__(
        self,
        config: Config,
        store: Store,
        cluster: Cluster,
        lifecycle: Lifecycle,
        clock: Any,
        vault: Vault,
        identity: DaemonIdentity,
        address: CallbackAddress,
        pool: ThreadPoolService | None = None,
        collector: CollectorPause | None = None,
        tes: TesPlacements | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        """``pool`` runs the pure placement of each round off the reactor thread (inline
        without one, as in unit tests driven by a fake clock); ``collector`` is paused while a
        round's recovery and placement hold the many documents they read."""
        self.config = config
        #: hears the rounds' durations, the queue waits and the launches (private without one)
        self.metrics = metrics if metrics is not None else Metrics()
        self.vault = vault
        #: takes the TES tasks a round placed (None: TES tasks are not run)
        self.tes = tes
        self.pool = pool
        self.collector = collector
        self.store = store
        #: this daemon's id: the label of the containers it creates, and the only ones it touches
        self.identity = identity
        self.cluster = cluster
        self.lifecycle = lifecycle
        #: the container kinds (see ccserver.kinds): the life cycle's
        self.kinds = lifecycle.kinds
        self.clock = clock
        #: the base URL for callbacks, known once the daemon listens
        self.address = address
        self._loop = LoopingCall(self._tick)
        self._loop.clock = clock
        self._running: Deferred[None] | None = None
        self._again = False
        self._pending_call: Any = None
        self._full_round_due = True
        #: data container addresses looked up for callbacks (when their document has none yet)
        self._addresses: dict[ObjectId, str] = {}
        self.launcher = Launcher(
            config,
            store,
            cluster,
            lifecycle,
            vault,
            identity,
            callback_base=address.get,
            ready=lambda node: node in self.cleaner.reconciled,
            launched=self.wake,
            storage_unavailable=self.storage_unavailable,
            metrics=self.metrics,
        )
        self.recovery = Recovery(store, lifecycle, clock, pool.run if pool is not None else None)
        #: when this process started scheduling; what is older was written by an earlier one
        self.started_at = 0.0
        self._recovered = False
        self.cleaner = Cleanup(store, cluster, lifecycle, identity, removed=self._forget_address)
        #: the database was found unavailable, and not yet found back
        self.outage = False

    # --- service and wake-ups ------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.launcher.resume()
        self.started_at = self.clock.seconds()
        self._recovered = False
        self.cleaner.reconciled.clear()
        self._full_round_due = True
        self._loop.start(self.config.server.scheduling_interval_seconds, now=False)
        self.wake()

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        self.launcher.stop()
        if self._loop.running:
            self._loop.stop()
        if self._pending_call is not None and self._pending_call.active():
            self._pending_call.cancel()
        self._pending_call = None
        running = self._running
        if running is None:
            return None
        waiting: Deferred[None] = Deferred()
        running.addBoth(lambda _: waiting.callback(None) if not waiting.called else None)
        waiting.addTimeout(self.config.server.shutdown_timeout_seconds, self.clock, onTimeoutCancel=lambda *a: None)
        return waiting

    def wake(self) -> None:
        """Ask for a round soon; calls during a round coalesce into one more round."""
        if not self.running:
            return
        if self._running is not None:
            self._again = True
            return
        if self._pending_call is None or not self._pending_call.active():
            self._pending_call = self.clock.callLater(0, self._start_round)

    def _tick(self) -> None:
        self._full_round_due = True
        self.wake()

    def _start_round(self) -> None:
        self._pending_call = None
        if self._running is not None or not self.running:
            return
        full, self._full_round_due = self._full_round_due, False
        self._again = False
        elapsed = self.metrics.timer()
        d = Deferred.fromCoroutine(self.round(full))
        d.addCallbacks(self._round_done, self._round_failed)
        self._running = d

        def finished(_: Any) -> None:
            self.metrics.round_done(elapsed())
            self._running = None
            if self._again and not self.outage:
                self.wake()

        d.addBoth(finished)

    def _round_done(self, _: Any) -> None:
        if self.outage:
            self.outage = False
            self._full_round_due = True
            log.info("the database answers again; scheduling resumed")
            self.wake()

    def _round_failed(self, failure: Any) -> None:
        if failure.check(StorageUnavailable):
            self.storage_unavailable(failure.value)
            return
        self._full_round_due = True  # what it left half done (placed, not launched) is found again
        log.failure("scheduling round failed", failure)

    def storage_unavailable(self, error: BaseException) -> None:
        """Note an outage (one warning per outage); rounds are retried every interval."""
        if not self.outage:
            self.outage = True
            log.warn(
                "the database is unavailable ({error}); scheduling paused, retrying every {s} s",
                error=first_line(error),
                s=self.config.server.scheduling_interval_seconds,
            )

    # --- a round -----------------------------------------------------------------------

    async def round(self, full: bool = True) -> None:
        if self.address.get() is None:
            return
        release = self.collector.hold() if self.collector is not None else lambda: None
        try:
            if not self._recovered:
                report = await self.recovery.startup(self.started_at)
                self._recovered = True
                log.info("start-up recovery: {report}", report=str(report))
            elif full:
                report = await self.recovery.periodic(groups=self.lifecycle.finishing == 0)
                if report:
                    log.info("recovery: {report}", report=str(report))
        finally:
            release()
        healthy = set(self.cluster.healthy_names())
        self.cleaner.reconciled &= healthy  # a node that was away is compared again when it is back
        due = sorted(healthy if full else healthy - self.cleaner.reconciled)
        if due:
            await self.reconcile(due)
        await self.place()
        # the documents a launch left created (and, on a full round, every created one: what
        # an earlier process left, what nobody said); those placed this round are launched
        left = self.launcher.left_created()
        await self.launch(created=full or left)
        await self.cleanup()

    async def place(self) -> None:
        # the collector is held off while the round's documents are read and placed (not
        # while the decisions are written: that may take long, and holds fewer of them)
        release = self.collector.hold() if self.collector is not None else lambda: None
        try:
            decisions = await rounds.decide(
                self.config, self.store, self.cluster, self.pool.run if self.pool is not None else None, self.kinds
            )
        finally:
            release()
        for task_id, why in decisions.too_large:
            await self.lifecycle.task_failed_at_once(task_id, why)
        groups: set[ObjectId] = set()
        for placed in decisions.placed:
            written = await write_placement(
                placed, self.config, self.store, self.lifecycle, self.vault, self.clock.seconds(), groups
            )
            self.metrics.task_placed(placed.task, self.clock.seconds())
            # launched at once: the first containers start while the round writes the others
            for collection, doc in written:
                if not self.launcher.busy(doc["_id"]):
                    self.launcher.launch(collection, doc, placed.task)

        if self.tes is not None:
            for task_id, why in decisions.tes_too_large:
                await self.tes.too_large(task_id, why)
            for doc, node in decisions.tes_placed:
                await self.tes.place(doc, node)

    def _needed_first(self, launched: bool = False) -> list[Kind]:
        """The kinds with documents (``launched``: those the launcher launches), those that
        others need first (data containers before the application containers that use them)."""
        kinds = [k for k in self.kinds.kept() if k.image_of is not None or not launched]
        return sorted(kinds, key=lambda k: not any(self.kinds.needing(k)))

    async def launch(self, created: bool = True) -> None:
        """Hand what was placed to the launcher, which pulls, creates and starts each container
        on its own (a round never waits for it): containers that need nothing at once, the
        others (application containers) once every container they need is processing.

        ``created``: read the ``created`` documents too (those the launcher does not hold),
        not only the ``waiting`` ones.  The placement of a round launches what it wrote, so a
        round reads them only when a launch left one (see :meth:`Launcher.left_created`) and on
        full rounds: a queue of launches would otherwise be read whole by every round."""
        kinds = self._needed_first(launched=True)
        for kind in kinds if created else ():
            assert kind.collection is not None
            for doc in await self.store.find(kind.collection, {"state": states.CREATED}):
                if not self.launcher.busy(doc["_id"]):
                    self.launcher.launch(kind.collection, doc)
        for kind in kinds:
            if kind.needs_field is None:
                continue
            assert kind.collection is not None
            needed_kind = self.kinds.named(kind.needs_kind or "")
            assert needed_kind is not None and needed_kind.collection is not None
            waiting = [
                doc
                for doc in await self.store.find(kind.collection, {"state": states.WAITING})
                if not self.launcher.busy(doc["_id"])
            ]
            needed = {i for doc in waiting for i in doc.get(kind.needs_field) or []}
            ready: set[Any] = set()
            if needed:
                found = await self.store.find(
                    needed_kind.collection, {"_id": {"$in": list(needed)}}, projection={"state": 1}
                )
                ready = {d["_id"] for d in found if d["state"] == states.PROCESSING}
            for doc in waiting:
                if all(i in ready for i in doc.get(kind.needs_field) or []):
                    self.launcher.start(kind.collection, doc)

    # --- containers that ended, vanished or are left over ------------------------------------

    # --- what the cluster tells (ccserver.wiring.ClusterListener) -----------------------------

    def container_died(self, node: str, name: str, code: int, owner: str | None) -> None:
        d = Deferred.fromCoroutine(self._container_died(node, name, code, owner))
        d.addErrback(lambda f: log.failure("handling the end of container {name}", f, name=name))

    def container_running(self, node: str, name: str) -> None:
        """Nothing to do: the container's callbacks say how far it got."""

    def container_stuck(self, node: str, name: str, reason: str) -> None:
        d = Deferred.fromCoroutine(self._container_stuck(node, name, reason))
        d.addErrback(lambda f: log.failure("handling container {name} that could not run", f, name=name))

    def node_dead(self, node: str) -> None:
        d = Deferred.fromCoroutine(self._node_dead(node))
        d.addErrback(lambda f: log.failure("failing the containers of dead node {node}", f, node=node))

    def node_healthy(self, node: str) -> None:
        self.wake()

    async def _container_died(self, node: str, name: str, code: int, owner: str | None = None) -> None:
        """A container made by ccserver ended on ``node`` (from the engine's event stream, with
        the daemon label it carries).  Another daemon's container is none of our business; one
        of an older ccserver (no label) is ours only if our store knows it.  A database outage
        is noted; reconcile collects the container later."""
        try:
            if owner is not None and owner != await self.identity.get():
                return
            await self.cleaner.container_died(node, name, code, legacy=owner is None)
        except StorageUnavailable as e:
            self.storage_unavailable(e)

    async def _container_stuck(self, node: str, name: str, reason: str) -> None:
        """A container could not run on ``node`` (a cluster's pod Pending too long, an image
        it may not pull; the Job is gone already): it failed, with ``reason`` as the
        transition's description (a trial: the life cycle retries the task within
        ``max_task_trials``)."""
        try:
            await self.cleaner.container_stuck(node, name, reason)
        except StorageUnavailable as e:
            self.storage_unavailable(e)

    async def reconcile(self, nodes: list[str] | None = None) -> None:
        """Compare engines with the store (see :meth:`Cleanup.reconcile`)."""
        await self.cleaner.reconcile(nodes)

    async def cleanup(self) -> None:
        """Data containers nobody needs and containers of ended documents go (see :mod:`cleanup`)."""
        await self.cleaner.cleanup()

    def _forget_address(self, _id: ObjectId) -> None:
        self._addresses.pop(_id, None)

    async def data_container_address(self, dc: dict[str, Any]) -> str:
        """Where application containers reach a data container: written into its document by
        the launcher once it started; else (a start not recorded yet, an older document)
        looked up once on the cluster's look-up pool, with a short deadline, never behind
        the Docker pool's queue."""
        if dc.get("address"):
            return str(dc["address"])
        if dc["_id"] not in self._addresses:
            self._addresses[dc["_id"]] = await self.cluster.backend(dc["cluster_node"]).address(
                str(dc["_id"]), lookup=True
            )
        return self._addresses[dc["_id"]]

    async def _node_dead(self, node: str) -> None:
        """Fail the live containers of a dead node (their tasks are retried elsewhere)."""
        self.cleaner.reconciled.discard(node)
        # a node that comes back may be a fresh engine: check its images again, and its data
        # containers' addresses are gone with them
        self.launcher.forget_node(node)
        try:
            for kind in self._needed_first():  # those others need first: theirs fail with them
                assert kind.collection is not None
                docs = await self.store.find(
                    kind.collection, {"cluster_node": node, "state": LIVE}, projection={"_id": 1}
                )
                for doc in docs:
                    await self.lifecycle.container_failed(kind.collection, doc["_id"], f"node {node} is dead")
        except StorageUnavailable as e:
            self.storage_unavailable(e)
