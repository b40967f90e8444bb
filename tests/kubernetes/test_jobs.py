"""The Job of a container and the reading of its pod (pure functions)."""

from __future__ import annotations

from typing import Any

import pytest

from ccserver.config import KubeClusterConfig
from ccserver.kubernetes import jobs
from ccserver.kubernetes.capacity import capacity

DAEMON = "ab" * 16


def cluster(**keys: Any) -> KubeClusterConfig:
    return KubeClusterConfig(name="k1", callback_url="http://h:5000", server="https://k", **keys)


def build(config: KubeClusterConfig, **keys: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "name": "0123456789abcdef01234567",
        "image": "ccserver-test/base:1",
        "command": "python3 /opt/worker 'a b' --x=1",
        "ram_mb": 256,
        "kind": "application",
        "daemon": DAEMON,
        "cpus": 1.5,
        "pull_policy": "never",
    }
    args.update(keys)
    return jobs.build_job(config, **args)


def test_the_job_of_a_container() -> None:
    job = build(cluster(namespace="ns", job_ttl_seconds=60))
    labels = {
        "io.curious-containers.kind": "application",
        "io.curious-containers.daemon": DAEMON,
        "io.curious-containers.container": "0123456789abcdef01234567",
    }
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    assert job["metadata"] == {"name": "0123456789abcdef01234567", "namespace": "ns", "labels": labels}
    spec = job["spec"]
    assert (spec["suspend"], spec["backoffLimit"], spec["ttlSecondsAfterFinished"]) == (True, 0, 60)
    assert spec["template"]["metadata"]["labels"] == labels
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["terminationGracePeriodSeconds"] == 5
    assert pod["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in pod and "nodeSelector" not in pod and "tolerations" not in pod
    (container,) = pod["containers"]
    assert container["name"] == "app" and container["image"] == "ccserver-test/base:1"
    assert container["args"] == ["python3", "/opt/worker", "a b", "--x=1"]
    assert "command" not in container  # the image's entrypoint stays
    assert container["imagePullPolicy"] == "Never"
    amounts = {"memory": "256Mi", "cpu": "1500m"}
    assert container["resources"] == {"requests": amounts, "limits": amounts}


def test_service_account_selector_tolerations_and_no_cpu() -> None:
    toleration = {"key": "k", "operator": "Exists", "effect": "NoSchedule"}
    config = cluster(service_account="ccserver-jobs", node_selector=(("disk", "ssd"),), tolerations=(toleration,))
    pod = build(config, cpus=None, pull_policy="always")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "ccserver-jobs" and pod["automountServiceAccountToken"] is True
    assert pod["nodeSelector"] == {"disk": "ssd"}
    assert pod["tolerations"] == [toleration]
    container = pod["containers"][0]
    assert container["resources"]["limits"] == {"memory": "256Mi"}
    assert container["imagePullPolicy"] == "Always"
    assert (
        build(config, pull_policy="if-not-present")["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"]
        == "IfNotPresent"
    )


@pytest.mark.parametrize(("cpus", "quantity"), [(1, "1000m"), (0.25, "250m"), (0.0001, "1m"), (2.0004, "2000m")])
def test_cpu_quantity(cpus: float, quantity: str) -> None:
    assert jobs.cpu_quantity(cpus) == quantity


@pytest.mark.parametrize(
    ("job", "status"),
    [
        ({"spec": {"suspend": True}}, "created"),
        ({"spec": {"suspend": False}, "status": {}}, "running"),
        ({"spec": {"suspend": False}, "status": {"active": 1}}, "running"),
        ({"spec": {}, "status": {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1}}, "exited"),
        ({"spec": {}, "status": {"conditions": [{"type": "Failed", "status": "True"}]}}, "exited"),
        ({"spec": {}, "status": {"conditions": [{"type": "Failed", "status": "False"}], "active": 1}}, "running"),
        ({"spec": {}, "status": {"failed": 1}}, "exited"),
    ],
)
def test_job_status(job: dict[str, Any], status: str) -> None:
    assert jobs.job_status(job) == status


def pod(phase: str, state: dict[str, Any] | None = None, conditions: list[Any] | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase, "conditions": conditions or []}
    if state is not None:
        status["containerStatuses"] = [{"name": "other", "state": {}}, {"name": "app", "state": state}]
    labels = {"io.curious-containers.container": "c1", "batch.kubernetes.io/job-name": "c1"}
    return {"metadata": {"name": "c1-xyz", "labels": labels}, "status": status}


def test_the_end_of_a_pod() -> None:
    assert jobs.pod_end(pod("Running", {"running": {}})) is None
    assert jobs.pod_end(pod("Pending")) is None
    assert jobs.pod_end(pod("Failed", {"terminated": {"exitCode": 3}})) == 3
    assert jobs.pod_end(pod("Succeeded", {"terminated": {"exitCode": 0}})) == 0
    assert jobs.pod_end(pod("Failed")) == jobs.NO_EXIT_CODE  # evicted before it ran
    assert jobs.pod_container(pod("Failed")) == "c1"


def test_why_a_pod_is_pending() -> None:
    unschedulable = {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": "0/1 nodes are available: 1 Insufficient memory.",
    }
    waiting = jobs.pod_waiting(pod("Pending", conditions=[unschedulable]))
    assert waiting == jobs.Waiting(
        "pod not scheduled: Unschedulable: 0/1 nodes are available: 1 Insufficient memory.", False
    )
    never = {"waiting": {"reason": "ErrImageNeverPull", "message": 'image "x" is not present'}}
    assert jobs.pod_waiting(pod("Pending", never)) == jobs.Waiting(
        'container app waiting: ErrImageNeverPull: image "x" is not present', True
    )
    assert jobs.pod_waiting(pod("Pending", {"waiting": {"reason": "InvalidImageName"}})).hopeless  # type: ignore[union-attr]
    backoff = jobs.pod_waiting(pod("Pending", {"waiting": {"reason": "ImagePullBackOff"}}))
    assert backoff == jobs.Waiting("container app waiting: ImagePullBackOff", False)
    # creating is not a reason to give up, it just has not got far yet
    assert jobs.pod_waiting(pod("Pending", {"waiting": {"reason": "ContainerCreating"}})) == jobs.Waiting(
        "container app waiting: ContainerCreating", False
    )
    assert jobs.pod_waiting(pod("Pending")) == jobs.Waiting("pod Pending", False)
    assert jobs.pod_waiting(pod("Running", {"running": {}})) is None
    text = jobs.stuck_description(backoff, 120)  # type: ignore[arg-type]
    assert text == (
        "the pod stayed Pending longer than 120 s (pending_timeout_seconds): container app waiting: ImagePullBackOff"
    )


def node(ready: str = "True", memory: str = "16Gi", cpu: str = "4", **more: Any) -> dict[str, Any]:
    result: dict[str, Any] = {
        "metadata": {"name": "n", "labels": more.pop("labels", {})},
        "spec": more.pop("spec", {}),
        "status": {"conditions": [{"type": "Ready", "status": ready}], "allocatable": {"memory": memory, "cpu": cpu}},
    }
    return result


def test_capacity_sums_ready_schedulable_matching_nodes() -> None:
    config = cluster(
        node_selector=(("disk", "ssd"),),
        tolerations=({"key": "gpu", "operator": "Exists", "effect": "NoSchedule"},),
    )
    ssd = {"disk": "ssd"}
    nodes = [
        node(memory="16384Mi", cpu="3800m", labels=ssd),
        node(memory="1.5Gi", cpu="2", labels=ssd, spec={"taints": [{"key": "gpu", "effect": "NoSchedule"}]}),
        node(memory="17179869184", cpu="1", labels=ssd),
        node(ready="False", labels=ssd),
        node(labels=ssd, spec={"unschedulable": True}),
        node(labels={"disk": "hdd"}),
        node(labels=ssd, spec={"taints": [{"key": "other", "effect": "NoExecute"}]}),
        node(labels=ssd, spec={"taints": [{"key": "other", "effect": "PreferNoSchedule"}]}, memory="1Mi", cpu="0"),
    ]
    assert capacity(nodes, config) == (16384 + 1536 + 16384 + 1, 6)  # 3.8 + 2 + 1 + 0 CPUs, floor
    assert capacity([], config) == (0, 0)


def test_the_log_tail_keeps_the_last_bytes_as_docker_ops_does() -> None:
    from ccserver.cluster.docker_ops import last_bytes
    from ccserver.kubernetes.node import _Tail

    data = ("é" * 30 + "\n").encode() * 10  # 610 bytes, 10 lines
    for limit in (5, 100, 610, 1000):
        tail = _Tail(limit)
        for i in range(0, len(data), 7):
            tail.add(data[i : i + 7])
        assert tail.text() == last_bytes([data[i : i + 7] for i in range(0, len(data), 7)], limit), limit
    tail = _Tail(1000)
    tail.add(data)
    assert tail.text() == (data.decode(), False)
