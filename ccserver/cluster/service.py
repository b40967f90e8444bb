"""The cluster: every configured Docker engine (node), its health, and calls to it.

Each Docker call goes through the one bounded Docker thread pool (``thread_limit``), with the
engine's ``api_timeout`` in the SDK client and an outer timeout on the Deferred.  Container
ends are learnt from each engine's event stream (one reader thread per node, outside the
pool, since it blocks for as long as the node lives) and, as a safety net, from the
scheduler's periodic reconciliation.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import docker
from twisted.application.service import Service
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ccserver import states
from ccserver.cluster import docker_ops
from ccserver.cluster.engine import make_client
from ccserver.config import Config, NodeConfig
from ccserver.storage.base import Store
from ccserver.threads import ThreadPoolService

log = Logger(namespace="ccserver.cluster")

#: extra seconds over api_timeout before a Docker call's Deferred times out
CALL_SLACK = 5.0
PULL_TIMEOUT = 1800.0


@dataclass
class Node:
    config: NodeConfig
    client: docker.DockerClient | None = None
    healthy: bool | None = None  # None: not checked yet
    description: str = ""
    total_ram: int = 0
    total_cpus: int | None = None
    images: set[str] = field(default_factory=set)
    events: Any = None

    @property
    def name(self) -> str:
        return self.config.name


class Cluster(Service):
    name = "cluster"

    def __init__(self, config: Config, store: Store, pool: ThreadPoolService, reactor: Any) -> None:
        self.config = config
        self.store = store
        self.pool = pool
        self.reactor = reactor
        self.nodes = {n.name: Node(n) for n in config.docker.nodes}
        #: set by the daemon: the URL inspection containers GET (server.host)
        self.inspection_url: Callable[[], str | None] = lambda: None
        #: called with (node name, container name, exit code) when a container of ours ends
        self.on_container_died: Callable[[str, str, int], None] = lambda node, name, code: None
        #: called with the node name when a node is declared dead / healthy again
        self.on_node_dead: Callable[[str], Any] = lambda node: None
        self.on_node_healthy: Callable[[str], Any] = lambda node: None
        self._heartbeat = LoopingCall(self.heartbeat)
        self._heartbeat.clock = reactor
        self._checking: dict[str, Deferred[bool]] = {}
        self._stopping = False

    # --- service ---------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._stopping = False
        self._heartbeat.start(self.config.docker.heartbeat_seconds, now=True)

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        self._stopping = True
        if self._heartbeat.running:
            self._heartbeat.stop()
        for node in self.nodes.values():
            if node.events is not None:
                try:
                    node.events.close()
                except Exception:  # the stream may already be gone
                    pass
                node.events = None
        return None

    # --- calls -----------------------------------------------------------------------

    def _client(self, node: Node) -> docker.DockerClient:
        # runs on a pool thread
        if node.client is None:
            node.client = make_client(node.config, self.config.docker.api_timeout)
        return node.client

    def call(self, name: str, fn: Callable[..., Any], *args: Any, timeout: float | None = None) -> Deferred[Any]:
        """Run ``fn(client, *args)`` for node ``name`` on the Docker pool."""
        node = self.nodes[name]

        def work() -> Any:
            return fn(self._client(node), *args)

        d = self.pool.run(work)
        d.addTimeout(timeout or (self.config.docker.api_timeout + CALL_SLACK), self.reactor)
        return d

    def healthy_names(self) -> list[str]:
        return [n.name for n in self.nodes.values() if n.healthy]

    def node_names(self) -> list[str]:
        return list(self.nodes)

    def capacities(self) -> list[tuple[str, int]]:
        """(name, total RAM in MB) of every healthy node."""
        return [(n.name, n.total_ram) for n in self.nodes.values() if n.healthy]

    # --- health ----------------------------------------------------------------------

    @inlineCallbacks
    def heartbeat(self) -> Any:
        """Check every node: healthy ones for reachability, dead ones for their return."""
        for node in list(self.nodes.values()):
            if self._stopping:
                return
            try:
                yield self.check(node.name, inspect=False)
            except Exception as e:  # never let the loop die
                log.error("health check of node {node} failed: {error}", node=node.name, error=str(e))

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
        node = self.nodes[name]
        try:
            info = await self.call(name, docker_ops.node_info)
        except Exception as e:
            problem = f"Docker engine at {node.config.base_url} does not answer: {_message(e)}"
            await self._mark_dead(node, problem)
            return False
        node.total_ram, node.total_cpus = info["total_ram"], info["total_cpus"]
        if inspect and self.config.defaults.dead_node_invalidation:
            ok, problem = await self._inspect(node)
            if not ok:
                await self._mark_dead(node, problem)
                return False
        await self._mark_healthy(node)
        return True

    async def _inspect(self, node: Node) -> tuple[bool, str]:
        url = self.inspection_url()
        if not url:
            return True, ""
        dc = self.config.defaults.data_container
        settings = {"container_type": "inspection", "inspection_url": url}
        name = f"ccserver-inspection-{node.name}-{int(self.reactor.seconds() * 1000)}"
        try:
            auth = dc.registry_auth.__dict__ if dc.registry_auth else None
            await self.call(
                node.name, docker_ops.ensure_image, dc.image, self.config.docker.pull_policy, auth, node.name,
                timeout=PULL_TIMEOUT,
            )
            code, logs = await self.call(
                node.name,
                docker_ops.run_inspection,
                name,
                dc.image,
                docker_ops.command_line(dc.entry_point, settings),
                self.config.docker.api_timeout,
                timeout=2 * self.config.docker.api_timeout + CALL_SLACK,
            )
        except Exception as e:
            return False, f"inspection container could not run: {_message(e)}"
        if code != 0:
            return False, f"inspection container exited with {code}: {logs.strip()[-500:]}"
        return True, ""

    async def _mark_dead(self, node: Node, description: str) -> None:
        if not self.config.defaults.dead_node_invalidation:
            # without invalidation a failing node stays in use, as in 0.10
            log.warn("node {node}: {problem}", node=node.name, problem=description)
            node.healthy = True if node.total_ram else False
            return
        was = node.healthy
        node.healthy, node.description = False, description
        self._stop_events(node)
        if was is not False:
            log.error("node {node} is dead: {problem}", node=node.name, problem=description)
            await self.store.delete_many("dead_nodes", {"name": node.name})
            await self.store.insert_one("dead_nodes", {"name": node.name, "description": description})
            self.on_node_dead(node.name)

    async def _mark_healthy(self, node: Node) -> None:
        was = node.healthy
        node.healthy, node.description = True, ""
        self._start_events(node)
        if was is not True:
            if was is False:
                log.info("node {node} is healthy again", node=node.name)
            else:
                log.info("node {node}: {ram} MB, {cpus} CPUs", node=node.name, ram=node.total_ram, cpus=node.total_cpus)
            await self.store.delete_many("dead_nodes", {"name": node.name})
            self.on_node_healthy(node.name)

    def report_error(self, name: str, error: BaseException) -> None:
        """A Docker call for this node failed during work: check it (with an inspection)."""
        if name in self.nodes and self.nodes[name].healthy:
            log.warn("Docker error on node {node}: {error}; checking the node", node=name, error=_message(error))
            self.check(name, inspect=True)

    def recheck(self, names: list[str]) -> Deferred[list[bool]]:
        async def all_of() -> list[bool]:
            return [await self.check(n, inspect=True) for n in names]

        return Deferred.fromCoroutine(all_of())

    # --- container end events ------------------------------------------------------------

    def _start_events(self, node: Node) -> None:
        if node.events is not None or self._stopping:
            return
        node.events = "starting"
        threading.Thread(target=self._read_events, args=(node,), name=f"ccserver-events-{node.name}",
                         daemon=True).start()

    def _stop_events(self, node: Node) -> None:
        stream, node.events = node.events, None
        if stream is not None and stream != "starting":
            try:
                stream.close()
            except Exception:
                pass

    def _read_events(self, node: Node) -> None:
        # a thread of its own per node: the stream blocks for as long as the engine lives
        try:
            client = make_client(node.config, self.config.docker.api_timeout)
            stream = client.events(
                decode=True, filters={"type": "container", "event": "die", "label": docker_ops.KIND_LABEL}
            )
        except Exception as e:
            self.reactor.callFromThread(self._events_ended, node, e)
            return
        if node.events != "starting":
            stream.close()
            return
        node.events = stream
        try:
            for event in stream:
                attributes = event.get("Actor", {}).get("Attributes", {})
                name = attributes.get("name", "")
                code = int(attributes.get("exitCode") or 0)
                self.reactor.callFromThread(self.on_container_died, node.name, name, code)
        except Exception as e:
            self.reactor.callFromThread(self._events_ended, node, e)
            return
        self.reactor.callFromThread(self._events_ended, node, None)

    def _events_ended(self, node: Node, error: BaseException | None) -> None:
        if isinstance(node.events, str) or node.events is not None:
            node.events = None
        if not self._stopping and node.healthy:
            # the engine closed the stream: check the node, which restarts the reader
            self.check(node.name, inspect=False)

    # --- status for GET /nodes ---------------------------------------------------------

    async def _status(self) -> dict[str, Any]:
        live = {"state": {"$in": list(states.LIVE_STATES)}}
        projection = {"cluster_node": 1, "container_ram": 1}
        apps = await self.store.find("application_containers", live, projection=projection)
        datas = await self.store.find("data_containers", live, projection=projection)
        healthy = []
        for node in self.nodes.values():
            if not node.healthy:
                continue
            app_rams = [c.get("container_ram", 0) for c in apps if c.get("cluster_node") == node.name]
            data_rams = [c.get("container_ram", 0) for c in datas if c.get("cluster_node") == node.name]
            healthy.append(
                {
                    "name": node.name,
                    "total_ram": node.total_ram,
                    "reserved_ram": sum(app_rams) + sum(data_rams),
                    "total_cpus": node.total_cpus,
                    "reserved_cpus": None,
                    "active_application_containers": app_rams,
                    "active_data_containers": data_rams,
                }
            )
        dead = [{"name": n.name, "description": n.description or "not checked yet"}
                for n in self.nodes.values() if not n.healthy]
        return {"healthy_nodes": healthy, "dead_nodes": dead}

    def nodes_status(self) -> Deferred[dict[str, Any]]:
        return Deferred.fromCoroutine(self._status())


def _message(error: BaseException) -> str:
    text = str(error) or error.__class__.__name__
    return text.splitlines()[0][:500] if text else error.__class__.__name__
