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
"""

from __future__ import annotations

from typing import Any

from bson import ObjectId
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ccserver import states
from ccserver.callbacks import results_sent
from ccserver.cluster import docker_ops
from ccserver.cluster.service import Cluster
from ccserver.collector import CollectorPause
from ccserver.config import Config
from ccserver.identity import DaemonIdentity
from ccserver.lifecycle import Lifecycle
from ccserver.scheduling import rounds
from ccserver.scheduling.launcher import Launcher
from ccserver.scheduling.recovery import Recovery
from ccserver.storage.base import StorageUnavailable, Store
from ccserver.threads import ThreadPoolService
from ccserver.vault import Vault, digests

log = Logger(namespace="ccserver.scheduler")

APP = "application_containers"
DATA = "data_containers"
LIVE = {"$in": list(states.LIVE_STATES)}
#: seconds a callback may wait for a data container's address from Docker
LOOKUP_TIMEOUT = 5.0
#: cancelled tasks are finished (notified, masked) this many at a time
CANCEL_CHUNK = 250


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
        pool: ThreadPoolService | None = None,
        collector: CollectorPause | None = None,
    ) -> None:
        """``pool`` runs the pure placement of each round off the reactor thread (inline
        without one, as in unit tests driven by a fake clock); ``collector`` is paused while a
        round's recovery and placement hold the many documents they read."""
        self.config = config
        self.vault = vault
        self.pool = pool
        self.collector = collector
        self.store = store
        #: this daemon's id: the label of the containers it creates, and the only ones it touches
        self.identity = identity
        #: containers of an older ccserver (no daemon label) unknown to our store, warned about once
        self._foreign_warned: set[str] = set()
        self.cluster = cluster
        self.lifecycle = lifecycle
        self.clock = clock
        #: the base URL for callbacks, set by the daemon once it listens
        self.callback_base: str | None = None
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
            callback_base=lambda: self.callback_base,
            ready=lambda node: node in self._reconciled,
            launched=self.wake,
            storage_unavailable=self.storage_unavailable,
        )
        self.recovery = Recovery(store, lifecycle, clock, pool.run if pool is not None else None)
        #: when this process started scheduling; what is older was written by an earlier one
        self.started_at = 0.0
        self._recovered = False
        #: nodes compared with the store since they were last found healthy
        self._reconciled: set[str] = set()
        #: the database was found unavailable, and not yet found back
        self.outage = False
        #: background loops that finish ended tasks (their groups are theirs to end)
        self._finishing = 0

    # --- service and wake-ups ------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.started_at = self.clock.seconds()
        self._recovered = False
        self._reconciled.clear()
        self._full_round_due = True
        self._loop.start(self.config.server.scheduling_interval_seconds, now=False)
        self.wake()

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
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
        d = Deferred.fromCoroutine(self.round(full))
        d.addCallbacks(self._round_done, self._round_failed)
        self._running = d

        def finished(_: Any) -> None:
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
        log.failure("scheduling round failed", failure)

    def storage_unavailable(self, error: BaseException) -> None:
        """Note an outage (one warning per outage); rounds are retried every interval."""
        if not self.outage:
            self.outage = True
            log.warn(
                "the database is unavailable ({error}); scheduling paused, retrying every {s} s",
                error=_message(error),
                s=self.config.server.scheduling_interval_seconds,
            )

    # --- a round -----------------------------------------------------------------------

    async def round(self, full: bool = True) -> None:
        if self.callback_base is None:
            return
        release = self.collector.hold() if self.collector is not None else lambda: None
        try:
            if not self._recovered:
                report = await self.recovery.startup(self.started_at)
                self._recovered = True
                log.info("start-up recovery: {report}", report=str(report))
            elif full:
                report = await self.recovery.periodic(groups=self._finishing == 0)
                if report:
                    log.info("recovery: {report}", report=str(report))
        finally:
            release()
        healthy = set(self.cluster.healthy_names())
        self._reconciled &= healthy  # a node that was away is compared again when it is back
        due = sorted(healthy if full else healthy - self._reconciled)
        if due:
            await self.reconcile(due)
        await self.place()
        await self.launch()
        await self.cleanup()

    async def place(self) -> None:
        # the collector is held off while the round's documents are read and placed (not
        # while the decisions are written: that may take long, and holds fewer of them)
        release = self.collector.hold() if self.collector is not None else lambda: None
        try:
            decisions = await rounds.decide(
                self.config, self.store, self.cluster, self.pool.run if self.pool is not None else None
            )
        finally:
            release()
        for task_id, why in decisions.too_large:
            await self.lifecycle.task_failed_at_once(task_id, why)
        for placed in decisions.placed:
            await self._write_placement(placed)

    async def _write_placement(self, placed: rounds.Placed) -> None:
        now = self.clock.seconds()
        dc_defaults = self.config.defaults.data_container
        new_data, kept = [], []
        task = placed.task
        if placed.new_data_containers:
            # a new data container holds the task's real specs (credentials included), kept
            # apart from its document like the task's own (see ccserver.vault)
            revealed = await self.vault.reveal(task)
            specs = dict(zip(digests(task), revealed.get("input_files") or (), strict=False))
        for new in placed.new_data_containers:
            doc = {
                "_id": new.id,
                "state": states.CREATED,
                "created_at": now,
                "transitions": [states.transition(states.CREATED, "Data container created.", now)],
                "username": task["username"],
                "input_files": [specs[digest] for digest in new.input_files],
                "callbacks": [],
                "cluster_node": new.node,
                "container_ram": dc_defaults.container_ram,
            }
            secret = self.vault.conceal(doc)
            doc["input_file_digests"] = list(new.input_files)
            new_data.append(doc)
            if secret:
                kept.append(secret)
        if new_data:
            await self.vault.keep(kept)
            await self.store.insert_many(DATA, new_data)
        app_id = ObjectId()
        await self.store.insert_one(
            APP,
            {
                "_id": app_id,
                "state": states.CREATED,
                "created_at": now,
                "transitions": [states.transition(states.CREATED, "Application container created.", now)],
                "username": task["username"],
                "task_id": [task["_id"]],
                "data_container_ids": placed.data_container_ids,
                "callbacks": [],
                "cluster_node": placed.node,
                "container_ram": task["application_container_description"]["container_ram"],
            },
        )
        await self.lifecycle.task_processing(
            task["_id"], task["task_group_id"][0], {"application_container_id": app_id}
        )

    async def launch(self) -> None:
        """Hand what was placed to the launcher, which pulls, creates and starts each container
        on its own (a round never waits for it): data containers at once, application
        containers once every data container they use is processing."""
        for dc in await self.store.find(DATA, {"state": states.CREATED}):
            if not self.launcher.busy(dc["_id"]):
                self.launcher.launch(DATA, dc)
        for app in await self.store.find(APP, {"state": states.CREATED}):
            if not self.launcher.busy(app["_id"]):
                self.launcher.launch(APP, app)
        waiting = [
            app for app in await self.store.find(APP, {"state": states.WAITING}) if not self.launcher.busy(app["_id"])
        ]
        needed = {i for app in waiting for i in app.get("data_container_ids", [])}
        ready: set[Any] = set()
        if needed:
            found = await self.store.find(DATA, {"_id": {"$in": list(needed)}}, projection={"state": 1})
            ready = {d["_id"] for d in found if d["state"] == states.PROCESSING}
        for app in waiting:
            if all(i in ready for i in app.get("data_container_ids", [])):
                self.launcher.start_application(app)

    # --- containers that ended, vanished or are left over ------------------------------------

    async def container_died(self, node: str, name: str, code: int, owner: str | None = None) -> None:
        """A container made by ccserver ended on ``node`` (from the engine's event stream, with
        the daemon label it carries).  Another daemon's container is none of our business; one
        of an older ccserver (no label) is ours only if our store knows it.  A database outage
        is noted; reconcile collects the container later."""
        try:
            if owner is not None and owner != await self.identity.get():
                return
            await self._container_died(node, name, code, legacy=owner is None)
        except StorageUnavailable as e:
            self.storage_unavailable(e)

    async def _container_died(self, node: str, name: str, code: int, legacy: bool = False) -> None:
        try:
            _id = ObjectId(name)
        except Exception:
            return  # an inspection container, removed by its runner
        for collection in (APP, DATA):
            doc = await self.store.find_one(collection, {"_id": _id}, {"state": 1, "cluster_node": 1, "callbacks": 1})
            if doc is not None:
                break
        else:
            if legacy:
                self._leave_foreign(node, name)
            else:
                await self._remove(node, name)
            return
        if states.is_end(doc["state"]):
            await self._remove(node, name)
            return
        if collection == APP and results_sent(doc):
            # its results were sent; only the answer to its last callback was lost
            await self.lifecycle.application_succeeded(_id, "Results sent (callback 3); the container has ended.")
            await self._remove(node, name)
            return
        logs = ""
        try:
            logs = await self.cluster.call(node, docker_ops.logs_tail, name)
        except Exception:
            pass
        if code:
            why = f"container exited with code {code}" + (f"; last output:\n{logs.strip()}" if logs.strip() else "")
        else:
            why = "container exited before it sent all its callbacks" + (
                f"; last output:\n{logs.strip()}" if logs.strip() else ""
            )
        await self.lifecycle.container_failed(collection, _id, why)
        await self._remove(node, name)

    def _leave_foreign(self, node: str, name: str) -> None:
        if name not in self._foreign_warned:
            self._foreign_warned.add(name)
            log.warn(
                "container {name} on node {node} was made by a ccserver without a daemon identity "
                "and is unknown to this daemon's store: left alone (remove it by hand if it is nobody's)",
                name=name,
                node=node,
            )

    async def _remove(self, node: str, name: str) -> None:
        try:
            await self.cluster.call(node, docker_ops.remove_container, name)
        except Exception as e:
            log.warn("could not remove container {name} on {node}: {error}", name=name, node=node, error=_message(e))
        try:
            self._addresses.pop(ObjectId(name), None)
        except Exception:
            pass

    async def reconcile(self, nodes: list[str] | None = None) -> None:
        """Compare engines with the store (every healthy one by default): fail live documents
        whose container vanished, collect containers that ended unnoticed (e.g. while the
        daemon was down), remove containers of ended or unknown documents.  Containers that
        are still running are left alone: their callbacks are accepted as before."""
        daemon = await self.identity.get()
        for node in nodes if nodes is not None else self.cluster.healthy_names():
            try:
                present = await self.cluster.call(node, docker_ops.our_containers, daemon)
            except Exception as e:
                self.cluster.report_error(node, e)
                continue
            for collection in (APP, DATA):
                docs = await self.store.find(
                    collection,
                    {"cluster_node": node, "state": {"$in": [states.WAITING, states.PROCESSING]}},
                    projection={"_id": 1},
                )
                for doc in docs:
                    name = str(doc["_id"])
                    if name not in present:
                        await self.lifecycle.container_failed(collection, doc["_id"], "container vanished from Docker")
                    elif present[name][1] in ("exited", "dead"):
                        try:
                            _, code = await self.cluster.call(node, docker_ops.container_state, name)
                        except docker_ops.ContainerGone:
                            await self.lifecycle.container_failed(
                                collection, doc["_id"], "container vanished from Docker"
                            )
                            continue
                        await self._container_died(node, name, code, legacy=present[name][2])
            for name, (kind, _status, legacy) in present.items():
                if kind == "inspection":
                    continue
                try:
                    _id = ObjectId(name)
                except Exception:
                    continue
                collection = APP if kind == "application" else DATA
                found = await self.store.find_one(collection, {"_id": _id}, {"state": 1})
                if found is None and legacy:
                    self._leave_foreign(node, name)
                elif found is None or states.is_end(found["state"]):
                    await self._remove(node, name)
            self._reconciled.add(node)

    async def cleanup(self) -> None:
        """Data containers that no live application container needs succeed and go;
        containers of ended (e.g. cancelled) documents are removed."""
        live_dcs = await self.store.find(DATA, {"state": LIVE}, projection={"_id": 1, "cluster_node": 1, "state": 1})
        if live_dcs:
            apps = await self.store.find(APP, {"state": LIVE}, projection={"data_container_ids": 1})
            used = {i for a in apps for i in a.get("data_container_ids", [])}
            for dc in live_dcs:
                if dc["_id"] not in used:
                    if await self.lifecycle.transition(
                        DATA, dc["_id"], states.SUCCESS, "No application container needs this data container."
                    ):
                        await self._remove(dc["cluster_node"], str(dc["_id"]))
        # cancelled application containers are killed and removed
        cancelled = await self.store.find(
            APP, {"state": states.CANCELLED, "removed": {"$ne": True}}, projection={"cluster_node": 1}
        )
        for app in cancelled:
            await self._remove(app["cluster_node"], str(app["_id"]))
            await self.store.update_one(APP, {"_id": app["_id"]}, {"$set": {"removed": True}})

    def tasks_cancelled(self, ids: list[ObjectId]) -> None:
        """Tasks were cancelled through the API: notify, mask, end their groups (in the
        background; the answer to the client does not wait for it)."""

        async def after() -> None:
            # each task first, then each group once: a group ends only after all its
            # cancelled tasks were finished, so a crash half-way leaves it live (and the
            # start-up recovery finishes the rest)
            self._finishing += 1
            try:
                groups: dict[ObjectId, None] = {}
                for start in range(0, len(ids), CANCEL_CHUNK):
                    chunk = ids[start : start + CANCEL_CHUNK]
                    for task in await self.store.find("tasks", {"_id": {"$in": chunk}}):
                        await self.lifecycle.finish_ended(task)
                        groups.update(dict.fromkeys(task.get("task_group_id") or []))
                for group_id in groups:
                    await self.lifecycle.update_group(group_id)
            except StorageUnavailable as e:
                self.storage_unavailable(e)
                self._full_round_due = True
            finally:
                self._finishing -= 1

        d = Deferred.fromCoroutine(after())
        d.addErrback(lambda f: log.failure("finishing cancelled tasks", f))

    async def data_container_address(self, dc: dict[str, Any]) -> str:
        """Where application containers reach a data container: written into its document by
        the launcher once it started; else (a start not recorded yet, an older document)
        looked up once on the cluster's look-up pool, with a short deadline, never behind
        the Docker pool's queue."""
        if dc.get("address"):
            return str(dc["address"])
        if dc["_id"] not in self._addresses:
            self._addresses[dc["_id"]] = await self.cluster.call(
                dc["cluster_node"],
                docker_ops.container_address,
                str(dc["_id"]),
                self.config.docker.net,
                timeout=LOOKUP_TIMEOUT,
                pool=self.cluster.lookup_pool,
            )
        return self._addresses[dc["_id"]]

    async def node_dead(self, node: str) -> None:
        """Fail the live containers of a dead node (their tasks are retried elsewhere)."""
        self._reconciled.discard(node)
        # a node that comes back may be a fresh engine: check its images again, and its data
        # containers' addresses are gone with them
        self.launcher.forget_node(node)
        try:
            for collection in (DATA, APP):
                docs = await self.store.find(collection, {"cluster_node": node, "state": LIVE}, projection={"_id": 1})
                for doc in docs:
                    await self.lifecycle.container_failed(collection, doc["_id"], f"node {node} is dead")
        except StorageUnavailable as e:
            self.storage_unavailable(e)


def _message(error: BaseException) -> str:
    text = str(error) or error.__class__.__name__
    return text.strip().splitlines()[0][:1000] if text.strip() else error.__class__.__name__
