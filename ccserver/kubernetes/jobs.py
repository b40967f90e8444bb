"""What ccserver asks of Kubernetes and reads back, as pure functions: the Job of a
container, and the state, exit code or trouble of its pod (docs/kubernetes.rst, "What maps to
what").  The API calls are in :mod:`ccserver.kubernetes.node`.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lightkube.models.batch_v1 import Job, JobSpec
from lightkube.models.core_v1 import Container, PodSpec, PodTemplateSpec, ResourceRequirements, Toleration
from lightkube.models.meta_v1 import ObjectMeta

from ccserver.cluster.docker_ops import KIND_LABEL
from ccserver.config import KubeClusterConfig
from ccserver.identity import DAEMON_LABEL

#: the container document's id (also the Job's name)
CONTAINER_LABEL = "io.curious-containers.container"
#: set by the Job controller on the pods of a Job
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
#: the one container of a Job's pod
APP = "app"
#: docker.pull_policy → the container's imagePullPolicy
PULL_POLICIES = {"always": "Always", "if-not-present": "IfNotPresent", "never": "Never"}
#: a container waiting for one of these never starts: its container fails at once
HOPELESS_WAITING = frozenset({"ErrImageNeverPull", "InvalidImageName"})
#: the exit code reported for a pod that failed without its container terminating (evicted...)
NO_EXIT_CODE = -1


def cpu_quantity(cpus: float) -> str:
    """CPUs as a Kubernetes quantity in millicores (at least 1m)."""
    return f"{max(1, round(cpus * 1000))}m"


def build_job(
    config: KubeClusterConfig,
    *,
    name: str,
    image: str,
    command: str,
    ram_mb: int,
    kind: str,
    daemon: str,
    cpus: float | None,
    pull_policy: str,
) -> dict[str, Any]:
    """The body of ``POST /apis/batch/v1/namespaces/NS/jobs`` for one container: suspended
    (``start`` resumes it), never retried by Kubernetes (ccserver decides about retries), its
    limits equal to its requests, labelled with its kind, daemon and name."""
    labels = {KIND_LABEL: kind, DAEMON_LABEL: daemon, CONTAINER_LABEL: name}
    amounts = {"memory": f"{ram_mb}Mi"}
    if cpus is not None:
        amounts["cpu"] = cpu_quantity(cpus)
    container = Container(
        name=APP,
        image=image,
        # docker's Cmd is Kubernetes' args: the image's entrypoint stays
        args=shlex.split(command),
        imagePullPolicy=PULL_POLICIES[pull_policy],
        resources=ResourceRequirements(requests=dict(amounts), limits=dict(amounts)),
    )
    return job_body(config, name, labels, PodSpec(containers=[container]), suspend=True)


def job_body(
    config: KubeClusterConfig, name: str, labels: Mapping[str, str], pod: PodSpec, suspend: bool
) -> dict[str, Any]:
    """The Job ``name`` around ``pod`` (what differs between Jobs: its containers, volumes),
    with what every Job of ccserver has: never restarted or retried by Kubernetes (ccserver
    decides about retries), the cluster's account, node selector and tolerations, the TTL."""
    pod.restartPolicy = "Never"
    pod.terminationGracePeriodSeconds = 5
    pod.serviceAccountName = config.service_account
    pod.automountServiceAccountToken = config.service_account is not None
    pod.nodeSelector = dict(config.node_selector) or None
    pod.tolerations = [Toleration(**t) for t in config.tolerations] or None
    job = Job(
        apiVersion="batch/v1",
        kind="Job",
        metadata=ObjectMeta(name=name, namespace=config.namespace, labels=dict(labels)),
        spec=JobSpec(
            template=PodTemplateSpec(metadata=ObjectMeta(labels=dict(labels)), spec=pod),
            suspend=suspend or None,
            backoffLimit=0,
            ttlSecondsAfterFinished=config.job_ttl_seconds,
        ),
    )
    return job.to_dict()


def job_status(job: Mapping[str, Any]) -> str:
    """ "created" (suspended), "exited" (finished: Complete or Failed) or "running", the
    statuses :meth:`KubeNode.state` shares with Docker's."""
    if job.get("spec", {}).get("suspend"):
        return "created"
    status = job.get("status") or {}
    for condition in status.get("conditions") or ():
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return "exited"
    if (status.get("succeeded") or status.get("failed")) and not status.get("active"):
        return "exited"
    return "running"


def job_exit_code(job: Mapping[str, Any]) -> int:
    """The exit code of a finished Job whose pod is gone: 0 if it succeeded."""
    return 0 if (job.get("status") or {}).get("succeeded") else NO_EXIT_CODE


def pod_container(pod: Mapping[str, Any]) -> str | None:
    """The container document's id a pod belongs to (its label), or None."""
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return labels.get(CONTAINER_LABEL) or labels.get(JOB_NAME_LABEL)


def _app_status(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    for status in (pod.get("status") or {}).get("containerStatuses") or ():
        if status.get("name") == APP:
            return status
    return {}


def pod_running(pod: Mapping[str, Any]) -> bool:
    """The ``app`` container of the pod runs (its output can be followed)."""
    return "running" in (_app_status(pod).get("state") or {})


def pod_end(pod: Mapping[str, Any]) -> int | None:
    """The exit code of the ``app`` container of a pod that ended (phase Succeeded or
    Failed), or None while it has not."""
    phase = (pod.get("status") or {}).get("phase")
    if phase not in ("Succeeded", "Failed"):
        return None
    terminated = (_app_status(pod).get("state") or {}).get("terminated")
    if terminated and terminated.get("exitCode") is not None:
        return int(terminated["exitCode"])
    return 0 if phase == "Succeeded" else NO_EXIT_CODE


@dataclass(frozen=True)
class Waiting:
    """Why a pod is Pending, and whether waiting longer can help (``hopeless``: no)."""

    reason: str
    hopeless: bool


def pod_waiting(pod: Mapping[str, Any]) -> Waiting | None:
    """Why a pod is still Pending (the scheduler's PodScheduled condition, or the ``app``
    container's waiting state), or None when it is not Pending."""
    status = pod.get("status") or {}
    if status.get("phase") not in (None, "Pending"):
        return None
    waiting = (_app_status(pod).get("state") or {}).get("waiting")
    # init containers first (a TES task's pod runs its steps and executors as those)
    for entry in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        seen = (entry.get("state") or {}).get("waiting")
        if seen and seen.get("reason") not in (None, "ContainerCreating", "PodInitializing"):
            reason = str(seen["reason"])
            text = f"container {entry.get('name') or APP} waiting: {reason}" + (
                f": {seen['message']}" if seen.get("message") else ""
            )
            return Waiting(text, reason in HOPELESS_WAITING)
    for entry in status.get("initContainerStatuses") or ():
        if {"running", "terminated"} & set(entry.get("state") or {}):
            return None  # Pending while its init containers run (a TES task's steps): started
    for condition in status.get("conditions") or ():
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            text = f"pod not scheduled: {condition.get('reason') or 'Pending'}"
            if condition.get("message"):
                text += f": {condition['message']}"
            return Waiting(text, False)
    if waiting and waiting.get("reason"):
        return Waiting(f"container {APP} waiting: {waiting['reason']}", False)
    return Waiting("pod Pending", False)


def stuck_description(waiting: Waiting, pending_timeout: float) -> str:
    """The reason a stuck pod's container fails with (its transition's description)."""
    if waiting.hopeless:
        return f"the pod cannot start: {waiting.reason}"
    return f"the pod stayed Pending longer than {pending_timeout:g} s (pending_timeout_seconds): {waiting.reason}"
