"""The Job of one attempt of a TES task on a cluster, and what its pod says back, as pure
functions (docs/kubernetes.rst, "TES tasks on a cluster").

One pod runs the whole attempt, in order: the staging-in step (when the task has inputs),
then each executor, as init containers (Kubernetes runs them one after the other, each only
once the one before it exited 0), then the last container, ``app``: the staging-out step
when the task has outputs, else the last executor.  The task's volumes, and the directories
of its inputs and outputs, are ``emptyDir`` volumes every container mounts at the same
paths.  Each container asks for the task's RAM and CPUs (the pod's request is the largest of
its init containers' and its containers': the task's own).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightkube.models.core_v1 import (
    Container,
    EmptyDirVolumeSource,
    EnvVar,
    PodSpec,
    ResourceRequirements,
    Volume,
    VolumeMount,
)

from ccserver.config import KubeClusterConfig
from ccserver.kubernetes import staging_step
from ccserver.kubernetes.jobs import APP, CONTAINER_LABEL, PULL_POLICIES, cpu_quantity, job_body

#: the source of the pods' staging steps, read once (a small file of this package)
STEP_SOURCE = Path(staging_step.__file__).read_text(encoding="utf-8")
STAGE_IN = "stage-in"


def executor_container(index: int, count: int, has_outputs: bool) -> str:
    """The name of executor ``index`` (of ``count``) in the pod."""
    if index == count - 1 and not has_outputs:
        return APP
    return f"executor-{index}"


def build_tes_job(
    config: KubeClusterConfig,
    *,
    name: str,
    labels: Mapping[str, str],
    executors: list[dict[str, Any]],
    mounts: list[str],
    ram_mb: int,
    cpus: float,
    pull_policy: str,
    staging_url: str | None,
    has_inputs: bool,
    output_paths: list[str],
    piece_bytes: int,
) -> dict[str, Any]:
    """The body of ``POST .../jobs`` for one attempt (not suspended: it starts at once)."""
    amounts = {"memory": f"{ram_mb}Mi", "cpu": cpu_quantity(cpus)}
    policy = PULL_POLICIES[pull_policy]
    volumes = [Volume(name=f"v{i}", emptyDir=EmptyDirVolumeSource()) for i in range(len(mounts))]
    volume_mounts = [VolumeMount(name=f"v{i}", mountPath=path) for i, path in enumerate(mounts)]

    def resources() -> ResourceRequirements:
        return ResourceRequirements(requests=dict(amounts), limits=dict(amounts))

    def step(container: str, mode: str, extra: list[EnvVar]) -> Container:
        assert config.staging_image is not None and staging_url is not None
        return Container(
            name=container,
            image=config.staging_image,
            command=["python3", "-c", STEP_SOURCE, mode],
            env=[
                EnvVar(name="CCSERVER_STAGING_URL", value=staging_url),
                EnvVar(name="CCSERVER_PIECE_BYTES", value=str(piece_bytes)),
                *extra,
            ],
            imagePullPolicy=policy,
            resources=resources(),
            volumeMounts=list(volume_mounts),
        )

    containers = []
    if has_inputs:
        containers.append(step(STAGE_IN, "in", []))
    has_outputs = bool(output_paths)
    for index, executor in enumerate(executors):
        env = [EnvVar(name=str(k), value=str(v)) for k, v in (executor.get("env") or {}).items()]
        containers.append(
            Container(
                name=executor_container(index, len(executors), has_outputs),
                image=str(executor["image"]),
                # the TES command is the whole command line: the image's entrypoint is replaced
                command=[str(part) for part in executor["command"]],
                workingDir=executor.get("workdir") or None,
                env=env or None,
                imagePullPolicy=policy,
                resources=resources(),
                volumeMounts=list(volume_mounts) or None,
            )
        )
    if has_outputs:
        containers.append(step(APP, "out", [EnvVar(name="CCSERVER_OUTPUT_PATHS", value=json.dumps(output_paths))]))
    pod = PodSpec(initContainers=containers[:-1] or None, containers=containers[-1:], volumes=volumes or None)
    return job_body(config, name, {**labels, CONTAINER_LABEL: name}, pod, suspend=False)


def container_states(pod: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Container name → its ``state`` (``waiting``, ``running`` or ``terminated``), init
    containers included."""
    status = pod.get("status") or {}
    found: dict[str, dict[str, Any]] = {}
    for entry in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        if entry.get("name"):
            found[str(entry["name"])] = dict(entry.get("state") or {})
    return found


def pod_phase(pod: Mapping[str, Any]) -> str:
    return str((pod.get("status") or {}).get("phase") or "Pending")


def pod_failure(pod: Mapping[str, Any]) -> str:
    """Why a Failed pod failed, as the kubelet says (evicted, deadline...)."""
    status = pod.get("status") or {}
    reason = status.get("reason") or ""
    message = status.get("message") or ""
    return ": ".join(p for p in (reason, message) if p) or "the pod failed"
