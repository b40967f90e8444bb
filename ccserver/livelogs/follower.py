"""Following the output of running containers, with no thread per container.

Each followed container is one streaming ``GET /containers/{id}/logs?follow=1&timestamps=1``
to its engine, read by the reactor through :class:`~ccserver.livelogs.engine_http.EngineHTTP`
and parsed as it comes (:mod:`~ccserver.livelogs.stream`) into a bounded tail
(:class:`~ccserver.livelogs.tail.LogTail`).  The engine ends the stream when the container
ends; a connection that broke while the container runs is opened again with ``since=`` the
last line's time.  Following stops when the container ends, when its node is found dead
(the cluster tells: :class:`ccserver.wiring.ClusterListener`), and when the daemon stops.

On a Kubernetes cluster the stream is the pod's log (``GET .../pods/NAME/log?follow=true&
timestamps=true``), opened when the cluster's pod watch sees the container run (and, after a
restart, when it lists it running again), and ended by the API server when the container ends.

Which containers: every application container this daemon starts, and those found running
on a node when it is found healthy (at start-up, or back from the dead).  For that each
healthy node has one watcher: the engine's event stream, filtered to ``start`` events of
containers carrying this daemon's labels, and then the list of those running.  So the
launcher needs no hook, and a container the TES runner starts is followed by
:meth:`LogFollower.follow`.  When a container ended, its tail is written into its
application container document (``log_tail``) so that it outlives the daemon, and
forgotten here: in memory are only the tails of running containers, and of ended ones that
have no document (TES executors, until the runner read them; at most ``max_followed``).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from bson import ObjectId
from bson.errors import InvalidId
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, DeferredList
from twisted.internet.task import deferLater
from twisted.logger import Logger

from ccserver.cluster.docker_ops import KIND_LABEL
from ccserver.config import Config
from ccserver.identity import DAEMON_LABEL, DaemonIdentity
from ccserver.livelogs.engine_http import BodyStream, EngineError, EngineHTTP, container_path, read_tls_material
from ccserver.livelogs.stream import Line, LogStreamParser
from ccserver.livelogs.tail import LogTail
from ccserver.storage.base import StorageError, Store
from ccserver.threads import ThreadPoolService

log = Logger(namespace="ccserver.logs")

APP = "application_containers"
#: a broken connection of a running container is opened again after this many seconds
RETRY_SECONDS = 1.0
#: and given up after this many failures in a row (its node is then likely dead)
RETRIES = 10
#: a node's event stream that ended is opened again after this many seconds
WATCH_RETRY_SECONDS = 2.0


class PodLogs(Protocol):
    """A Kubernetes cluster's pod logs (:meth:`ccserver.kubernetes.node.KubeNode.follow_logs`)."""

    async def follow_logs(
        self, name: str, on_data: Callable[[bytes], None], since_ns: int | None, tail_lines: int | None
    ) -> BodyStream | None: ...


@dataclass
class Followed:
    node: str
    name: str
    tail: LogTail
    running: bool = True
    stopped: bool = False
    stream: BodyStream | None = None
    sleeping: Deferred[Any] | None = None
    done: Deferred[None] | None = None


@dataclass
class Watcher:
    node: str
    stopped: bool = False
    stream: BodyStream | None = None
    sleeping: Deferred[Any] | None = None
    done: Deferred[None] | None = None
    buffer: bytearray = field(default_factory=bytearray)


