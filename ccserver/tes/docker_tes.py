"""Blocking Docker operations for TES attempts, each a plain function of a docker SDK client.

They run on the Docker thread pool through :meth:`ccserver.cluster.service.Cluster.call`,
never on the reactor thread.  Every container and volume of a TES task carries the labels of
contracts §1 (daemon, task, attempt) and the container kind label, so that the engines' event
streams report its end and a daemon finds (and removes) only its own.  Names are
``ccserver-tes-<task id>-<attempt>-e<executor>`` (containers) and ``...-v<n>`` (volumes):
never a bare document id, so the 0.10 clean-up (which removes unknown containers named by
document ids) leaves them alone.
"""

from __future__ import annotations

import io
import tarfile
import tempfile
from datetime import UTC, datetime
from typing import Any

import docker
from docker.errors import APIError, NotFound

from ccserver.cluster.docker_ops import KIND_LABEL, ContainerGone
from ccserver.identity import DAEMON_LABEL

TASK_LABEL = "io.curious-containers.tes-task"
ATTEMPT_LABEL = "io.curious-containers.attempt"
#: the value of the kind label on a TES executor container
EXECUTOR_KIND = "tes-executor"
NAME_PREFIX = "ccserver-tes-"
#: bytes read from the engine at a time when copying an executor's output into a file
CHUNK = 1 << 16


def labels(daemon: str, task_id: str, attempt: int) -> dict[str, str]:
    return {DAEMON_LABEL: daemon, TASK_LABEL: task_id, ATTEMPT_LABEL: str(attempt), KIND_LABEL: EXECUTOR_KIND}


def container_name(task_id: str, attempt: int, executor: int) -> str:
    return f"{NAME_PREFIX}{task_id}-{attempt}-e{executor}"


def volume_name(task_id: str, attempt: int, index: int) -> str:
    return f"{NAME_PREFIX}{task_id}-{attempt}-v{index}"


def create_volume(client: docker.DockerClient, name: str, volume_labels: dict[str, str]) -> None:
    client.api.create_volume(name=name, labels=volume_labels)


def create_executor(
    client: docker.DockerClient,
    name: str,
    image: str,
    command: list[str],
    workdir: str | None,
    env: dict[str, str],
    mounts: list[tuple[str, str]],
    ram_mb: int,
    cpus: float,
    container_labels: dict[str, str],
    net: str | None,
    stdin: bool,
) -> str:
    """Create (not start) one executor's container; ``mounts`` are (volume, path) pairs.
    With ``stdin`` its standard input is kept open for :func:`feed_stdin`."""
    limit = f"{int(ram_mb)}m"
    host_config = client.api.create_host_config(
        mem_limit=limit,
        memswap_limit=limit,
        nano_cpus=int(round(cpus * 1e9)),
        network_mode=net,
        binds={volume: {"bind": path, "mode": "rw"} for volume, path in mounts},
    )
    created = client.api.create_container(
        image,
        command=command,
        name=name,
        working_dir=workdir or None,
        environment=env,
        labels=container_labels,
        host_config=host_config,
        volumes=[path for _, path in mounts],
        stdin_open=stdin,
        # not detached with stdin open: the SDK then sets StdinOnce, so the executor sees the
        # end of its input when the one attach that feeds it closes
        detach=not stdin,
    )
    return str(created["Id"])


def start(client: docker.DockerClient, name: str) -> None:
    try:
        client.api.start(name)
    except NotFound:
        raise ContainerGone(name) from None


def start_with_stdin(client: docker.DockerClient, name: str, path: str) -> None:
    """Start ``name`` with the file ``path`` (inside the container, e.g. in a task volume) as
    its standard input: the file is read with the engine's archive API and written into the
    container's attached stdin, streamed, so the image needs no shell."""
    socket = client.api.attach_socket(name, params={"stdin": 1, "stream": 1})
    raw = getattr(socket, "_sock", socket)
    try:
        start(client, name)
        stream, _ = client.api.get_archive(name, path, chunk_size=CHUNK)
        with tempfile.TemporaryFile() as spool:
            for chunk in stream:
                spool.write(chunk)
            spool.seek(0)
            with tarfile.open(fileobj=spool, mode="r|") as tar:
                for member in tar:
                    if member.isfile():
                        source = tar.extractfile(member)
                        assert source is not None
                        while block := source.read(CHUNK):
                            raw.sendall(block)
                        break
    finally:
        try:
            raw.shutdown(1)  # SHUT_WR: end of input
        except OSError:
            pass
        socket.close()


