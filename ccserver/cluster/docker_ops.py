"""Blocking Docker operations on one engine, each a plain function of a docker SDK client.

They run on the Docker thread pool (see :class:`ccserver.cluster.service.Cluster`), never on
the reactor thread.  Containers ccserver starts carry the label :data:`KIND_LABEL` so that
reconciliation and clean-up can find them, and ``DAEMON_LABEL`` (from :mod:`ccserver.identity`)
with the id of the daemon that made them, so that a daemon never takes another one's
containers for its own; their Docker name is their document id.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import docker
from docker.errors import APIError, ImageNotFound, NotFound
from twisted.logger import Logger

from ccserver.identity import DAEMON_LABEL
from ccserver.kinds import INSPECTION

log = Logger(namespace="ccserver.docker")

KIND_LABEL = "io.curious-containers.kind"
LOG_TAIL_BYTES = 4000
#: a pull under way is logged this often (layers, bytes)
PULL_LOG_SECONDS = 10.0


class ContainerGone(Exception):
    """The container does not exist on the engine (any more)."""


def node_info(client: docker.DockerClient) -> dict[str, Any]:
    info = client.info()
    return {"total_ram": int(info["MemTotal"]) // (1024 * 1024), "total_cpus": int(info["NCPU"])}


def ensure_image(
    client: docker.DockerClient,
    image: str,
    policy: str,
    auth: dict[str, str] | None,
    node: str,
) -> Pulled | None:
    """Make ``image`` present on the engine according to the pull policy; a failure raises
    with the engine's message.  What was pulled, or ``None`` when the image was there."""
    if policy != "always":
        try:
            client.images.get(image)
            return None
        except ImageNotFound:
            if policy == "never":
                raise RuntimeError(f"image {image} is not present on node {node} and pull_policy is 'never'") from None
    repository, tag = _split_tag(image)
    log.info("pulling image {image} on node {node}", image=image, node=node)
    progress = PullProgress(image, node, time.monotonic)
    for event in client.api.pull(repository, tag=tag, stream=True, decode=True, auth_config=auth):
        if "error" in event:
            raise RuntimeError(f"pull of {image} on node {node} failed: {event['error']}")
        progress.see(event)
    log.info("pulled image {image} on node {node}: {summary}", image=image, node=node, summary=progress.summary())
    return Pulled(progress.downloaded(), progress.now() - progress.started)


@dataclass(frozen=True)
class Pulled:
    """One pull that happened: the bytes the engine reported downloading, and its seconds."""

    bytes: int
    seconds: float


class PullProgress:
    """The layers and bytes of one pull, from the engine's progress events, logged at most
    every :data:`PULL_LOG_SECONDS` (the engine sends many events a second)."""

    def __init__(self, image: str, node: str, now: Callable[[], float]) -> None:
        self.image, self.node, self.now = image, node, now
        self.started = self.last_log = now()
        #: layer id -> (bytes downloaded, total bytes or 0)
        self.layers: dict[str, tuple[int, int]] = {}
        self.done: set[str] = set()

    def see(self, event: dict[str, Any]) -> None:
        layer, status = event.get("id"), event.get("status", "")
        if layer and status in ("Pulling fs layer", "Waiting", "Downloading", "Verifying Checksum"):
            detail = event.get("progressDetail") or {}
            current, total = self.layers.get(layer, (0, 0))
            self.layers[layer] = (int(detail.get("current") or current), int(detail.get("total") or total))
        elif layer and status in ("Download complete", "Pull complete", "Already exists"):
            self.done.add(layer)
            current, total = self.layers.get(layer, (0, 0))
            self.layers[layer] = (max(current, total), total)
        if self.now() - self.last_log >= PULL_LOG_SECONDS:
            self.last_log = self.now()
            log.info("pull {image} on {node}: {summary}", image=self.image, node=self.node, summary=self.summary())

    def downloaded(self) -> int:
        """Bytes downloaded so far (the layers the engine had already count for nothing)."""
        return sum(c for c, _ in self.layers.values())

    def summary(self) -> str:
        got = self.downloaded()
        total = sum(t for _, t in self.layers.values())
        size = f"{got / 1e6:.1f} of {total / 1e6:.1f} MB" if total else f"{got / 1e6:.1f} MB"
        return f"{len(self.done)} of {len(self.layers)} layers, {size}"


def _split_tag(image: str) -> tuple[str, str | None]:
    if "@" in image:
        return image, None
    name, _, tag = image.rpartition(":")
    if name and "/" not in tag:
        return name, tag
    return image, "latest"


def command_line(entry_point: str, settings: dict[str, Any]) -> str:
    """``<entry_point> '<settings as JSON>'`` as cc-protocol §6 says."""
    return f"{entry_point} {shlex.quote(json.dumps(settings))}"


