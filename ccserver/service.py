"""The daemon's service tree, read top-down:
configuration → store → thread pools → cluster → scheduler → web.

Children start in that order and stop in reverse; the web server opens its listeners last,
once the callback address containers use is known.
"""

from __future__ import annotations

import gc
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import ILogObserver, Logger
from twisted.python.components import Componentized
from werkzeug.routing import Map

from ccserver import __version__, listeners, logs
from ccserver.auth.guard import Authenticator, parse_address, parse_networks
from ccserver.callbacks import Callbacks
from ccserver.cluster.engine import bridge_gateway
from ccserver.cluster.service import Cluster
from ccserver.collector import CollectorPause
from ccserver.config import Config
from ccserver.destinations import Destinations
from ccserver.identity import DaemonIdentity
from ccserver.kinds import DEFAULT_KINDS
from ccserver.lifecycle import Lifecycle
from ccserver.livelogs.follower import LogFollower
from ccserver.metrics import Metrics
from ccserver.metrics_refresh import StateRefresher
from ccserver.notifications import DeadNodeAnnouncer, Notifier
from ccserver.scheduling.service import Scheduler
from ccserver.storage import open_store
from ccserver.tes.kube_staging import StagingExchange
from ccserver.tes.runner import TesRunner
from ccserver.tes.stager import ArchiveStager
from ccserver.tes.submission import Defaults, Storage
from ccserver.tes.tasks import TesTasks
from ccserver.threads import ThreadPoolService
from ccserver.vault import Vault, load_server_key
from ccserver.web.api import API
from ccserver.web.connections import budget, files_for
from ccserver.web.metrics_page import MetricsMount, MetricsPage, metrics_only
from ccserver.web.offload import RequestWork
from ccserver.web.open_files import open_file_limit
from ccserver.web.route_names import RequestMetrics, RouteNames
from ccserver.web.service import WebService
from ccserver.web.site import CCSite, Limits
from ccserver.web.tes_routes import TesApi
from ccserver.wiring import CallbackAddress, Wakeup

log = Logger(namespace="ccserver")

#: threads of the staging pool: TES tasks on clusters whose inputs or outputs move at once
#: (each moves up to ``[tes.storage] transfer_threads`` of them in parallel)
STAGING_THREADS = 4

#: the longest the daemon waits for the engine when it asks for the bridge gateway
GATEWAY_TIMEOUT = 10.0


def connection_limits(config: Config) -> Limits:
    """``[server]``'s connection limits, ``max_connections`` fitted to the open-file limit
    (raised towards what it needs first, where the hard limit allows)."""
    server = config.server
    fitted = budget(server.max_connections, open_file_limit(files_for(server.max_connections)))
    if fitted.lowered:
        log.warn(
            "server.max_connections = {wanted} does not fit the open-file limit (RLIMIT_NOFILE); "
            "holding at most {cap} connections",
            wanted=fitted.wanted,
            cap=fitted.cap,
        )
    proxies = parse_networks(server.trusted_proxies)

    def exempt(host: str) -> bool:
        address = parse_address(host)
        return address is not None and any(address in network for network in proxies)

    return Limits(
        budget=fitted,
        max_connections_per_client=server.max_connections_per_client,
        idle_timeout=server.idle_timeout_seconds,
        header_timeout=server.header_timeout_seconds,
        body_timeout=server.body_timeout_seconds,
        max_header_bytes=server.max_header_bytes,
        exempt=exempt,
    )


def prefixed(prefix: str, path: str) -> str:
    """``path`` under the API prefix (``/cc`` + ``/metrics``)."""
    return prefix.rstrip("/") + path


