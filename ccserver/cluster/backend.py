"""What the scheduler needs of any node, a Docker engine or a Kubernetes cluster.

The launcher, the cleanup and the scheduler ask ``cluster.backend(node)`` for a
:class:`NodeBackend` and call its operations; they never ask which kind of node it is.  The
differences are said once, here: a :class:`DockerBackend` runs each operation as a
:meth:`Cluster.call <ccserver.cluster.service.Cluster.call>` of the :mod:`docker_ops` function,
on the pool and with the deadline it had before this module existed; a :class:`KubeBackend`
forwards to a :class:`ccserver.kubernetes.node.KubeNode`, which has its own deadlines
(``api_timeout_seconds``) and pulls nothing (the kubelet does, per ``imagePullPolicy``).

What stays Docker-only (the TES runner, the live-log follower, inspection containers) talks
to the Docker nodes (``cluster.nodes``) directly and never sees a cluster.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from docker.errors import APIError

from ccserver.cluster import docker_ops
from ccserver.kubernetes.node import KubeConflict

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from ccserver.config import KubeClusterConfig
    from ccserver.livelogs.engine_http import BodyStream
    from ccserver.threads import ThreadPoolService

#: seconds an image pull may take (its own pool: see Cluster.pull_pool)
PULL_TIMEOUT = 1800.0
#: seconds a short look-up a request waits for (a data container's address) may take
LOOKUP_TIMEOUT = 5.0


class ContainerExists(Exception):
    """A container (a Job) of that name exists already: made before a restart; the launch
    goes on with it."""


class NodeBackend(Protocol):
    """The operations the scheduler needs of a node; containers are named by their document id."""

    #: the node's name
    name: str
    #: data containers may run here (False: tasks placed here run with no_cache semantics)
    caches: bool
    #: TES tasks may run here
    runs_tes: bool
    #: a Docker engine (every TES task runs here; a cluster runs those without Docker-only features)
    engine: bool
    #: what the node is, in messages ("container vanished from ...")
    where: str
    #: it removes a container that cannot run before it reports it (``container_stuck``)
    removes_stuck: bool

    def callback_base(self, default: str | None) -> str | None:
        """The base URL its containers call back at (``default``: the daemon's own)."""
        ...

    async def create(
        self, name: str, image: str, command: str, ram_mb: int, kind: str, daemon: str, cpus: float | None
    ) -> None:
        """Create (not start) a container; :class:`ContainerExists` when there is one already."""
        ...

    async def start(self, name: str) -> None:
        """Start it; :class:`docker_ops.ContainerGone` when it does not exist."""
        ...

    async def remove(self, name: str, daemon: str) -> bool:
        """Remove it (killing it if needed); False when it was gone already."""
        ...

    async def state(self, name: str) -> tuple[str, int]:
        """(status, exit code); :class:`docker_ops.ContainerGone` when it does not exist."""
        ...

    async def ours(self, daemon: str) -> dict[str, tuple[str, str, bool]]:
        """name → (kind, status, legacy) of the daemon's containers (see docker_ops.our_containers)."""
        ...

    async def address(self, name: str, lookup: bool = False) -> str:
        """Where other containers reach it (a data container); ``lookup``: asked while a
        request waits (a short deadline on a pool of its own)."""
        ...

    async def logs_tail(self, name: str, limit: int = docker_ops.LOG_TAIL_BYTES) -> str:
        """The last ``limit`` bytes of its output, led by the cut marker when there was more."""
        ...

    async def ensure_image(self, image: str, policy: str, auth: dict[str, str] | None) -> docker_ops.Pulled | None:
        """The image present per the pull policy; what was pulled (None: nothing)."""
        ...

    async def info(self) -> tuple[int, int | None]:
        """(RAM in MB, CPUs) the node offers."""
        ...


class Calls(Protocol):
    """What a :class:`DockerBackend` needs of the cluster service."""

    pull_pool: ThreadPoolService
    lookup_pool: ThreadPoolService

    def call(
        self,
        name: str,
        fn: Any,
        *args: Any,
        timeout: float | None = None,
        health: bool = False,
        pool: ThreadPoolService | None = None,
    ) -> Deferred[Any]: ...


class DockerBackend:
    """A Docker engine: each operation one :meth:`Cluster.call` of its docker_ops function."""

    caches = True
    runs_tes = True
    engine = True
    where = "Docker"
    removes_stuck = False

    def __init__(self, calls: Calls, name: str, net: str | None) -> None:
        """``net``: the Docker network containers join (``docker.net``)."""
        self.calls = calls
        self.name = name
        self.net = net

    def callback_base(self, default: str | None) -> str | None:
        return default

    async def create(
        self, name: str, image: str, command: str, ram_mb: int, kind: str, daemon: str, cpus: float | None
    ) -> None:
        # cpus: 0.10 containers are not CPU-limited on Docker engines (as in 0.10)
        try:
            await self.calls.call(
                self.name, docker_ops.create_container, name, image, command, ram_mb, kind, self.net, daemon
            )
        except APIError as e:
            if e.status_code == 409:
                raise ContainerExists(name) from e
            raise

    async def start(self, name: str) -> None:
        await self.calls.call(self.name, docker_ops.start_container, name)

    async def remove(self, name: str, daemon: str) -> bool:
        # the Docker name is the document id; callers only remove what the store says is ours
        return bool(await self.calls.call(self.name, docker_ops.remove_container, name))

    async def state(self, name: str) -> tuple[str, int]:
        status, code = await self.calls.call(self.name, docker_ops.container_state, name)
        return str(status), int(code)

    async def ours(self, daemon: str) -> dict[str, tuple[str, str, bool]]:
        found: dict[str, tuple[str, str, bool]] = await self.calls.call(self.name, docker_ops.our_containers, daemon)
        return found

    async def address(self, name: str, lookup: bool = False) -> str:
        if lookup:
            found = await self.calls.call(
                self.name,
                docker_ops.container_address,
                name,
                self.net,
                timeout=LOOKUP_TIMEOUT,
                pool=self.calls.lookup_pool,
            )
        else:
            found = await self.calls.call(self.name, docker_ops.container_address, name, self.net)
        return str(found) if found else ""

    async def logs_tail(self, name: str, limit: int = docker_ops.LOG_TAIL_BYTES) -> str:
        return str(await self.calls.call(self.name, docker_ops.logs_tail, name, limit))

    async def ensure_image(self, image: str, policy: str, auth: dict[str, str] | None) -> docker_ops.Pulled | None:
        pulled: docker_ops.Pulled | None = await self.calls.call(
            self.name,
            docker_ops.ensure_image,
            image,
            policy,
            auth,
            self.name,
            timeout=PULL_TIMEOUT,
            pool=self.calls.pull_pool,
        )
        return pulled

    async def info(self) -> tuple[int, int | None]:
        found = await self.calls.call(self.name, docker_ops.node_info, health=True)
        return int(found["total_ram"]), found["total_cpus"]


class Kube(Protocol):
    """What a :class:`KubeBackend` (and a TES attempt on a cluster) needs of a
    :class:`ccserver.kubernetes.node.KubeNode`."""

    name: str
    callback_base: str
    config: KubeClusterConfig
    pull_policy: str

    async def info(self) -> tuple[int, int]: ...

    async def create(
        self, name: str, image: str, command: str, ram_mb: int, kind: str, daemon: str, cpus: float | None
    ) -> None: ...

    async def start(self, name: str) -> None: ...

    async def remove(self, name: str, daemon: str) -> bool: ...

    async def state(self, name: str) -> tuple[str, int]: ...

    async def ours(self, daemon: str) -> dict[str, tuple[str, str, bool]]: ...

    async def logs_tail(self, name: str, limit: int, container: str = ...) -> str: ...

    async def create_job(self, body: dict[str, Any]) -> None: ...

    async def newest_pod(self, name: str) -> dict[str, Any] | None: ...

    async def jobs_labelled(self, selector: str) -> list[str]: ...

    async def follow_logs(
        self, name: str, on_data: Callable[[bytes], None], since_ns: int | None, tail_lines: int | None
    ) -> BodyStream | None: ...

    def watch(self, daemon: str) -> None: ...

    def stop_watch(self) -> None: ...

    async def close(self) -> None: ...


class KubeBackend:
    """A Kubernetes cluster as one node: a Job per container, no data containers (their
    files would be served to every pod of the cluster, see docs/kubernetes.rst), TES tasks
    when it has a ``staging_image`` (one Job each, :mod:`ccserver.tes.kube_attempt`), no
    pulls by ccserver, callbacks from the pod network."""

    caches = False
    engine = False
    #: a stuck pod's Job is deleted, then reported (see ccserver.kubernetes.watch)
    removes_stuck = True

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.name = kube.name
        self.runs_tes = kube.config.staging_image is not None
        self.where = f"Kubernetes cluster {kube.name}"

    def callback_base(self, default: str | None) -> str | None:
        return self.kube.callback_base

    async def create(
        self, name: str, image: str, command: str, ram_mb: int, kind: str, daemon: str, cpus: float | None
    ) -> None:
        try:
            await self.kube.create(name, image, command, ram_mb, kind, daemon, cpus)
        except KubeConflict as e:
            raise ContainerExists(name) from e

    async def start(self, name: str) -> None:
        await self.kube.start(name)

    async def remove(self, name: str, daemon: str) -> bool:
        return await self.kube.remove(name, daemon)

    async def state(self, name: str) -> tuple[str, int]:
        return await self.kube.state(name)

    async def ours(self, daemon: str) -> dict[str, tuple[str, str, bool]]:
        return await self.kube.ours(daemon)

    async def address(self, name: str, lookup: bool = False) -> str:
        raise RuntimeError(f"node {self.name} is a Kubernetes cluster: it runs no data containers")

    async def logs_tail(self, name: str, limit: int = docker_ops.LOG_TAIL_BYTES) -> str:
        return await self.kube.logs_tail(name, limit)

    async def ensure_image(self, image: str, policy: str, auth: dict[str, str] | None) -> docker_ops.Pulled | None:
        return None  # the kubelet pulls, per imagePullPolicy (docker.pull_policy)

    async def info(self) -> tuple[int, int | None]:
        ram, cpus = await self.kube.info()
        return ram, cpus