def create_container(
    client: docker.DockerClient,
    name: str,
    image: str,
    command: str,
    ram_mb: int,
    kind: str,
    net: str | None,
    daemon: str,
) -> str:
    limit = f"{int(ram_mb)}m"
    # the low-level call: the high-level one inspects the new container afterwards, one more
    # engine round trip per container for nothing
    host_config = client.api.create_host_config(mem_limit=limit, memswap_limit=limit, network_mode=net)
    # ignore: types-docker wants one EndpointConfig; docker-py (and the engine) want {network: EndpointConfig}
    networking = client.api.create_networking_config({net: client.api.create_endpoint_config()}) if net else None  # type: ignore[arg-type]
    created = client.api.create_container(
        image,
        command=shlex.split(command),
        name=name,
        labels={KIND_LABEL: kind, DAEMON_LABEL: daemon},
        host_config=host_config,
        networking_config=networking,
        detach=True,
    )
    return str(created["Id"])


def start_container(client: docker.DockerClient, name: str) -> None:
    try:
        client.api.start(name)
    except NotFound:
        raise ContainerGone(name) from None


def remove_container(client: docker.DockerClient, name: str) -> bool:
    """Remove (killing it if needed); False when it was already gone."""
    try:
        client.api.remove_container(name, force=True)
        return True
    except NotFound:
        return False
    except APIError as e:
        if e.status_code == 409:  # removal already in progress
            return True
        raise


def container_state(client: docker.DockerClient, name: str) -> tuple[str, int]:
    """(status, exit code) of a container; :class:`ContainerGone` when it does not exist."""
    try:
        attrs = client.api.inspect_container(name)
    except NotFound:
        raise ContainerGone(name) from None
    state = attrs.get("State", {})
    return str(state.get("Status", "unknown")), int(state.get("ExitCode") or 0)


def container_address(client: docker.DockerClient, name: str, net: str | None) -> str:
    """Where other containers reach ``name``: its name on a user network, else its IP on the
    default bridge."""
    if net:
        return name
    attrs = client.api.inspect_container(name)
    networks = attrs.get("NetworkSettings", {}).get("Networks", {})
    for network in networks.values():
        if network.get("IPAddress"):
            return str(network["IPAddress"])
    return str(attrs.get("NetworkSettings", {}).get("IPAddress", ""))


def logs_tail(client: docker.DockerClient, name: str, limit: int = LOG_TAIL_BYTES) -> str:
    """The last ``limit`` bytes of the container's output (streamed: never more than that is
    held), led by a line saying that output was cut when there was more."""
    try:
        # each line is at least one byte: the last ``limit`` lines hold the last ``limit`` bytes
        chunks = client.api.logs(name, stdout=True, stderr=True, stream=True, follow=False, tail=limit)
        text, cut = last_bytes(chunks, limit)
    except NotFound:
        return ""
    return (cut_marker(limit) + text) if cut else text


def cut_marker(limit: int) -> str:
    """The first line of a tail that lost its beginning."""
    return f"[output cut: only its last {limit} bytes are kept]\n"


def last_bytes(chunks: Iterable[bytes], limit: int) -> tuple[str, bool]:
    """The text of the last ``limit`` bytes of ``chunks``, and whether anything came before
    them (a cut character at the start is dropped, not replaced)."""
    kept = bytearray()
    lines = 0
    cut = False
    for chunk in chunks:
        lines += chunk.count(b"\n")
        kept += chunk
        if len(kept) > limit:
            del kept[: len(kept) - limit]
            cut = True
    if lines >= limit:
        cut = True  # the engine gave only its last ``limit`` lines
    start = 0
    while cut and start < min(3, len(kept)) and 0x80 <= kept[start] < 0xC0:
        start += 1  # inside a character cut in two
    return bytes(kept[start:]).decode("utf-8", "replace"), cut


def our_containers(client: docker.DockerClient, daemon: str) -> dict[str, tuple[str, str, bool]]:
    """name → (kind, status, legacy) of every container the daemon ``daemon`` started on this
    engine, and of those an older ccserver started without a daemon label (``legacy``: they
    are ours only if our store knows them).  Other daemons' containers are not listed."""
    found = {}
    for c in client.api.containers(all=True, filters={"label": KIND_LABEL}):
        names = [n.lstrip("/") for n in c.get("Names", [])]
        labels = c.get("Labels") or {}
        owner = labels.get(DAEMON_LABEL)
        if names and owner in (None, daemon):
            found[names[0]] = (labels.get(KIND_LABEL, ""), c.get("State", ""), owner is None)
    return found


def run_inspection(
    client: docker.DockerClient,
    name: str,
    image: str,
    command: str,
    timeout: float,
    daemon: str | None,
) -> tuple[int, str]:
    """Run an inspection container to its end; (exit code, log tail).  Removed afterwards.
    It carries the daemon label when the daemon's id is known (ends of inspection containers
    are never acted on, so a database outage need not stop an inspection)."""
    labels = {KIND_LABEL: INSPECTION.name}
    if daemon:
        labels[DAEMON_LABEL] = daemon
    container = client.containers.create(
        image,
        command=shlex.split(command),
        name=name,
        labels=labels,
        mem_limit="128m",
        detach=True,
    )
    try:
        container.start()
        result = container.wait(timeout=timeout)
        return int(result.get("StatusCode", 1)), logs_tail(client, name)
    finally:
        try:
            container.remove(force=True)
        except NotFound:
            pass