class CCServer(MultiService):
    def __init__(self, config: Config, reactor: Any, plan: listeners.Plan | None = None) -> None:
        """``plan``: where to listen, as :func:`ccserver.listeners.plan` made it from the
        configuration and the command line (``makeService`` checks its endpoints first);
        without one, the configuration's listeners."""
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.plan = plan if plan is not None else listeners.plan(config, [])
        #: the callback base URL containers use; final once ``ready`` has fired
        self.host: str | None = self.plan.host

        #: what every part measures (its own registry; served by /metrics when enabled)
        self.metrics = Metrics()
        self.store = open_store(config, reactor, observer=self.metrics)
        self.store.setServiceParent(self)
        self.vault = Vault(self.store, load_server_key(config.server.secret_key_file))
        stop_timeout = config.server.shutdown_timeout_seconds
        self.docker_pool = ThreadPoolService(reactor, "docker", config.docker.thread_limit, stop_timeout)
        self.docker_pool.setServiceParent(self)
        self.hash_pool = ThreadPoolService(reactor, "passwords", config.server.password_hash_threads, stop_timeout)
        self.hash_pool.setServiceParent(self)
        # the CPU work of large request bodies, and the pure placement of a round, off the reactor
        self.request_pool = ThreadPoolService(reactor, "requests", config.server.body_threads, stop_timeout)
        self.request_pool.setServiceParent(self)
        self.placement_pool = ThreadPoolService(reactor, "placement", 1, stop_timeout)
        self.placement_pool.setServiceParent(self)
        # the file work of staging TES tasks on Kubernetes clusters (see ccserver.tes.kube_staging)
        self.staging_pool = ThreadPoolService(reactor, "tes-staging", STAGING_THREADS, stop_timeout)
        self.staging_pool.setServiceParent(self)
        self.staging = StagingExchange(self.staging_pool)
        self.collector = CollectorPause(reactor)

        #: this daemon's id, kept in its store: the label of its containers
        self.identity = DaemonIdentity(self.store)
        #: where containers call back, known once the listeners are bound (see ccserver.wiring)
        self.address = CallbackAddress()
        #: the kinds of container this daemon runs (see ccserver.kinds); the scheduler, the
        #: launcher and the cleanup take them from the life cycle
        self.kinds = DEFAULT_KINDS
        #: wake-ups of the scheduler, asked for by parts built before it
        self.wakeup = Wakeup()
        self.cluster = Cluster(
            config, self.store, self.docker_pool, reactor, self.identity, self.address, metrics=self.metrics
        )
        self.cluster.setServiceParent(self)
        allowed = config.notifications
        self.notifier = Notifier(
            reactor,
            destinations=Destinations.from_strings(allowed.allowed_networks, allowed.allowed_hosts),
            metrics=self.metrics,
        )
        self.lifecycle = Lifecycle(
            self.store,
            reactor,
            config.defaults.max_task_trials,
            self.vault,
            notify_task=self.notifier.notify_task,
            wake=self.wakeup,
            metrics=self.metrics,
            kinds=self.kinds,
        )
        # TES tasks: placed by the scheduler's rounds, run by their own attempts; the images
        # come through the launcher's shared pulls (the scheduler, built next, owns it)
        self.tes_runner = TesRunner(
            config,
            self.store,
            self.cluster,
            self.vault,
            self.identity,
            ArchiveStager(config.tes.storage),
            ensure_image=lambda node, image, auth: self.scheduler.launcher.ensure_image(node, image, auth),
            send=self.notifier.send,
            # a round, not every subscriber: the runner's own check is not needed at an end
            wake=lambda: self.scheduler.wake(),
            clock=reactor,
            exchange=self.staging,
            staging_pool=self.staging_pool,
        )
        self.scheduler = Scheduler(
            config,
            self.store,
            self.cluster,
            self.lifecycle,
            reactor,
            self.vault,
            self.identity,
            self.address,
            self.placement_pool,
            self.collector,
            tes=self.tes_runner,
            metrics=self.metrics,
        )
        self.scheduler.setServiceParent(self)
        self.tes_runner.setServiceParent(self)
        self.wakeup.subscribe(self.scheduler.wake)
        self.wakeup.subscribe(self.tes_runner.wake)
        # the engines' events reach the scheduler; dead nodes are announced
        self.cluster.add_listener(self.scheduler)
        self.cluster.add_listener(self.tes_runner)
        self.cluster.add_listener(DeadNodeAnnouncer(self.notifier, config.defaults.dead_node_notification))
        # the output of running containers, followed from their engines and clusters (see ccserver.livelogs)
        self.logs = LogFollower(
            config,
            self.store,
            self.identity,
            reactor,
            self.docker_pool,
            clusters={name: site.kube for name, site in self.cluster.clusters.items()},
        )
        self.logs.setServiceParent(self)
        self.cluster.add_listener(self.logs)
        self.callbacks = Callbacks(
            self.store,
            self.lifecycle,
            self.scheduler.data_container_address,
            self.wakeup,
            self.vault,
            self.kinds,
            clock=reactor,
            metrics=self.metrics,
        )
        if config.metrics.enabled:
            refresher = StateRefresher(self.metrics, self.store, self.cluster, reactor, config.metrics.refresh_seconds)
            refresher.setServiceParent(self)

        self.authenticator = Authenticator(self.store, config, reactor, self.hash_pool)
        work = RequestWork(self.request_pool, config.server.inline_body_bytes)
        tes = None
        if config.tes.enabled:
            tes = TesApi(
                TesTasks(self.store, self.vault, reactor, self.wakeup),
                self.authenticator,
                work,
                reactor,
                Storage.from_config(config),
                Defaults.from_config(config),
                anonymous_user=config.tes.anonymous_user,
                prefix=config.server.api_prefix,
            )
        self.api = API(
            config,
            self.store,
            self.authenticator,
            self.cluster,
            self.scheduler,
            reactor,
            self.vault,
            callbacks=self.callbacks,
            work=work,
            collector=self.collector,
            lifecycle=self.lifecycle,
            tes=tes,
            logs=self.logs,
            staging=self.staging,
        )
        server = config.server
        limits = connection_limits(config)
        page = MetricsPage(self.metrics.registry, self.authenticator, config.metrics.access, self.request_pool)
        #: /metrics beside the API, unless it has listeners of its own (or is off)
        beside = config.metrics.enabled and config.metrics.listen is None
        mounted = {prefixed(server.api_prefix, "/metrics"): "/metrics"} if beside else {}
        names = RouteNames(API.app.url_map, server.api_prefix, server.static_dir is not None, mounted)
        site = CCSite(
            MetricsMount(self.api.resource(), page, server.api_prefix) if beside else self.api.resource(),
            max_body_bytes=server.max_body_bytes,
            client_address=self.authenticator.client_address,
            limits=limits,
            reactor=reactor,
            requests=RequestMetrics(self.metrics, names),
        )
        self.web = WebService(reactor, site, server.shutdown_timeout_seconds)
        self.web.setServiceParent(self)
        #: the listeners of /metrics alone (``metrics.listen``), opened after the API's
        self.metrics_web: WebService | None = None
        if config.metrics.enabled and config.metrics.listen is not None:
            alone = CCSite(
                metrics_only(page),
                max_body_bytes=server.max_body_bytes,
                client_address=self.authenticator.client_address,
                limits=limits,
                reactor=reactor,
                requests=RequestMetrics(self.metrics, RouteNames(Map(), "", False, {"/metrics": "/metrics"})),
            )
            self.metrics_web = WebService(reactor, alone, server.shutdown_timeout_seconds, name="metrics")
            self.metrics_web.setServiceParent(self)
        self.ready: Deferred[Any] | None = None

    def setServiceParent(self, parent: Any) -> None:
        # twistd asks the application for an ILogObserver before it starts logging
        if isinstance(parent, Componentized) and logs.wants_own_observer(self.config.server):
            parent.setComponent(ILogObserver, logs.build_observer(self.config.server))
        super().setServiceParent(parent)

    def startService(self) -> None:
        log.info(
            "ccserver {version} starting; configuration: {source}; store: {store}",
            version=__version__,
            source=self.config.source or "none found, using built-in defaults",
            store=self.store.kind,
        )
        for section in self.config.ignored_sections:
            log.info("[{section}] is ignored: one ccserver daemon needs no helper processes", section=section)
        # Children start in order, each once the one before it has started (the store opens
        # before anything uses it); a child that fails to start stops the daemon with one
        # line naming the cause (MultiService.startService would drop its Deferred).
        Service.startService(self)
        self.ready = Deferred.fromCoroutine(self._start())
        self.ready.addErrback(self._failed)

    async def _start(self) -> None:
        for child in self:
            try:
                started = child.startService()
                if isinstance(started, Deferred):
                    await started
            except Exception as e:
                raise StartFailed(f"{getattr(child, 'name', None) or type(child).__name__}: {_reason(e)}") from e
        await self._open()

    @inlineCallbacks
    def _open(self) -> Any:
        # read (or made) now; not waited for: with the database down, the API answers 503 and
        # the scheduler, which needs the id, asks again in its next round
        self.identity.get().addErrback(
            lambda f: log.warn(
                "cannot read this daemon's identity yet ({error}); will try again", error=f.getErrorMessage()
            )
        )
        gateway = None
        if self.plan.needs_gateway:
            gateway = yield self._gateway()
        endpoints = listeners.complete(self.plan, gateway, self.config.source)
        yield self.web.listen(endpoints)
        if self.metrics_web is not None and self.config.metrics.listen is not None:
            yield self.metrics_web.listen(self.config.metrics.listen)
        self.host = listeners.callback_host(self.plan, gateway, self.web.bound())
        if self.plan.host is None:
            self.host += self.config.server.api_prefix
        log.info("containers will call back at {host}", host=self.host)
        self.address.set(self.host)
        self.wakeup()
        # what start-up allocated lives as long as the daemon: keep it out of the
        # collector's full passes, which otherwise stall the reactor for tens of ms
        gc.collect()
        gc.freeze()

    @inlineCallbacks
    def _gateway(self) -> Any:
        node = self.config.docker.nodes[0]
        if len(self.config.docker.nodes) > 1:
            log.warn(
                "server.host is not set: containers on every node will call back at the bridge "
                "gateway of node {node}; with several engines, set server.host to an address all "
                "their containers reach",
                node=node.name,
            )
        timeout = min(self.config.docker.api_timeout, GATEWAY_TIMEOUT)
        try:
            d = self.docker_pool.run(bridge_gateway, node, timeout)
            d.addTimeout(timeout + 1, self.reactor)
            gateway = yield d
        except Exception as e:
            log.warn(
                "could not ask Docker node {node} ({url}) for its bridge gateway ({error}); "
                "listening on 127.0.0.1 only: containers will not reach this daemon until "
                "server.host is configured",
                node=node.name,
                url=node.base_url,
                error=str(e) or e.__class__.__name__,
            )
            return None
        log.info("Docker bridge gateway of node {node}: {gateway}", node=node.name, gateway=gateway)
        return gateway

    @inlineCallbacks
    def stopService(self) -> Any:
        """Stop children one after the other, in reverse order: the web server first (no new
        work), the store last (in-flight writes finish).  Children that never started (the
        start failed before them) are skipped."""
        Service.stopService(self)
        self.api.submitter.stop()
        for child in reversed(list(self)):
            if not child.running:
                continue
            try:
                yield child.stopService()
            except Exception as e:
                log.error("stopping {name} failed: {error}", name=getattr(child, "name", child), error=str(e))

    def _failed(self, failure: Any) -> None:
        error = failure.value if isinstance(failure.value, StartFailed) else _reason(failure.value)
        log.critical("ccserver cannot start: {error}", error=str(error))
        self.exit_code = 1
        if self.reactor.running:
            self.reactor.stop()

    exit_code = 0


class StartFailed(Exception):
    """A child of the service tree could not start; the message names it and the cause."""


def _reason(error: BaseException) -> str:
    return str(error) or type(error).__name__