def ping(client: docker.DockerClient) -> bool:
    """Whether the engine answers (raises when it does not)."""
    return bool(client.ping())


def state(client: docker.DockerClient, name: str) -> dict[str, Any]:
    """The container's ``State`` (Status, ExitCode, StartedAt, FinishedAt)."""
    try:
        return dict(client.api.inspect_container(name).get("State", {}))
    except NotFound:
        raise ContainerGone(name) from None


def output_tails(client: docker.DockerClient, name: str, limit: int) -> tuple[str, str]:
    """The last ``limit`` bytes of the container's stdout and of its stderr."""
    tails = []
    for stdout, stderr in ((True, False), (False, True)):
        try:
            raw = client.api.logs(name, stdout=stdout, stderr=stderr, tail=max(1, limit // 16))
        except NotFound:
            raw = b""
        data = raw if isinstance(raw, bytes) else str(raw).encode()
        tails.append(data[-limit:].decode("utf-8", "replace") if limit else "")
    return tails[0], tails[1]


def copy_output_to_file(client: docker.DockerClient, name: str, stream: str, path: str) -> None:
    """Write the container's whole ``stream`` (stdout or stderr) into ``path`` inside it (a
    stopped container: the file lands in its task volume), spooled through a temporary
    file so that a large output is never held in memory."""
    with tempfile.TemporaryFile() as body:
        for chunk in client.api.logs(name, stdout=stream == "stdout", stderr=stream == "stderr", stream=True):
            body.write(chunk)
        size = body.tell()
        body.seek(0)
        with tempfile.TemporaryFile() as archive:
            with tarfile.open(fileobj=archive, mode="w") as tar:
                info = tarfile.TarInfo(path.lstrip("/"))
                info.size = size
                info.mode = 0o644
                tar.addfile(info, body)
            archive.seek(0)
            client.api.put_archive(name, "/", archive)


def put_file(client: docker.DockerClient, name: str, path: str, content: bytes) -> None:
    """Write ``content`` at ``path`` inside the (created) container ``name``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(path.lstrip("/"))
        info.size = len(content)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(content))
    client.api.put_archive(name, "/", buf.getvalue())


def remove_container(client: docker.DockerClient, name: str) -> None:
    try:
        client.api.remove_container(name, force=True, v=False)
    except NotFound:
        pass
    except APIError as e:
        if e.status_code != 409:  # 409: removal already in progress
            raise


def remove_volume(client: docker.DockerClient, name: str) -> None:
    try:
        client.api.remove_volume(name, force=True)
    except NotFound:
        pass


def remove_named(client: docker.DockerClient, containers: list[str], volumes: list[str]) -> None:
    """Remove these containers, then these volumes (an attempt's own, known by name: no
    listing of the engine's); those already gone are no error."""
    for name in containers:
        remove_container(client, name)
    for name in volumes:
        remove_volume(client, name)


def remove_task_leftovers(client: docker.DockerClient, daemon: str, task_id: str | None) -> int:
    """Remove every container, then every volume, of this daemon's TES task ``task_id`` (of
    all its TES tasks with ``None``); how many things were removed."""
    wanted = [f"{DAEMON_LABEL}={daemon}", TASK_LABEL if task_id is None else f"{TASK_LABEL}={task_id}"]
    removed = 0
    for c in client.api.containers(all=True, filters={"label": wanted}):
        remove_container(client, c["Id"])
        removed += 1
    for v in client.api.volumes(filters={"label": wanted}).get("Volumes") or []:
        remove_volume(client, v["Name"])
        removed += 1
    return removed


def running_tasks(client: docker.DockerClient, daemon: str) -> dict[str, str]:
    """Container name → status of this daemon's TES containers on the engine."""
    found = {}
    for c in client.api.containers(all=True, filters={"label": [f"{DAEMON_LABEL}={daemon}", TASK_LABEL]}):
        names = [n.lstrip("/") for n in c.get("Names", [])]
        if names:
            found[names[0]] = str(c.get("State", ""))
    return found


def docker_time(value: str | None) -> str | None:
    """The engine's RFC 3339 time (nanoseconds) as TES writes it; None for the zero time."""
    if not value or value.startswith("0001-"):
        return None
    head, _, rest = value.partition(".")
    fraction = "".join(ch for ch in rest if ch.isdigit())[:6]
    stamp = datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    text = stamp.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{fraction or '0'}Z"
