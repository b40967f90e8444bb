"""One Kubernetes cluster seen as one ccserver node: capacity, Jobs, their pods' ends.

The interface the cluster service (:mod:`ccserver.cluster.service`) uses; see
docs/kubernetes.rst for what maps to what.
"""

from __future__ import annotations

from typing import Any, Protocol

from ccserver.config import KubeClusterConfig
from ccserver.metrics import Metrics


class KubeUnavailable(Exception):
    """The API server cannot be used; the message names the setting when it is a TLS or
    credentials problem."""


class KubeConflict(Exception):
    """A Job of that name exists already."""


class KubeEvents(Protocol):
    """What hears about a cluster's pods (the cluster service)."""

    def container_died(self, node: str, name: str, code: int, owner: str | None) -> None: ...

    def container_stuck(self, node: str, name: str, reason: str) -> None: ...

    def watch_broken(self, node: str, error: BaseException) -> None: ...


class KubeNode:
    """A cluster's API, as the operations ccserver needs of a node."""

    def __init__(
        self,
        config: KubeClusterConfig,
        reactor: Any,
        events: KubeEvents,
        metrics: Metrics | None = None,
        agent: Any = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.callback_base = config.callback_url.rstrip("/")
        self.reactor = reactor
        self.events = events
        self.metrics = metrics if metrics is not None else Metrics()
        self.agent = agent

    async def info(self) -> tuple[int, int]:
        raise NotImplementedError

    async def create(
        self, name: str, image: str, command: str, ram_mb: int, kind: str, daemon: str, cpus: float | None
    ) -> None:
        raise NotImplementedError

    async def start(self, name: str) -> None:
        raise NotImplementedError

    async def remove(self, name: str, daemon: str) -> bool:
        raise NotImplementedError

    async def state(self, name: str) -> tuple[str, int]:
        raise NotImplementedError

    async def ours(self, daemon: str) -> dict[str, tuple[str, str, bool]]:
        raise NotImplementedError

    async def logs_tail(self, name: str, limit: int) -> str:
        raise NotImplementedError

    def watch(self, daemon: str) -> None:
        raise NotImplementedError

    def stop_watch(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError
