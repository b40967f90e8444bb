"""The cluster: every configured Docker engine (node), its health, and calls to it.

Each Docker call of the scheduler goes through the one bounded Docker thread pool
(``thread_limit``), with the engine's ``api_timeout`` in the SDK client and one deadline on
the Deferred that counts from when the call was asked (queue time included; a call whose
deadline passed before a thread took it never runs).  Image pulls have a pool of their own
(``pull_threads``), and so do the short look-ups a request waits for.  Container ends are
learnt from each engine's event stream (one reader thread per node, outside the pool, since
it blocks for as long as the node lives) and, as a safety net, from the scheduler's periodic
reconciliation.

Health: every ``heartbeat_seconds`` each node is asked for ``info`` on a small pool of its own
(one thread per node), so that a busy Docker pool (long pulls, many starts) neither delays a
check nor makes it time out, and a hanging node does not delay the checks of the others.  A
node that does not answer within ``api_timeout + HEALTH_SLACK`` seconds, or whose event
stream breaks and which then fails its check, is dead; so a node is found dead at most
``heartbeat_seconds + api_timeout + HEALTH_SLACK`` seconds after it stopped answering
(at once when its engine closes the connections, as a killed ``dockerd`` does).  A dead node
that answers again runs an inspection container before it is used again (with
``dead_node_invalidation``), so a node that answers but cannot run containers does not flap.

Kubernetes clusters (``[kubernetes.clusters.NAME]``) are nodes too, in the same name space:
each is a :class:`ccserver.kubernetes.node.KubeNode` made here, with this service as its
:class:`~ccserver.kubernetes.node.KubeEvents`.  Their health check is ``info()`` (the
allocatable RAM and CPUs of the cluster's Ready nodes, with the cluster's own
``api_timeout_seconds`` deadline, plus :data:`HEALTH_SLACK`); no inspection container runs on
a cluster (the kubelet, not ccserver, runs its pods; a cluster that answers but cannot run
them shows as pods Pending too long, which fail their containers into retries).  Dead and
healthy go through the same ``_mark_dead``/``_mark_healthy`` as an engine (so the live
containers of a dead cluster fail into retries elsewhere), the pod watch runs while it is
healthy, and a watch that cannot be resumed re-checks it.  ``backend(name)`` gives either kind
of node as the operations the scheduler needs (:mod:`ccserver.cluster.backend`); the
Docker-only parts (TES, live logs, inspections) use ``nodes``, which holds the engines only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import docker
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from ccserver import states
from ccserver.cluster import docker_ops
from ccserver.cluster.backend import PULL_TIMEOUT, DockerBackend, Kube, KubeBackend, NodeBackend
from ccserver.cluster.engine import describe_error, make_client
from ccserver.config import Config, KubeClusterConfig, NodeConfig, auth_config
from ccserver.identity import DaemonIdentity
from ccserver.kinds import APPLICATION, DATA, INSPECTION
from ccserver.kubernetes.node import KubeNode
from ccserver.metrics import Metrics
from ccserver.storage.base import StorageError, Store
from ccserver.tes import states as tes_states
from ccserver.threads import ThreadPoolService
from ccserver.wiring import CallbackAddress, ClusterListener

log = Logger(namespace="ccserver.cluster")

#: extra seconds over api_timeout before a Docker call's Deferred times out
CALL_SLACK = 5.0
#: extra seconds over api_timeout before a health check gives up on a node
HEALTH_SLACK = 1.0


#: an event stream that ended sooner than this after it opened is re-opened only after it
EVENTS_RETRY_SECONDS = 2.0


class QueuedTooLong(TimeoutError):
    """A Docker call waited for a thread until its deadline had passed, and was never run."""


@dataclass
class Node:
    config: NodeConfig
    client: docker.DockerClient | None = None
    healthy: bool | None = None  # None: not checked yet
    description: str = ""
    total_ram: int = 0
    total_cpus: int | None = None
    images: set[str] = field(default_factory=set)
    events: EventReader | None = None
    #: event streams in a row that ended soon after they opened
    quick_event_ends: int = 0

    @property
    def name(self) -> str:
        return self.config.name


@dataclass
class ClusterNode:
    """A Kubernetes cluster seen as one node: its client and its health."""

    kube: Kube
    healthy: bool | None = None  # None: not checked yet
    description: str = ""
    total_ram: int = 0
    total_cpus: int | None = None
    #: its pod watch runs
    watching: bool = False

    @property
    def name(self) -> str:
        return self.kube.name


#: makes the client of one cluster, given the events it reports to (the cluster service)
KubeFactory = Callable[[KubeClusterConfig, Any], Kube]


class Cluster(Service):
    name = "cluster"  # type: ignore[assignment]  # Twisted's Service has an untyped `name = None`

    def __init__(
        self,
        config: Config,
        store: Store,
        pool: ThreadPoolService,
        reactor: Any,
        identity: DaemonIdentity,
        address: CallbackAddress,
        metrics: Metrics | None = None,
        kube_factory: KubeFactory | None = None,
    ) -> None:
        """``metrics`` hears the latency of every Docker call (a private one without);
        ``kube_factory`` makes the client of each configured Kubernetes cluster (a
        :class:`ccserver.kubernetes.node.KubeNode` without one)."""
        self.config = config
        self.metrics = metrics if metrics is not None else Metrics()
        self.store = store
        #: this daemon's id: the label of its inspection containers
        self.identity = identity
        self.pool = pool
        self.reactor = reactor
        #: the Docker engines (the Docker-only parts use these)
        self.nodes = {n.name: Node(n) for n in config.docker.nodes}
        if kube_factory is None:
            kube_factory = self._kube_node
        #: the Kubernetes clusters, each one node; this service hears of their pods' ends
        self.clusters = {c.name: ClusterNode(kube_factory(c, self)) for c in config.kubernetes.clusters}
        self._backends: dict[str, NodeBackend] = {
            **{name: DockerBackend(self, name, config.docker.net) for name in self.nodes},
            **{name: KubeBackend(c.kube) for name, c in self.clusters.items()},
        }
        #: the URL inspection containers GET: where containers call back (None until known)
        self.address = address
        #: told when a container made by ccserver ends (with its daemon label or None: the
        #: listener decides whether it is its own) and when a node is found dead or healthy
        self._listeners: list[ClusterListener] = []
        self._heartbeat = LoopingCall(self.heartbeat)
        self._heartbeat.clock = reactor
        self._checking: dict[str, Deferred[bool]] = {}
        self._stopping = False
        self._client_lock = threading.Lock()
        #: health checks and inspections: one thread per node, apart from the Docker pool
        self.health_pool = ThreadPoolService(
            reactor, "docker-health", len(self.nodes) + 1, config.server.shutdown_timeout_seconds
        )
        #: image pulls (up to 30 minutes each): apart from the Docker pool, which they would fill
        self.pull_pool = ThreadPoolService(
            reactor, "docker-pull", config.docker.pull_threads, config.server.shutdown_timeout_seconds
        )
        #: short look-ups a request waits for (a data container's address): one thread per node
        self.lookup_pool = ThreadPoolService(
            reactor, "docker-lookup", len(self.nodes) + 1, config.server.shutdown_timeout_seconds
        )

    def _kube_node(self, config: KubeClusterConfig, events: Any) -> Kube:
        return KubeNode(config, self.reactor, events, self.metrics, pull_policy=self.config.docker.pull_policy)

    # --- service ---------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._stopping = False
        self.health_pool.startService()
        self.pull_pool.startService()
        self.lookup_pool.startService()
        self._heartbeat.start(self.config.docker.heartbeat_seconds, now=True)

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        self._stopping = True
        if self._heartbeat.running:
            self._heartbeat.stop()
        for node in self.nodes.values():
            self._stop_events(node)
        stopping = [p.stopService() for p in (self.health_pool, self.pull_pool, self.lookup_pool)]
        for site in self.clusters.values():
            self._stop_events(site)
            stopping.append(Deferred.fromCoroutine(self._close(site)))
        return gatherResults([d for d in stopping if d is not None]).addCallback(lambda _: None)

    async def _close(self, site: ClusterNode) -> None:
        try:
            await site.kube.close()
        except Exception as e:
            log.warn("closing the client of cluster {node}: {error}", node=site.name, error=_message(e))

    # --- calls -----------------------------------------------------------------------

    def _client(self, node: Node) -> docker.DockerClient:
        # runs on a pool thread
        with self._client_lock:
            client = node.client
        if client is None:
            client = make_client(node.config, self.config.docker.api_timeout)
            with self._client_lock:
                if node.client is None:
                    node.client = client
                else:  # another thread was quicker
                    client.close()
                    client = node.client
        return client

    def _drop_client(self, node: Node) -> None:
        """Forget the node's client (its pooled connections may point at a dead engine); the
        next call makes a new one."""
        with self._client_lock:
            client, node.client = node.client, None
        if client is not None:
            self.health_pool.run(client.close).addErrback(lambda _: None)

    def add_listener(self, listener: ClusterListener) -> None:
        """``listener`` hears about container ends and node health from now on."""
        self._listeners.append(listener)

    def _container_died(self, node: str, name: str, code: int, owner: str | None) -> None:
        for listener in self._listeners:
            listener.container_died(node, name, code, owner)

    # --- what a cluster's pod watch tells (ccserver.kubernetes.node.KubeEvents) ------------

    def container_running(self, node: str, name: str) -> None:
        """A pod runs its container: its output can be followed."""
        for listener in self._listeners:
            listener.container_running(node, name)

    def container_died(self, node: str, name: str, code: int, owner: str | None) -> None:
        """A pod's container ended (Succeeded or Failed): as an engine's ``die`` event."""
        self._container_died(node, name, code, owner)

    def container_stuck(self, node: str, name: str, reason: str) -> None:
        """A pod could not run (Pending too long, an image it may not pull); its Job is gone."""
        for listener in self._listeners:
            listener.container_stuck(node, name, reason)

    def watch_broken(self, node: str, error: BaseException) -> None:
        """A cluster's pod watch cannot be resumed: check the cluster (which restarts it)."""
        site = self.clusters.get(node)
        if site is None:
            return
        site.watching = False
        if self._stopping or not site.healthy:
            return
        log.info("pod watch of cluster {node} broke ({error}); checking it", node=node, error=_message(error))
        self._recheck_quietly(node)

    # --- every node, whatever its kind --------------------------------------------------

    def backend(self, name: str) -> NodeBackend:
        """Node ``name`` as the operations the scheduler needs (KeyError: no such node)."""
        return self._backends[name]

    def knows(self, name: str) -> bool:
        return name in self._backends

    def health(self, name: str) -> bool | None:
        """True: healthy; False: dead or unknown; None: not checked yet."""
        node = self.nodes.get(name) or self.clusters.get(name)
        return node.healthy if node is not None else False

    def _all(self) -> list[Node | ClusterNode]:
        return [*self.nodes.values(), *self.clusters.values()]

    def traits(self) -> dict[str, tuple[bool, bool, bool]]:
        """(caches, runs TES tasks, is a Docker engine) of the nodes that do not do all three
        (the clusters)."""
        return {
            name: (b.caches, b.runs_tes, b.engine)
            for name, b in self._backends.items()
            if not (b.caches and b.runs_tes and b.engine)
        }

    def call(
        self,
        name: str,
        fn: Callable[..., Any],
        *args: Any,
        timeout: float | None = None,
        health: bool = False,
        pool: ThreadPoolService | None = None,
    ) -> Deferred[Any]:
        """Run ``fn(client, *args)`` for node ``name`` on the Docker pool (``health``: on the
        health pool; ``pool``: on that one).

        The deadline counts from this call, time spent waiting for a free thread included: a
        call still queued when it passes never runs (:class:`QueuedTooLong`), one that runs
        past it fails with ``TimeoutError`` (its thread goes on until the engine answers, bounded
        by the client's ``api_timeout``)."""
        node = self.nodes[name]
        limit = timeout or (self.config.docker.api_timeout + CALL_SLACK)
        lock = threading.Lock()
        state = {"started": False, "expired": False}

        def work() -> Any:
            with lock:
                if state["expired"]:
                    return None  # its deadline passed while it waited: it must not run at all
                state["started"] = True
            return fn(self._client(node), *args)

        def expired(result: Any, _timeout: float) -> Any:
            with lock:
                state["expired"] = True
                started = state["started"]
            what = getattr(fn, "__name__", "Docker call")
            if not started:
                raise QueuedTooLong(f"{what} on node {name}: no Docker thread was free within {limit:g} s")
            raise TimeoutError(f"{what} on node {name}: no answer within {limit:g} s")

        chosen = pool if pool is not None else (self.health_pool if health else self.pool)
        elapsed = self.metrics.timer()
        operation = getattr(fn, "__name__", "other")

        def measured(result: Any) -> Any:
            failure = None
            if isinstance(result, Failure):
                failure = (
                    "queued" if result.check(QueuedTooLong) else "timeout" if result.check(TimeoutError) else "error"
                )
            self.metrics.docker_call(operation, name, elapsed(), failure)
            return result

        d = chosen.run(work)
        d.addTimeout(limit, self.reactor, onTimeoutCancel=expired)
        return d.addBoth(measured)

    def healthy_names(self) -> list[str]:
        """Every healthy node, engines and clusters."""
        return [n.name for n in self._all() if n.healthy]

    def node_names(self) -> list[str]:
        """Every node, engines and clusters."""
        return [n.name for n in self._all()]

    def capacities(self) -> list[tuple[str, int]]:
        """(name, total RAM in MB) of every healthy node."""
        return [(n.name, n.total_ram) for n in self._all() if n.healthy]

    def cpu_totals(self) -> dict[str, int | None]:
        """Name → CPU count (None: not known yet) of every healthy node."""
        return {n.name: n.total_cpus for n in self._all() if n.healthy}

    # --- health ----------------------------------------------------------------------

    def heartbeat(self) -> None:
        """Check every node, side by side: healthy ones for reachability, dead ones for their
        return.  A node whose previous check still runs is not checked twice."""
        for node in self._all():
            if self._stopping:
                return
            if node.name in self._checking:
                continue
            d = self.check(node.name, inspect=False)
            # ignore: mypy cannot type a lambda with default arguments
            d.addErrback(
                lambda f, name=node.name: log.error(  # type: ignore[call-overload]
                    "health check of node {node} failed: {error}", node=name, error=f.getErrorMessage()
                )
            )

    def check(self, name: str, inspect: bool = True) -> Deferred[bool]:
        """Check a node now; concurrent checks of one node share one run."""
        if name in self._checking:
            return self._checking[name]
        d = Deferred.fromCoroutine(self._check(name, inspect))

        def done(result: Any) -> Any:
            self._checking.pop(name, None)
            return result

        d.addBoth(done)
        if not d.called:
            self._checking[name] = d
        return d

    async def _check(self, name: str, inspect: bool) -> bool:
        if name in self.clusters:
            return await self._check_cluster(self.clusters[name])
        node = self.nodes[name]
        timeout = self.config.docker.api_timeout
        try:
            info = await self.call(name, docker_ops.node_info, timeout=timeout + HEALTH_SLACK, health=True)
        except Exception as e:
            await self._mark_dead(node, describe_error(node.config, e, timeout))
            return False
        node.total_ram, node.total_cpus = info["total_ram"], info["total_cpus"]
        # a dead node that answers again must pass an inspection before it is used again
        inspect = inspect or node.healthy is False
        if inspect and self.config.defaults.dead_node_invalidation:
            ok, problem = await self._inspect(node)
            if not ok:
                await self._mark_dead(node, problem)
                return False
        await self._mark_healthy(node)
        return True

    async def _check_cluster(self, site: ClusterNode) -> bool:
        """A cluster answers ``info()`` within its API deadline (no inspection: see the module
        docstring); its capacity is refreshed on each check."""
        limit = self._cluster_timeout(site.name) + HEALTH_SLACK
        d = Deferred.fromCoroutine(site.kube.info())
        d.addTimeout(limit, self.reactor)
        try:
            ram, cpus = await d
        except Exception as e:
            if isinstance(e, (TimeoutError, defer.TimeoutError, defer.CancelledError)):
                e = TimeoutError(f"the API server did not answer within {limit:g} s")
            await self._mark_dead(site, f"cluster {site.name}: {_message(e)}")
            return False
        site.total_ram, site.total_cpus = int(ram), int(cpus)
        await self._mark_healthy(site)
        return True

    def _cluster_timeout(self, name: str) -> float:
        for c in self.config.kubernetes.clusters:
            if c.name == name:
                return c.api_timeout_seconds
        return self.config.docker.api_timeout

    async def _inspect(self, node: Node) -> tuple[bool, str]:
        url = self.address.get()
        if not url:
            return True, ""
        dc = self.config.defaults.data_container
        settings = {"container_type": INSPECTION.name, "inspection_url": url}
        name = f"ccserver-inspection-{node.name}-{int(self.reactor.seconds() * 1000)}"
        try:
            daemon = self.identity.known
            auth = auth_config(dc.registry_auth)
            pulled = await self.call(
                node.name,
                docker_ops.ensure_image,
                dc.image,
                self.config.docker.pull_policy,
                auth,
                node.name,
                timeout=PULL_TIMEOUT,
                health=True,
            )
            if pulled is not None:
                self.metrics.image_pulled(node.name, pulled.bytes, pulled.seconds)
            code, logs = await self.call(
                node.name,
                docker_ops.run_inspection,
                name,
                dc.image,
                docker_ops.command_line(dc.entry_point, settings),
                self.config.docker.api_timeout,
                daemon,
                timeout=2 * self.config.docker.api_timeout + CALL_SLACK,
                health=True,
            )
        except Exception as e:
            return False, f"inspection container could not run: {_message(e)}"
        if code != 0:
            return False, f"inspection container exited with {code}: {logs.strip()[-500:]}"
        return True, ""

    async def _mark_dead(self, node: Node | ClusterNode, description: str) -> None:
        if not self.config.defaults.dead_node_invalidation:
            # without invalidation a failing node stays in use, as in 0.10 (one that never
            # answered cannot be: its RAM is unknown)
            log.warn("node {node}: {problem}", node=node.name, problem=description)
            node.healthy = True if node.total_ram else False
            node.description = "" if node.healthy else description
            return
        was = node.healthy
        node.healthy, node.description = False, description
        self._stop_events(node)
        if isinstance(node, Node):
            self._drop_client(node)
        if was is not False:
            log.error("node {node} is dead: {problem}", node=node.name, problem=description)
            for listener in self._listeners:
                listener.node_dead(node.name)
            await self._record_dead(node.name, description)

    async def _mark_healthy(self, node: Node | ClusterNode) -> None:
        was = node.healthy
        node.healthy, node.description = True, ""
        self._start_events(node)
        if was is not True:
            if was is False:
                log.info("node {node} is healthy again", node=node.name)
            else:
                log.info("node {node}: {ram} MB, {cpus} CPUs", node=node.name, ram=node.total_ram, cpus=node.total_cpus)
            for listener in self._listeners:
                listener.node_healthy(node.name)
            await self._record_dead(node.name, None)

    async def _record_dead(self, name: str, description: str | None) -> None:
        """Keep the 0.10 ``dead_nodes`` collection in step (for clients that query it); the
        node's health itself lives in memory, so a database outage only delays this."""
        try:
            await self.store.delete_many("dead_nodes", {"name": name})
            if description is not None:
                await self.store.insert_one("dead_nodes", {"name": name, "description": description})
        except StorageError as e:
            log.warn("could not record the health of node {node}: {error}", node=name, error=str(e))

    def report_error(self, name: str, error: BaseException) -> None:
        """A Docker call for this node failed during work: check it (with an inspection)."""
        if self.health(name):
            log.warn("error on node {node}: {error}; checking the node", node=name, error=_message(error))
            self.check(name, inspect=True)

    def recheck(self, names: list[str]) -> Deferred[list[bool]]:
        """Check these nodes now, side by side, with an inspection (``POST /nodes``)."""
        return gatherResults([self.check(n, inspect=True) for n in names], consumeErrors=True)

    # --- container end events ------------------------------------------------------------

    def _start_events(self, node: Node | ClusterNode) -> None:
        if isinstance(node, ClusterNode):
            self._start_watch(node)
            return
        if node.events is not None or self._stopping:
            return
        reader = node.events = EventReader(node.name, self.reactor.seconds())
        threading.Thread(
            target=self._read_events, args=(node, reader), name=f"ccserver-events-{node.name}", daemon=True
        ).start()

    def _start_watch(self, site: ClusterNode) -> None:
        """Watch the cluster's pods of this daemon (once its id is known: the next check
        starts it otherwise)."""
        daemon = self.identity.known
        if site.watching or self._stopping or daemon is None:
            if daemon is None and not site.watching:
                self.identity.get().addErrback(lambda _: None)  # read: the next check has it
            return
        site.watching = True
        site.kube.watch(daemon)

    def _stop_events(self, node: Node | ClusterNode) -> None:
        if isinstance(node, ClusterNode):
            if node.watching:
                node.watching = False
                node.kube.stop_watch()
            return
        reader, node.events = node.events, None
        if reader is not None:
            reader.close()

    def _read_events(self, node: Node, reader: EventReader) -> None:
        # a thread of its own per node: the stream blocks for as long as the engine lives
        try:
            client = make_client(node.config, self.config.docker.api_timeout)
            stream = client.events(
                decode=True, filters={"type": "container", "event": "die", "label": docker_ops.KIND_LABEL}
            )
        except Exception as e:
            self.reactor.callFromThread(self._events_ended, node, reader, e)
            return
        if not reader.attach(stream, client):
            return
        try:
            for event in stream:
                attributes = event.get("Actor", {}).get("Attributes", {})
                name = attributes.get("name", "")
                code = int(attributes.get("exitCode") or 0)
                owner = attributes.get(docker_ops.DAEMON_LABEL)  # the event's attributes hold the labels
                self.reactor.callFromThread(self._container_died, node.name, name, code, owner)
        except Exception as e:
            if not reader.closed:
                self.reactor.callFromThread(self._events_ended, node, reader, e)
            return
        finally:
            reader.close()
        self.reactor.callFromThread(self._events_ended, node, reader, None)

    def _events_ended(self, node: Node, reader: EventReader, error: BaseException | None) -> None:
        if node.events is not reader:
            return  # an old reader (the node died, or was revived with a new one meanwhile)
        node.events = None
        if self._stopping or not node.healthy:
            return
        log.info(
            "event stream of node {node} ended ({error}); checking the node",
            node=node.name,
            error=_message(error) if error else "closed by the engine",
        )
        # the engine closed the stream: check the node at once, which restarts the reader (but
        # not in a tight loop when the engine answers and keeps closing the stream)
        if self.reactor.seconds() - reader.started < EVENTS_RETRY_SECONDS:
            node.quick_event_ends += 1
        else:
            node.quick_event_ends = 0
        delay = EVENTS_RETRY_SECONDS if node.quick_event_ends > 1 else 0
        self.reactor.callLater(delay, self._recheck_quietly, node.name)

    def _recheck_quietly(self, name: str) -> None:
        if self._stopping:
            return
        d = self.check(name, inspect=False)
        d.addErrback(lambda f: log.error("check of node {node} failed: {error}", node=name, error=f.getErrorMessage()))

    # --- status for GET /nodes ---------------------------------------------------------

    async def _status(self) -> dict[str, Any]:
        live = {"state": {"$in": list(states.LIVE_STATES)}}
        projection = {"cluster_node": 1, "container_ram": 1}
        apps = await self.store.find(APPLICATION.documents, live, projection=projection)
        datas = await self.store.find(DATA.documents, live, projection=projection)
        # TES attempts under way hold their RAM and CPUs on their node (see ccserver.tes)
        tes = await self.store.find(
            tes_states.COLLECTION,
            {"state": {"$in": list(tes_states.LIVE)}},
            projection={"node": 1, "ram_mb": 1, "cpus": 1},
        )
        legacy_cpus = self.config.tes.legacy_container_cpus
        healthy = []
        for node in self._all():
            if not node.healthy:
                continue
            app_rams = [c.get("container_ram", 0) for c in apps if c.get("cluster_node") == node.name]
            data_rams = [c.get("container_ram", 0) for c in datas if c.get("cluster_node") == node.name]
            tes_here = [t for t in tes if t.get("node") == node.name]
            reserved_cpus: float = len(app_rams) * legacy_cpus + sum(float(t.get("cpus") or 0) for t in tes_here)
            if reserved_cpus.is_integer():
                reserved_cpus = int(reserved_cpus)  # as 0.10 clients expect a count
            healthy.append(
                {
                    "name": node.name,
                    "total_ram": node.total_ram,
                    "reserved_ram": sum(app_rams) + sum(data_rams) + sum(int(t.get("ram_mb") or 0) for t in tes_here),
                    "total_cpus": node.total_cpus,
                    "reserved_cpus": reserved_cpus,
                    "active_application_containers": app_rams,
                    "active_data_containers": data_rams,
                    "kind": _kind(node),
                }
            )
        dead = [
            {"name": n.name, "description": n.description or "not checked yet", "kind": _kind(n)}
            for n in self._all()
            if not n.healthy
        ]
        return {"healthy_nodes": healthy, "dead_nodes": dead}

    def nodes_status(self) -> Deferred[dict[str, Any]]:
        return Deferred.fromCoroutine(self._status())


