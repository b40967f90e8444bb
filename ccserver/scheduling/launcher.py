"""Launches: pull, create and start one container, as an operation of its own.

A scheduling round decides and writes (placement), then hands each placed container to the
:class:`Launcher` and goes on: a round never awaits a launch, so a pull that hangs for half
an hour neither delays the next round nor the tasks that must fail at once.

Each launch has its parts bounded on their own:

* the image is pulled on the pull pool (``docker.pull_threads``), with the 30-minute pull
  deadline, one pull per (node, image) however many containers wait for it;
* create and start run on the Docker pool with the ``api_timeout`` deadline (counted from
  when they were asked, see :meth:`ccserver.cluster.service.Cluster.call`), at most
  ``docker.launches_per_node`` at once per node, so that removals, look-ups and the other
  nodes' launches are not queued behind a burst of creates;
* a data container's address is looked up once it started and written into its document,
  so that a callback never waits on Docker for it.

Every operation goes to the node's :class:`~ccserver.cluster.backend.NodeBackend` (a Docker
engine or a Kubernetes cluster): what differs (the callback base of a cluster's pods, its CPU
limit, no pulls) is the backend's.

A create or start that never ran (its deadline passed while it waited for a thread) is asked
again, up to three times.  A launch that fails otherwise fails its container (and through it
the task, which the lifecycle retries within ``max_task_trials``).  A launch that ends leaving
its document ``created`` (its node not compared with the store yet, the daemon stopping, an
error of the database) says so (:meth:`Launcher.left_created`), and the next round hands over
what is still ``created``: a round does not read every ``created`` document otherwise, since
a queue of launches would make each round read the whole queue.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from bson import ObjectId
from twisted.internet.defer import Deferred, DeferredSemaphore
from twisted.logger import Logger
from twisted.python.failure import Failure

from ccserver import states
from ccserver.cluster import docker_ops
from ccserver.cluster.backend import ContainerExists
from ccserver.cluster.service import Cluster, QueuedTooLong
from ccserver.config import Config
from ccserver.identity import DaemonIdentity
from ccserver.kinds import Kind
from ccserver.lifecycle import Lifecycle
from ccserver.metrics import Metrics
from ccserver.scheduling.messages import first_line
from ccserver.storage.base import StorageUnavailable, Store
from ccserver.vault import Vault

log = Logger(namespace="ccserver.launcher")

#: times a create or start that never ran (queued past its deadline) is asked
ATTEMPTS = 3


class Launcher:
    def __init__(
        self,
        config: Config,
        store: Store,
        cluster: Cluster,
        lifecycle: Lifecycle,
        vault: Vault,
        identity: DaemonIdentity,
        callback_base: Callable[[], str | None],
        ready: Callable[[str], bool],
        launched: Callable[[], None],
        storage_unavailable: Callable[[BaseException], None],
        metrics: Metrics | None = None,
    ) -> None:
        """``callback_base`` gives the base URL of callbacks; ``ready(node)`` says whether a
        node was compared with the store since it was found healthy (before that nothing is
        launched there); ``launched`` is called when a launch ended that a round should follow
        (the scheduler then runs one): a launch of a kind other containers need (a data
        container: application containers may now start) or one that left its document
        ``created``; ``storage_unavailable`` hears of a database outage met by a launch."""
        self.config = config
        self.store = store
        self.cluster = cluster
        self.lifecycle = lifecycle
        self.vault = vault
        self.identity = identity
        self.callback_base = callback_base
        self.ready = ready
        self.launched = launched
        self.storage_unavailable = storage_unavailable
        #: the container kinds: what each runs, when it starts (see ccserver.kinds)
        self.kinds = lifecycle.kinds
        #: hears of launches under way and of image pulls
        self.metrics = metrics if metrics is not None else Metrics()
        #: documents whose launch (or start) is under way
        self._busy: set[ObjectId] = set()
        self._slots: dict[str, DeferredSemaphore] = {}
        #: pulls under way: the Deferreds of those who wait for one
        self._pulls: dict[tuple[str, str], list[Deferred[None]]] = {}
        #: (node, image) known present
        self._images: set[tuple[str, str]] = set()
        #: the daemon is stopping: nothing more is created or started
        self.stopping = False
        #: a launch ended leaving its document created (see :meth:`left_created`)
        self._left_created = False

    # --- what the scheduler asks ---------------------------------------------------------

    def busy(self, _id: ObjectId) -> bool:
        return _id in self._busy

    def in_flight(self) -> int:
        return len(self._busy)

    def left_created(self) -> bool:
        """Did a launch end leaving its document ``created`` since the last time this was
        asked?  (Asked by a round before it reads the ``created`` documents: one left during
        that read is told to the next round.)"""
        left, self._left_created = self._left_created, False
        return left

    def launch(self, collection: str, doc: dict[str, Any], task: dict[str, Any] | None = None) -> None:
        """Pull, create and start ``doc``'s container, in the background (started only once
        the containers it needs, an application container's data containers, are processing;
        else it is left created, and a later round starts it).  ``task``: the stored document
        of the task it runs for, when the caller has just read it."""
        kind = self.kinds[collection]
        self._run(doc["_id"], self._launch(kind, doc, task), kind)

    def start(self, collection: str, doc: dict[str, Any]) -> None:
        """Start a created container (what it needs is processing)."""
        kind = self.kinds[collection]
        self._run(doc["_id"], self._start(kind, doc), kind)

    def start_application(self, app: dict[str, Any]) -> None:
        """:meth:`start` for an application container."""
        self.start("application_containers", app)

    def pulls_under_way(self) -> dict[tuple[str, str], int]:
        """(node, image) → how many launches wait for that pull besides the one that asked it."""
        return {key: len(waiters) for key, waiters in self._pulls.items()}

    def stop(self) -> None:
        """Create and start nothing more (what runs ends with the pools' shutdown bound);
        what was left ``created`` is launched by the next start."""
        self.stopping = True

    def resume(self) -> None:
        self.stopping = False

    def forget_node(self, node: str) -> None:
        """A node died: it may come back as a fresh engine, without our images."""
        self._images = {k for k in self._images if k[0] != node}

    # --- the operations ------------------------------------------------------------------

    def _run(self, _id: ObjectId, work: Any, kind: Kind) -> None:
        """Run ``work`` (a coroutine that is True when it handed the document on: started,
        failed, or moved out of ``created`` by someone else) as the launch of ``_id``."""
        if _id in self._busy:
            work.close()  # never started: nothing to undo
            return
        self._busy.add(_id)
        self.metrics.launch_started()
        needed = any(self.kinds.needing(kind))
        d = Deferred.fromCoroutine(work)

        def failed(failure: Failure) -> None:
            if self.stopping:
                log.info("launch of {id} left at shutdown: {error}", id=str(_id), error=failure.getErrorMessage())
            elif failure.check(StorageUnavailable):
                self.storage_unavailable(failure.value)
            else:
                log.failure("launch of {id} failed", failure, id=str(_id))

        def ended(handed_on: Any) -> None:
            self._busy.discard(_id)
            self.metrics.launch_ended()
            if handed_on is not True:
                self._left_created = True
            if needed or handed_on is not True:
                self.launched()

        d.addErrback(failed)
        d.addBoth(ended)

    def _slot(self, node: str) -> DeferredSemaphore:
        if node not in self._slots:
            self._slots[node] = DeferredSemaphore(self.config.docker.launches_per_node)
        return self._slots[node]

    async def _launch(self, kind: Kind, doc: dict[str, Any], task: dict[str, Any] | None = None) -> bool:
        """True when the document was handed on (see :meth:`_run`)."""
        collection = kind.collection
        assert collection is not None and kind.image_of is not None, f"{kind.word}s are not launched here"
        node, name = doc["cluster_node"], str(doc["_id"])
        if self.cluster.knows(node) and not self.ready(node):
            if self.cluster.health(node) is not False:
                return False  # not compared with the store yet since the start: the next round
        if not self.cluster.knows(node) or not self.cluster.health(node):
            await self.lifecycle.container_failed(collection, doc["_id"], f"node {node} is not available")
            return True
        if kind.task_field is None:
            task = None
        elif task is None or task.get("_id") != doc[kind.task_field][0]:
            task = await self.store.find_one("tasks", {"_id": doc[kind.task_field][0]})
            if task is None:
                await self.lifecycle.container_failed(collection, doc["_id"], "its task is gone")
                return True
        if task is not None:
            task = await self.vault.reveal(task)  # its registry_auth
        runs = kind.image_of(self.config, task)
        backend = self.cluster.backend(node)
        settings = {
            "container_type": kind.name,
            "container_id": name,
            "callback_key": self.vault.callback_key(collection, doc["_id"]),
            # a cluster's pods call back from the pod network, at the cluster's callback_url
            "callback_url": f"{backend.callback_base(self.callback_base())}{kind.callback_path}",
        }
        try:
            waited = await self._ensure_image(node, runs.image, runs.auth)
        except Exception as e:
            await self.lifecycle.container_failed(collection, doc["_id"], f"image {runs.image}: {first_line(e)}")
            return True
        # a pull may take long: the container may have been cancelled (or its node died)
        # meanwhile; an image known present took no time (a container cancelled since the
        # round read it is removed by the cleanup once it was created)
        if waited:
            now = await self.store.find_one(collection, {"_id": doc["_id"]}, {"state": 1})
            if now is None or now["state"] != states.CREATED:
                return True
        if self.stopping:
            return False
        daemon = await self.identity.get()  # read once; a database outage stops the launch here
        slot = self._slot(node)
        await slot.acquire()
        started, address = False, None
        try:
            if self.stopping:
                return False
            command = docker_ops.command_line(runs.entry_point, settings)
            # a task's own container reserves legacy_container_cpus (as placement counts it);
            # a backend that limits CPUs (a cluster) gives it that many (0: no CPU limit)
            cpus = (self.config.tes.legacy_container_cpus or None) if kind.task_field is not None else None
            try:
                await self._call(
                    lambda: backend.create(name, runs.image, command, doc["container_ram"], kind.name, daemon, cpus)
                )
            except ContainerExists:
                pass  # created before a restart: go on with it
            except Exception as e:
                await self._docker_failed(collection, doc, "could not create the container", e)
                return True
            if not await self._needs_ready(kind, doc):
                # a later round starts it, once what it needs is processing
                await self.lifecycle.transition(
                    collection, doc["_id"], states.WAITING, "Container created.", from_states=(states.CREATED,)
                )
                return True
            # what it needs is there (or it needs nothing): it starts within its own launch,
            # without waiting for a round and a turn behind other creates
            try:
                await self._call(lambda: backend.start(name))
            except Exception as e:
                await self._docker_failed(collection, doc, "could not start the container", e)
                return True
            started = True
            if kind.serves_files:
                address = await self._address(node, doc["_id"])
        finally:
            slot.release()
        if started:
            await self._started(kind, doc, from_created=True, address=address)
        return True

    async def _started(self, kind: Kind, doc: dict[str, Any], from_created: bool, address: str | None = None) -> None:
        """Record that ``doc``'s container was started: one compare-and-set write (created or
        waiting → processing, or → waiting for a kind that says itself when it is ready),
        its address in the same write."""
        assert kind.collection is not None
        extra = {"address": address} if address else None
        from_states = (states.CREATED, states.WAITING) if from_created else (states.WAITING,)
        if kind.processing_when_started:
            await self.lifecycle.transition(
                kind.collection,
                doc["_id"],
                states.PROCESSING,
                "Container started.",
                from_states=from_states,
                extra=extra,
            )
            return
        if from_created and await self.lifecycle.transition(
            kind.collection,
            doc["_id"],
            states.WAITING,
            "Container started.",
            from_states=(states.CREATED,),
            extra=extra,
        ):
            return
        if extra:  # it said it is ready before we wrote that it started (or it started earlier)
            await self.store.update_one(kind.collection, {"_id": doc["_id"]}, {"$set": extra})

    async def _needs_ready(self, kind: Kind, doc: dict[str, Any]) -> bool:
        """Are the containers ``doc`` needs (an application container's data containers) all
        processing?  True when it needs none."""
        ids = doc.get(kind.needs_field) or [] if kind.needs_field else []
        if not ids:
            return True
        needed = self.kinds.named(kind.needs_kind or "")
        assert needed is not None and needed.collection is not None
        found = await self.store.find(needed.collection, {"_id": {"$in": list(ids)}}, projection={"state": 1})
        return len(found) == len(set(ids)) and all(d["state"] == states.PROCESSING for d in found)

    async def _call(self, operation: Callable[[], Awaitable[Any]]) -> Any:
        """A create or start: one that never ran (its deadline passed while it waited for a
        Docker thread) is asked again, up to :data:`ATTEMPTS` times; an engine's error is final
        (the container fails, and the task's ``max_task_trials`` decide)."""
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return await operation()
            except QueuedTooLong as e:
                if attempt == ATTEMPTS:
                    raise
                log.warn("{error}; asking again ({n} of {of})", error=first_line(e), n=attempt + 1, of=ATTEMPTS)

    async def _address(self, node: str, _id: ObjectId) -> str | None:
        """Where other containers reach this one (a data container), recorded in its
        document so that callbacks read it instead of asking Docker."""
        try:
            address = await self.cluster.backend(node).address(str(_id))
        except Exception as e:
            # the callback path looks it up itself then (on a pool of its own, briefly)
            log.warn("address of container {id} not known: {error}", id=str(_id), error=first_line(e))
            return None
        return str(address) if address else None

    async def _start(self, kind: Kind, doc: dict[str, Any]) -> bool:
        """Start a ``waiting`` container.  True in every case: what is left ``waiting`` is
        read by every round anyway."""
        assert kind.collection is not None
        node, name = doc["cluster_node"], str(doc["_id"])
        if not self.ready(node):
            return True  # its node was not compared with the store yet: it may have run already
        slot = self._slot(node)
        await slot.acquire()
        address = None
        try:
            if self.stopping:
                return True
            try:
                await self._call(lambda: self.cluster.backend(node).start(name))
            except Exception as e:
                await self._docker_failed(kind.collection, doc, "could not start the container", e)
                return True
            if kind.serves_files:
                address = await self._address(node, doc["_id"])
        finally:
            slot.release()
        await self._started(kind, doc, from_created=False, address=address)
        return True

    async def ensure_image(self, node: str, image: str, auth: dict[str, str] | None) -> None:
        """The image on the node, per the pull policy (for the TES runner's executors: the
        same shared pulls and known images as the launches)."""
        await self._ensure_image(node, image, auth)

    async def _ensure_image(self, node: str, image: str, auth: dict[str, str] | None) -> bool:
        """The image on the node, per the pull policy: one pull per (node, image) at a time,
        shared by every launch that needs it.  False when it was known present (no wait)."""
        policy = self.config.docker.pull_policy
        key = (node, image)
        if policy != "always" and key in self._images:
            return False
        if key in self._pulls:
            waiter: Deferred[None] = Deferred()
            self._pulls[key].append(waiter)
            await waiter
            return True
        self._pulls[key] = []
        try:
            pulled = await self.cluster.backend(node).ensure_image(image, policy, auth)
        except Exception as e:
            self.metrics.image_pull_failed(node)
            for waiter in self._pulls.pop(key, []):
                waiter.errback(Failure(e))
            raise
        if pulled is not None:
            self.metrics.image_pulled(node, pulled.bytes, pulled.seconds)
        self._images.add(key)
        for waiter in self._pulls.pop(key, []):
            waiter.callback(None)
        return True

    async def _docker_failed(self, collection: str, doc: dict[str, Any], what: str, error: Exception) -> None:
        await self.lifecycle.container_failed(collection, doc["_id"], f"{what}: {first_line(error)}")
        self.cluster.report_error(doc["cluster_node"], error)