class LogFollower(Service):
    name = "logs"  # type: ignore[assignment]  # Twisted's Service has an untyped `name = None`

    def __init__(
        self,
        config: Config,
        store: Store,
        identity: DaemonIdentity,
        reactor: Any,
        pool: ThreadPoolService,
        clusters: Mapping[str, PodLogs] | None = None,
    ) -> None:
        """``pool`` reads the nodes' TLS files once at start (off the reactor); ``clusters``:
        the Kubernetes clusters by node name, whose pods' output is read from their API."""
        self.clusters: Mapping[str, PodLogs] = clusters or {}
        self.config = config
        self.settings = config.logs
        self.store = store
        self.identity = identity
        self.reactor = reactor
        self.pool = pool
        self.engines: dict[str, EngineHTTP] = {}
        #: every container with a tail in memory, followed or ended (oldest first)
        self._tails: OrderedDict[str, Followed] = OrderedDict()
        self._watchers: dict[str, Watcher] = {}
        #: nodes found healthy before the engines were ready
        self._healthy: set[str] = set()
        self._open = 0
        self._warned_full = False
        self._stopping = False

    # --- service ---------------------------------------------------------------------

    async def _start(self) -> None:
        timeout = self.config.docker.api_timeout
        for node in self.config.docker.nodes:
            try:
                material = await self.pool.run(read_tls_material, node)
            except OSError as e:
                log.warn("logs of node {node} are not followed: {error}", node=node.name, error=str(e))
                continue
            self.engines[node.name] = EngineHTTP(self.reactor, node, material, timeout)
        for name in sorted(self._healthy):
            self.node_healthy(name)

    def startService(self) -> Deferred[None]:
        super().startService()
        self._stopping = False
        if not self.settings.follow:
            log.info("following container logs is off ([logs] follow = false)")
            return Deferred.fromCoroutine(_nothing())
        return Deferred.fromCoroutine(self._start())

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        self._stopping = True
        waiting = []
        for watcher in list(self._watchers.values()):
            self._stop_watcher(watcher)
            if watcher.done is not None:
                waiting.append(watcher.done)
        for followed in self._tails.values():
            if followed.running:
                self._stop(followed)
                if followed.done is not None:
                    waiting.append(followed.done)
        self._watchers.clear()
        d = DeferredList(waiting, consumeErrors=True)
        d.addTimeout(self.config.server.shutdown_timeout_seconds, self.reactor, onTimeoutCancel=lambda *a: None)
        return d

    # --- what others ask (contracts §3) -----------------------------------------------------

    def follow(self, node: str, container: str) -> None:
        """Follow ``container`` on ``node`` from now until it ends (nothing if it already is)."""
        if self._stopping or not self.settings.follow or (node not in self.engines and node not in self.clusters):
            return
        known = self._tails.get(container)
        if known is not None and known.running:
            return
        if self.following() >= self.settings.max_followed:
            if not self._warned_full:
                self._warned_full = True
                log.warn(
                    "{n} containers are followed ([logs] max_followed): container {name} is not",
                    n=self.following(),
                    name=container,
                )
            return
        self._warned_full = False
        followed = Followed(node, container, LogTail(self.settings.tail_bytes))
        self._tails.pop(container, None)
        self._tails[container] = followed
        self._forget_oldest()
        log.info("following the output of container {name} on node {node}", name=container, node=node)
        followed.done = Deferred.fromCoroutine(self._follow(followed))
        followed.done.addErrback(lambda f: log.failure("following container {name}", f, name=container))

    def known(self, container: str) -> bool:
        return container in self._tails

    def is_running(self, container: str) -> bool:
        """``container`` is followed now (it runs, as far as its engine said)."""
        followed = self._tails.get(container)
        return followed is not None and followed.running

    def truncated(self, container: str) -> bool:
        followed = self._tails.get(container)
        return followed is not None and followed.tail.truncated

    def lines(self, container: str, since: float | None = None, tail: int | None = None) -> list[Line]:
        """The kept lines of ``container``, oldest first (see :meth:`LogTail.lines`)."""
        followed = self._tails.get(container)
        return followed.tail.lines(since, tail) if followed is not None else []

    def stop(self, container: str) -> None:
        """Stop following ``container`` (its tail stays readable)."""
        followed = self._tails.get(container)
        if followed is not None:
            self._stop(followed)

    def following(self) -> int:
        """Containers followed now."""
        return sum(1 for f in self._tails.values() if f.running)

    def open_connections(self) -> int:
        """Engine connections open for logs (one per followed container while it is read)."""
        return self._open

    # --- what the cluster tells (ccserver.wiring.ClusterListener) -----------------------------

    def container_running(self, node: str, name: str) -> None:
        """A cluster's pod runs: its output is followed from its API (``pods/log``).  The
        pods of TES tasks are not (their executors' logs are in their ExecutorLogs)."""
        if node in self.clusters and ObjectId.is_valid(name):
            self.follow(node, name)

    def container_died(self, node: str, name: str, code: int, owner: str | None) -> None:
        """Nothing to do: the engine (the API server) ends the container's log stream itself."""

    def container_stuck(self, node: str, name: str, reason: str) -> None:
        """Nothing to do: a container that could not run has no output."""

    def node_dead(self, node: str) -> None:
        self._healthy.discard(node)
        watcher = self._watchers.pop(node, None)
        if watcher is not None:
            self._stop_watcher(watcher)
        for followed in list(self._tails.values()):
            if followed.node == node and followed.running:
                log.info("stopped following container {name}: node {node} is dead", name=followed.name, node=node)
                self._stop(followed)

    def node_healthy(self, node: str) -> None:
        self._healthy.add(node)
        if self._stopping or node not in self.engines or node in self._watchers:
            return
        watcher = self._watchers[node] = Watcher(node)
        watcher.done = Deferred.fromCoroutine(self._watch(watcher))
        watcher.done.addErrback(lambda f: log.failure("watching node {node} for containers", f, node=node))

    # --- following one container -----------------------------------------------------------

    async def _follow(self, followed: Followed) -> None:
        failures = 0
        first = True
        ended = False
        while not followed.stopped:
            received = [0]
            try:
                opened = await self._open_stream(followed, received)
            except CancelledError:
                break
            except Exception as e:
                failures += 1
                error: BaseException = e
            else:
                if opened is None:
                    ended = True  # gone (removed), or a pod whose container is not running
                    break
                parser, stream = opened
                followed.stream = stream
                if followed.stopped:  # stopped while the stream was being opened
                    stream.close()
                self._open += 1
                try:
                    clean = await stream.ended
                finally:
                    self._open -= 1
                    followed.stream = None
                for line in parser.end():
                    followed.tail.add(line)
                if first and received[0] >= self.settings.tail_bytes:
                    followed.tail.truncated = True  # the engine gave its last lines only
                first = False
                if clean:
                    ended = True
                    break
                failures = 0 if received[0] else failures + 1
                error = ConnectionError("the log stream broke")
            if followed.stopped or failures > RETRIES:
                if failures > RETRIES:
                    log.warn(
                        "gave up following container {name} on node {node}: {error}",
                        name=followed.name,
                        node=followed.node,
                        error=str(error) or type(error).__name__,
                    )
                break
            followed.sleeping = deferLater(self.reactor, RETRY_SECONDS, lambda: None)
            try:
                await followed.sleeping
            except CancelledError:
                break
            finally:
                followed.sleeping = None
        followed.running = False
        log.info(
            "stopped following container {name} ({why}); following {n}, {open} log connections open",
            name=followed.name,
            why="it ended" if ended else "stopped",
            n=self.following(),
            open=self._open,
        )
        if (ended or not self._stopping) and await self._keep(followed) and self._tails.get(followed.name) is followed:
            # kept in its document, where the endpoint reads it from now on
            del self._tails[followed.name]

    async def _open_stream(self, followed: Followed, received: list[int]) -> tuple[LogStreamParser, BodyStream] | None:
        """The container's log stream from where its tail ends (or its last lines), its lines
        into the tail as they come (``received[0]`` counts them); None when there is nothing
        to follow (an engine's container gone, a cluster's pod gone or not running)."""
        after = followed.tail.last_ns
        # each line is at least one byte: the last tail_bytes lines hold the last tail_bytes bytes
        lines = self.settings.tail_bytes

        def feeder(parser: LogStreamParser) -> Callable[[bytes], None]:
            def see(data: bytes) -> None:
                for line in parser.feed(data):
                    received[0] += 1
                    if line.time_ns == 0 or line.time_ns > after:
                        followed.tail.add(line)

            return see

        site = self.clusters.get(followed.node)
        if site is not None:
            parser = LogStreamParser(multiplexed=False)  # the API's lines: time, text
            stream = await site.follow_logs(followed.name, feeder(parser), after or None, None if after else lines)
            return None if stream is None else (parser, stream)
        engine = self.engines[followed.node]
        try:
            info = await engine.get_json(container_path(followed.name, "json"))
            parser = LogStreamParser(multiplexed=not (info.get("Config") or {}).get("Tty", False))
            query: dict[str, Any] = {"follow": 1, "stdout": 1, "stderr": 1, "timestamps": 1}
            if after:
                seconds, nanos = divmod(after, 1_000_000_000)
                query["since"] = f"{seconds}.{nanos:09d}"
            else:
                query["tail"] = lines
            return parser, await engine.stream(container_path(followed.name, "logs"), query, feeder(parser))
        except EngineError as e:
            if e.status == 404:
                return None
            raise

    def _stop(self, followed: Followed) -> None:
        followed.stopped = True
        followed.running = False
        if followed.stream is not None:
            followed.stream.close()
        if followed.sleeping is not None:
            followed.sleeping.cancel()

    async def _keep(self, followed: Followed) -> bool:
        """Write the tail of an ended application container into its document; whether it
        was written (a container that is none: its tail stays in memory, for whoever asks)."""
        try:
            _id = ObjectId(followed.name)
        except (InvalidId, TypeError):
            return False  # not a 0.10 application container (the TES runner reads its lines)
        try:
            found = await self.store.update_one(APP, {"_id": _id}, {"$set": {"log_tail": followed.tail.to_document()}})
        except StorageError as e:
            log.warn("could not keep the log tail of container {name}: {error}", name=followed.name, error=str(e))
            return False
        return found == 1

    def _forget_oldest(self) -> None:
        """Tails of ended containers beyond ``max_followed`` go, oldest first."""
        ended = [name for name, f in self._tails.items() if not f.running]
        for name in ended[: max(0, len(ended) - self.settings.max_followed)]:
            del self._tails[name]

    # --- which containers: a watcher per healthy node ----------------------------------------

    async def _watch(self, watcher: Watcher) -> None:
        engine = self.engines[watcher.node]
        while not watcher.stopped and not self._stopping:
            try:
                daemon = await self.identity.get()
                labels = [f"{KIND_LABEL}=application", f"{DAEMON_LABEL}={daemon}"]
                events = {"type": ["container"], "event": ["start"], "label": labels}

                def see(data: bytes) -> None:
                    self._events(watcher, data)

                stream = await engine.stream("/events", {"filters": json.dumps(events)}, see)
                watcher.stream = stream
                if watcher.stopped:
                    stream.close()
                    break
                # what started before the stream opened (at start-up: while the daemon was away)
                running = await engine.get_json(
                    "/containers/json", {"filters": json.dumps({"label": labels, "status": ["running"]})}
                )
                for container in running:
                    names = [n.lstrip("/") for n in container.get("Names") or []]
                    if names:
                        self.follow(watcher.node, names[0])
                await stream.ended
            except CancelledError:
                break
            except Exception as e:
                if not watcher.stopped:
                    log.info("watching node {node} for containers: {error}", node=watcher.node, error=str(e))
            finally:
                if watcher.stream is not None:
                    watcher.stream.close()
                    watcher.stream = None
            if watcher.stopped:
                break
            watcher.sleeping = deferLater(self.reactor, WATCH_RETRY_SECONDS, lambda: None)
            try:
                await watcher.sleeping
            except CancelledError:
                break
            finally:
                watcher.sleeping = None

    def _events(self, watcher: Watcher, data: bytes) -> None:
        watcher.buffer += data
        while b"\n" in watcher.buffer:
            raw, _, rest = bytes(watcher.buffer).partition(b"\n")
            watcher.buffer = bytearray(rest)
            try:
                event = json.loads(raw)
            except ValueError:
                continue
            name = (event.get("Actor") or {}).get("Attributes", {}).get("name")
            if event.get("status") == "start" and name:
                self.follow(watcher.node, name)
        if len(watcher.buffer) > 1024 * 1024:
            watcher.buffer.clear()  # not an event stream

    def _stop_watcher(self, watcher: Watcher) -> None:
        watcher.stopped = True
        if watcher.stream is not None:
            watcher.stream.close()
        if watcher.sleeping is not None:
            watcher.sleeping.cancel()


async def _nothing() -> None:
    return None