class EventReader:
    """One event stream of a node, read by one thread; closing it (from any thread) ends the
    read, and a reader that was replaced has no say over the node any more."""

    def __init__(self, node: str, started: float) -> None:
        self.node = node
        self.started = started
        self.closed = False
        self._lock = threading.Lock()
        self._stream: Any = None
        self._client: Any = None

    def attach(self, stream: Any, client: Any) -> bool:
        """Keep the opened stream; False (and it is closed) when the reader was closed meanwhile."""
        with self._lock:
            if not self.closed:
                self._stream, self._client = stream, client
                return True
        _close_quietly(stream, client)
        return False

    def close(self) -> None:
        with self._lock:
            self.closed = True
            stream, client, self._stream, self._client = self._stream, self._client, None, None
        _close_quietly(stream, client)


def _close_quietly(*things: Any) -> None:
    for thing in things:
        if thing is not None:
            try:
                thing.close()
            except Exception:  # the stream may already be gone
                pass


def _kind(node: Node | ClusterNode) -> str:
    """The node's kind in ``GET /nodes`` (a field 0.10 did not have; its clients ignore it)."""
    return "kubernetes" if isinstance(node, ClusterNode) else "docker"


def _message(error: BaseException) -> str:
    text = str(error) or error.__class__.__name__
    return text.splitlines()[0][:500] if text else error.__class__.__name__
