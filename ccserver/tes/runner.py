"""The TES runner: turns placed TES tasks into attempts, ends them, retries them, cancels them
and recovers them after a restart.

Placement is the scheduler's: QUEUED TES tasks join its rounds (:func:`ccserver.scheduling.
rounds.decide`), which hands each placed one to :meth:`TesRunner.place` (a compare-and-set
QUEUED → INITIALIZING, then an :class:`~ccserver.tes.attempt.Attempt` started on its own and
never awaited by the round) and each one too large for every node to :meth:`TesRunner.too_large`.

What the runner hears (a :class:`~ccserver.wiring.ClusterListener`): a container's end
(forwarded to its attempt), a dead node (its attempts fail and are retried), a node back
(this daemon's TES containers and volumes there that no attempt owns are removed).

Every ``scheduling_interval_seconds`` and on every wake-up (the TES API wakes it when it sets
a task CANCELING) it looks at the TES tasks in INITIALIZING, RUNNING or CANCELING that have no
attempt in this process: after a restart (or a kill -9) an executor whose container is still
on the engine is waited for again (``attempt.executor`` in the document says which), anything
else counts as a SYSTEM_ERROR of the attempt and is retried; a CANCELING task's attempt is
cancelled, or, with none, its containers and volumes are removed on every node and it is
CANCELED.

An attempt's end: COMPLETE / EXECUTOR_ERROR (final), SYSTEM_ERROR (back to QUEUED while the
task has had fewer than ``defaults.max_task_trials`` trials, else final), CANCELED.  Its
TaskLog gets its end time and the reason in ``system_logs``; a final state forgets the task's
secrets in the vault and sends the notification its tag ``ccserver.notify`` asks for (a URL: a
POST of ``{"id": ..., "state": ...}``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from bson import ObjectId
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredSemaphore
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ccserver.cluster.docker_ops import KIND_LABEL
from ccserver.cluster.service import Cluster
from ccserver.config import Config
from ccserver.identity import DAEMON_LABEL, DaemonIdentity
from ccserver.scheduling.messages import first_line
from ccserver.storage.base import StorageUnavailable, Store
from ccserver.tes import docker_tes, records
from ccserver.tes import states as tes_states
from ccserver.tes.attempt import Attempt
from ccserver.tes.kube_attempt import KubeAttempt, task_of
from ccserver.tes.kube_staging import StagingExchange
from ccserver.tes.stager import Stager
from ccserver.vault import Vault

log = Logger(namespace="ccserver.tes")

C = tes_states.COLLECTION
#: the tag whose value is the URL notified when the task ends
NOTIFY_TAG = "ccserver.notify"

#: the fields the periodic check reads of every live task (the notification tag among them)
CHECK_FIELDS = {"state": 1, "trials": 1, "node": 1, "tags": 1, "tag_list": 1}

EnsureImage = Callable[[str, str, Any], Awaitable[None]]
Send = Callable[..., Any]


def notify_url(task: dict[str, Any]) -> str | None:
    """The value of the task's ``ccserver.notify`` tag: from ``tag_list`` (the form every
    backend stores, since a key with a dot cannot be a MongoDB field name), else ``tags``."""
    for entry in task.get("tag_list") or ():
        if isinstance(entry, dict) and entry.get("key") == NOTIFY_TAG:
            value = entry.get("value")
            return value if isinstance(value, str) and value else None
    tags = task.get("tags")
    value = tags.get(NOTIFY_TAG) if isinstance(tags, dict) else None
    return value if isinstance(value, str) and value else None


class TesRunner(Service):
    name = "tes-runner"  # type: ignore[assignment]  # Twisted's Service has an untyped `name = None`

    def __init__(
        self,
        config: Config,
        store: Store,
        cluster: Cluster,
        vault: Vault,
        identity: DaemonIdentity,
        stager: Stager,
        ensure_image: EnsureImage,
        send: Send,
        wake: Callable[[], None],
        clock: Any,
        exchange: StagingExchange | None = None,
        staging_pool: Any = None,
    ) -> None:
        """``ensure_image(node, image, auth)`` makes an image present per the pull policy (the
        launcher's shared pulls); ``send(url, json_data)`` posts a notification (the
        :class:`~ccserver.notifications.Notifier`); ``wake`` asks for a scheduling round (a
        retried task is QUEUED again).  ``exchange`` and ``staging_pool`` (a
        :class:`~ccserver.threads.ThreadPoolService`) stage the tasks placed on Kubernetes
        clusters (:mod:`ccserver.tes.kube_attempt`); without them none is placed there."""
        self.config = config
        self.store = store
        self.cluster = cluster
        self.vault = vault
        self.identity = identity
        self.stager = stager
        self.ensure_image = ensure_image
        self.send = send
        self.wake_scheduler = wake
        self.clock = clock
        self.exchange = exchange
        self.staging_pool = staging_pool
        #: attempts under way in this process, by task id
        self.attempts: dict[ObjectId, Attempt] = {}
        #: tasks being claimed (between their CAS and their attempt's start)
        self._claiming: set[ObjectId] = set()
        self._slots: dict[str, DeferredSemaphore] = {}
        self._loop = LoopingCall(self.wake)
        self._loop.clock = clock
        self._checking: Deferred[None] | None = None
        self._again = False
        self.stopping = False

    # --- service --------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.stopping = False
        self._loop.start(self.config.server.scheduling_interval_seconds, now=True)

    def stopService(self) -> None:
        super().stopService()
        # attempts are left as they are: the next start resumes (or retries) them
        self.stopping = True
        if self._loop.running:
            self._loop.stop()

    def _slot(self, node: str) -> DeferredSemaphore:
        if node not in self._slots:
            self._slots[node] = DeferredSemaphore(self.config.docker.launches_per_node)
        return self._slots[node]

    # --- what the scheduler's round hands over --------------------------------------------

    async def place(self, doc: dict[str, Any], node: str) -> None:
        """Claim a placed QUEUED task for an attempt on ``node`` and start it in the background."""
        if self.stopping or doc["_id"] in self.attempts or doc["_id"] in self._claiming:
            return
        self._claiming.add(doc["_id"])
        try:
            if not await records.claim(self.store, doc["_id"], node, self.clock.seconds()):
                return  # cancelled (or claimed) meanwhile
            claimed = await self.store.find_one(C, {"_id": doc["_id"]})
            if claimed is None:
                return
            self._begin(self._new_attempt(claimed, node))
        finally:
            self._claiming.discard(doc["_id"])

    async def too_large(self, task_id: ObjectId, why: str) -> None:
        if await records.too_large(self.store, task_id, why, self.clock.seconds()):
            log.info("TES task {id}: {why}", id=str(task_id), why=why)
            found = await self.store.find_one(C, {"_id": task_id})
            if found is not None:
                await self._finished(found, tes_states.SYSTEM_ERROR)

    def _new_attempt(self, doc: dict[str, Any], node: str, resume: dict[str, Any] | None = None) -> Attempt:
        """The attempt of ``doc`` on ``node``: on a Docker engine, or on a Kubernetes cluster
        (never resumed: a restart retries it)."""
        site = self.cluster.clusters.get(node)
        if site is not None and self.exchange is not None:
            return KubeAttempt(self, doc, node, site.kube, self.stager, self.exchange, self.staging_pool)
        return Attempt(self, doc, node, self._slot(node), self.ensure_image, self.stager, resume=resume)

    def _begin(self, attempt: Attempt) -> None:
        self.attempts[attempt.task_id] = attempt
        d = Deferred.fromCoroutine(attempt.run())

        def done(result: Any) -> Any:
            if self.attempts.get(attempt.task_id) is attempt:
                del self.attempts[attempt.task_id]
            return result

        d.addBoth(done)
        d.addErrback(lambda f: log.failure("TES attempt of {id}", f, id=attempt.id))

    # --- the end of an attempt ------------------------------------------------------------

    async def attempt_ended(self, attempt: Attempt, outcome: str, why: str, task: dict[str, Any]) -> None:
        now = self.clock.seconds()
        index = attempt.log_index
        log_end = {f"logs.{index}.end_time": records.rfc3339(now)}
        push = {f"logs.{index}.system_logs": why} if why else None
        live = list(tes_states.LIVE)
        if outcome == tes_states.CANCELED:
            moved = await records.move(
                self.store, attempt.task_id, (tes_states.CANCELING,), outcome, why, now, set_=log_end, push=push
            )
        elif outcome == tes_states.SYSTEM_ERROR and attempt.number < self.config.defaults.max_task_trials:
            moved = await records.move(
                self.store,
                attempt.task_id,
                (tes_states.INITIALIZING, tes_states.RUNNING),
                tes_states.QUEUED,
                f"Attempt {attempt.number} failed ({why}); queued again.",
                now,
                set_={**log_end, "node": None},
                push=push,
                unset={"attempt": ""},
            )
            if moved:
                log.info("TES task {id}: attempt {n} failed: {why}; retried", id=attempt.id, n=attempt.number, why=why)
                self.wake_scheduler()
                return
        else:
            moved = await records.move(
                self.store,
                attempt.task_id,
                (tes_states.INITIALIZING, tes_states.RUNNING),
                outcome,
                why,
                now,
                set_=log_end,
                push=push,
            )
        if not moved:
            # a cancel came in between: the task is CANCELING, and its things are removed now
            found = await self.store.find_one(C, {"_id": attempt.task_id}, {"state": 1})
            if found is not None and found["state"] == tes_states.CANCELING:
                moved = await records.move(
                    self.store,
                    attempt.task_id,
                    (tes_states.CANCELING,),
                    tes_states.CANCELED,
                    "Cancelled.",
                    now,
                    set_=log_end,
                )
                outcome = tes_states.CANCELED
            elif found is not None and found["state"] in live:
                log.warn("TES task {id}: its end could not be recorded (state {s})", id=attempt.id, s=found["state"])
        if moved:
            log.info("TES task {id}: {outcome} ({why})", id=attempt.id, outcome=outcome, why=why)
            await self._finished(task, outcome)
        self.wake_scheduler()  # its RAM and CPUs are free again

    async def _finished(self, task: dict[str, Any], outcome: str) -> None:
        """A final state: forget the secrets, notify when the tags ask for it."""
        try:
            await self.vault.forget([task["_id"]])
        except Exception as e:
            log.warn("could not forget the secrets of TES task {id}: {e}", id=str(task["_id"]), e=first_line(e))
        url = notify_url(task)
        if url:
            self.send(url, {"id": str(task["_id"]), "state": outcome})

    # --- what the cluster tells (ccserver.wiring.ClusterListener) --------------------------

    def container_died(self, node: str, name: str, code: int, owner: str | None) -> None:
        attempt = self._attempt_of(node, name)
        if attempt is not None:
            attempt.container_died(name, code)

    def _attempt_of(self, node: str, name: str) -> Attempt | None:
        task_id = task_of(name)
        attempt = self.attempts.get(task_id) if task_id is not None else None
        return attempt if attempt is not None and attempt.node == node else None

    def container_running(self, node: str, name: str) -> None:
        """A cluster's pod runs its last container: its attempt looks at it now."""
        attempt = self._attempt_of(node, name)
        if attempt is not None:
            attempt.poke()

    def container_stuck(self, node: str, name: str, reason: str) -> None:
        """A cluster's pod could not start (its Job is deleted): the attempt failed."""
        attempt = self._attempt_of(node, name)
        if attempt is not None:
            attempt.fail(reason)

    def node_dead(self, node: str) -> None:
        for attempt in list(self.attempts.values()):
            if attempt.node == node:
                attempt.fail(f"node {node} is dead")

    def node_healthy(self, node: str) -> None:
        if node in self.cluster.clusters:
            sweep = self._sweep_cluster(node)
        elif node in self.cluster.nodes:
            sweep = self._sweep(node)
        else:
            return
        d = Deferred.fromCoroutine(sweep)
        d.addErrback(lambda f: log.warn("sweeping TES leftovers on {node}: {e}", node=node, e=f.getErrorMessage()))
        self.wake()

    async def _sweep(self, node: str) -> None:
        """Remove this daemon's TES containers and volumes on ``node`` that no attempt owns."""
        daemon = await self.identity.get()
        found = await self.cluster.call(node, docker_tes.running_tasks, daemon)
        owners = {name[len(docker_tes.NAME_PREFIX) :].split("-", 1)[0] for name in found}
        for task_id in owners:
            try:
                oid = ObjectId(task_id)
            except Exception:
                continue
            if oid in self.attempts:
                continue
            doc = await self.store.find_one(C, {"_id": oid}, {"state": 1, "node": 1})
            if doc is not None and doc["state"] in tes_states.LIVE and doc.get("node") == node:
                continue  # recovered by the next check (resumed or retried)
            await self.cluster.call(node, docker_tes.remove_task_leftovers, daemon, task_id)

    async def _sweep_cluster(self, node: str) -> None:
        """Remove this daemon's TES Jobs on the cluster ``node`` that no attempt owns."""
        daemon = await self.identity.get()
        kube = self.cluster.clusters[node].kube
        names = await kube.jobs_labelled(f"{KIND_LABEL}={docker_tes.EXECUTOR_KIND},{DAEMON_LABEL}={daemon}")
        for name in names:
            oid = task_of(name)
            if oid is None or oid in self.attempts:
                continue
            doc = await self.store.find_one(C, {"_id": oid}, {"state": 1, "node": 1})
            if doc is not None and doc["state"] in tes_states.LIVE and doc.get("node") == node:
                continue  # recovered by the next check (retried)
            await kube.remove(name, daemon)

    # --- the periodic check: cancels and orphans -------------------------------------------

    def wake(self) -> None:
        """Look at CANCELING tasks and at live tasks without an attempt, soon."""
        if not self.running or self.stopping:
            return
        if self._checking is not None:
            self._again = True
            return
        self._again = False
        d = Deferred.fromCoroutine(self.check())

        def done(_: Any) -> None:
            self._checking = None
            if self._again:
                self.wake()

        def failed(f: Any) -> None:
            if not f.check(StorageUnavailable):
                log.failure("TES check failed", f)

        self._checking = d
        d.addErrback(failed)
        d.addBoth(done)

    async def check(self) -> None:
        # only what is looked at here (it runs at every wake-up): a task to recover or cancel
        # is read whole again (``_recover``)
        docs = await self.store.find(C, {"state": {"$in": list(tes_states.LIVE)}}, projection=CHECK_FIELDS)
        for doc in docs:
            if doc["_id"] in self._claiming:
                continue
            attempt = self.attempts.get(doc["_id"])
            if attempt is not None:
                if doc["state"] == tes_states.CANCELING:
                    attempt.cancel()
                continue
            if doc["state"] == tes_states.CANCELING:
                await self._cancel_without_attempt(doc)
                continue
            await self._recover(doc)

    async def _cancel_without_attempt(self, doc: dict[str, Any]) -> None:
        daemon = await self.identity.get()
        for node in self.cluster.node_names():
            if not self.cluster.health(node):
                continue
            try:
                site = self.cluster.clusters.get(node)
                if site is None:
                    await self.cluster.call(node, docker_tes.remove_task_leftovers, daemon, str(doc["_id"]))
                    continue
                selector = f"{docker_tes.TASK_LABEL}={doc['_id']},{DAEMON_LABEL}={daemon}"
                for name in await site.kube.jobs_labelled(selector):
                    await site.kube.remove(name, daemon)
            except Exception as e:
                log.warn("cancel of TES task {id}: {e}", id=str(doc["_id"]), e=first_line(e))
                return  # the next check tries again
        now = self.clock.seconds()
        if await records.move(self.store, doc["_id"], (tes_states.CANCELING,), tes_states.CANCELED, "Cancelled.", now):
            await self._finished(doc, tes_states.CANCELED)
            self.wake_scheduler()

    async def _recover(self, doc: dict[str, Any]) -> None:
        """A live task without an attempt here (the daemon restarted): resume the executor
        whose container is still on the engine, or count the attempt as failed."""
        fresh = await self.store.find_one(C, {"_id": doc["_id"]})
        if fresh is None or fresh["state"] not in tes_states.LIVE or fresh.get("trials") != doc.get("trials"):
            return  # it moved on since it was read
        if doc["_id"] in self.attempts or doc["_id"] in self._claiming:
            return
        doc = fresh
        if doc["state"] == tes_states.CANCELING:
            await self._cancel_without_attempt(doc)
            return
        node = str(doc.get("node") or "")
        health = self.cluster.health(node) if self.cluster.knows(node) else False
        if health is None:
            return  # not checked yet: the next check
        record = doc.get("attempt") or {}
        resumable = False
        on_engine = node in self.cluster.nodes
        if health and on_engine and doc["state"] == tes_states.RUNNING and record.get("container"):
            try:
                found = await self.cluster.call(node, docker_tes.state, record["container"])
                resumable = found.get("Status") in ("running", "exited", "dead")
                if resumable:
                    log.info(
                        "TES task {id}: executor {i} ({status}) resumed after a restart",
                        id=str(doc["_id"]),
                        i=record.get("executor"),
                        status=found.get("Status"),
                    )
            except Exception:
                resumable = False
        attempt = self._new_attempt(doc, node or "", resume=record if resumable else None)
        if resumable:
            self._begin(attempt)
            return
        # nothing to resume: the attempt failed (its leftovers go), and the task is retried
        why = "the daemon restarted during the attempt" if health else f"node {node} is not available"
        self.attempts[attempt.task_id] = attempt
        try:
            if health:
                await attempt._remove_all()
            await self.attempt_ended(attempt, tes_states.SYSTEM_ERROR, why, doc)
        finally:
            self.attempts.pop(attempt.task_id, None)
