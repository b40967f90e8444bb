"""The daemon's service tree, read top-down: configuration → store → Docker pool → web.

The scheduler and cluster services of later work hang off the same tree, between the store
and the web server.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import inlineCallbacks
from twisted.logger import ILogObserver, Logger
from twisted.python.components import Componentized

from ccserver import __version__, listeners, logs
from ccserver.cluster.engine import bridge_gateway
from ccserver.config import Config
from ccserver.storage import open_store
from ccserver.threads import ThreadPoolService
from ccserver.web.api import API
from ccserver.web.service import WebService
from ccserver.web.site import CCSite

log = Logger(namespace="ccserver")

#: the longest the daemon waits for the engine when it asks for the bridge gateway
GATEWAY_TIMEOUT = 10.0


class CCServer(MultiService):
    def __init__(self, config: Config, reactor: Any, cli_listen: list[str] | None = None) -> None:
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.plan = listeners.plan(config, list(cli_listen or ()))
        #: the callback base URL containers use; final once ``ready`` has fired
        self.host: str | None = self.plan.host

        self.store = open_store(config, reactor)
        self.store.setServiceParent(self)
        self.docker_pool = ThreadPoolService(reactor, "docker", config.docker.thread_limit)
        self.docker_pool.setServiceParent(self)

        self.api = API(self.store)
        site = CCSite(self.api.resource(), max_body_bytes=config.server.max_body_bytes)
        self.web = WebService(reactor, site, config.server.shutdown_timeout_seconds)
        self.web.setServiceParent(self)
        self.ready = None

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
        super().startService()
        self.ready = self._open()
        self.ready.addErrback(self._failed)

    @inlineCallbacks
    def _open(self) -> Any:
        gateway = None
        if self.plan.needs_gateway:
            gateway = yield self._gateway()
        endpoints = listeners.complete(self.plan, gateway, self.config.source)
        yield self.web.listen(endpoints)
        self.host = listeners.callback_host(self.plan, gateway, self.web.bound())
        log.info("containers will call back at {host}", host=self.host)

    @inlineCallbacks
    def _gateway(self) -> Any:
        node = self.config.docker.nodes[0]
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

    def _failed(self, failure: Any) -> None:
        log.critical("ccserver cannot start: {error}", error=failure.getErrorMessage())
        self.exit_code = 1
        if self.reactor.running:
            self.reactor.stop()

    exit_code = 0
