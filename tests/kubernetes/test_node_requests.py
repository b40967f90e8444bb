"""What KubeNode asks of the API server, checked on a fake server through treq's
RequestTraversalAgent and a MemoryReactorClock (the same against the real cluster:
tests/kube/test_kube_node.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from treq.testing import RequestTraversalAgent
from twisted.internet.defer import ensureDeferred
from twisted.internet.testing import MemoryReactorClock
from twisted.web.resource import Resource

from ccserver.cluster.docker_ops import ContainerGone
from ccserver.config import KubeClusterConfig
from ccserver.kubernetes.credentials import Credentials
from ccserver.kubernetes.node import KubeConflict, KubeNode, KubeUnavailable

OURS, THEIRS = "a" * 32, "b" * 32
JOBS = "/apis/batch/v1/namespaces/ns/jobs"


class Server(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str, str | None, Any]] = []
        self.answers: dict[tuple[str, str], tuple[int, Any]] = {}

    def render(self, request: Any) -> bytes:
        body = request.content.read()
        method, uri = request.method.decode(), request.uri.decode()
        content_type = request.getHeader(b"content-type")
        self.seen.append(
            (method, uri, content_type.decode() if content_type else None, json.loads(body) if body else None)
        )
        code, answer = self.answers.get((method, uri.split("?")[0]), (404, {"kind": "Status", "reason": "NotFound"}))
        request.setResponseCode(code)
        return json.dumps(answer).encode()


def run(agent: RequestTraversalAgent, coroutine: Any) -> Any:
    d = ensureDeferred(coroutine)
    for _ in range(20):
        if d.called:
            break
        agent.flush()
    assert d.called
    results: list[Any] = []
    d.addBoth(results.append)
    result = results[0]
    if hasattr(result, "raiseException"):
        result.raiseException()
    return result


@pytest.fixture
def setup() -> tuple[KubeNode, Server, RequestTraversalAgent]:
    server = Server()
    agent = RequestTraversalAgent(server)
    config = KubeClusterConfig(name="k1", callback_url="http://h:5000/", server="https://k", namespace="ns")
    credentials = Credentials("https://k", b"", token="t0k", origin={"token": "kubernetes.clusters.k1.token_file"})
    node = KubeNode(config, MemoryReactorClock(), events=None, agent=agent, credentials=credentials)  # type: ignore[arg-type]
    return node, server, agent


def test_create_start_and_their_errors(setup: Any) -> None:
    node, server, agent = setup
    assert node.callback_base == "http://h:5000"
    server.answers[("POST", JOBS)] = (201, {})
    run(agent, node.create("c1", "img", "run it", 64, "application", OURS, None))
    method, uri, content_type, body = server.seen[-1]
    assert (method, uri, content_type) == ("POST", JOBS, "application/json")
    assert body["metadata"]["name"] == "c1" and body["spec"]["suspend"] is True
    server.answers[("POST", JOBS)] = (409, {"kind": "Status", "reason": "AlreadyExists"})
    with pytest.raises(KubeConflict):
        run(agent, node.create("c1", "img", "run it", 64, "application", OURS, None))
    server.answers[("PATCH", f"{JOBS}/c1")] = (200, {})
    run(agent, node.start("c1"))
    assert server.seen[-1] == ("PATCH", f"{JOBS}/c1", "application/merge-patch+json", {"spec": {"suspend": False}})
    with pytest.raises(ContainerGone):
        run(agent, node.start("c2"))


PODS = "/api/v1/namespaces/ns/pods"
SELECTOR = "labelSelector=batch.kubernetes.io%2Fjob-name%3Dc1%2Cio.curious-containers.daemon%3D" + OURS


def _pod(name: str, phase: str) -> dict[str, Any]:
    labels = {"io.curious-containers.daemon": OURS, "io.curious-containers.container": "c1"}
    return {"metadata": {"name": name, "labels": labels}, "status": {"phase": phase}}


def test_remove_deletes_only_our_job_with_its_pods(setup: Any) -> None:
    node, server, agent = setup
    job = {"metadata": {"name": "c1", "uid": "u-1", "labels": {"io.curious-containers.daemon": OURS}}}
    server.answers[("GET", f"{JOBS}/c1")] = (200, job)
    server.answers[("DELETE", f"{JOBS}/c1")] = (200, {})
    server.answers[("GET", PODS)] = (200, {"items": [_pod("c1-ended", "Failed"), _pod("c1-runs", "Running")]})
    server.answers[("DELETE", f"{PODS}/c1-ended")] = (200, {})
    server.answers[("DELETE", f"{PODS}/c1-runs")] = (200, {})
    assert run(agent, node.remove("c1", THEIRS)) is False
    assert [s[0] for s in server.seen] == ["GET"]  # nothing deleted
    assert run(agent, node.remove("c1", OURS)) is True
    _, (m1, u1, _, b1), (m2, u2, _, _), (m3, u3, _, b3), (m4, u4, _, b4) = server.seen[1:]
    assert (m1, u1) == ("DELETE", f"{JOBS}/c1")
    assert b1 == {
        "kind": "DeleteOptions",
        "apiVersion": "v1",
        "propagationPolicy": "Background",
        "preconditions": {"uid": "u-1"},
    }
    assert (m2, u2) == ("GET", f"{PODS}?{SELECTOR}")
    # a pod that ended goes at once (no kubelet needed); a running one keeps its grace period
    assert (m3, u3, b3) == (
        "DELETE",
        f"{PODS}/c1-ended",
        {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0},
    )
    assert (m4, u4, b4) == ("DELETE", f"{PODS}/c1-runs", {"kind": "DeleteOptions", "apiVersion": "v1"})


def test_the_pods_of_a_job_that_is_gone_are_listed_and_removed(setup: Any) -> None:
    node, server, agent = setup
    # the Job went (its TTL, or a removal the API did not finish), one of its pods is left
    server.answers[("GET", JOBS)] = (200, {"items": []})
    left = _pod("c1-left", "Failed")
    # the job controller's finalizer, which it drops only while it still sees the Job
    left["metadata"]["finalizers"] = ["example.org/other", "batch.kubernetes.io/job-tracking"]
    server.answers[("GET", PODS)] = (200, {"items": [left]})
    server.answers[("PATCH", f"{PODS}/c1-left")] = (200, {})
    server.answers[("DELETE", f"{PODS}/c1-left")] = (200, {})
    assert run(agent, node.ours(OURS)) == {"c1": ("", "exited", False)}
    assert run(agent, node.remove("c1", OURS)) is False  # the Job was gone already
    (m1, u1, t1, b1), (m2, u2, _, b2) = server.seen[-2:]
    assert (m1, u1, t1) == ("PATCH", f"{PODS}/c1-left", "application/json-patch+json")
    assert b1 == [
        {"op": "test", "path": "/metadata/finalizers/1", "value": "batch.kubernetes.io/job-tracking"},
        {"op": "remove", "path": "/metadata/finalizers/1"},
    ]
    assert (m2, u2) == ("DELETE", f"{PODS}/c1-left") and b2["gracePeriodSeconds"] == 0


def test_a_node_list_not_understood_is_unavailable(setup: Any) -> None:
    node, server, agent = setup
    ready = {"conditions": [{"type": "Ready", "status": "True"}]}
    server.answers[("GET", "/api/v1/nodes")] = (
        200,
        {"items": [{"status": {**ready, "allocatable": {"memory": "lots"}}}]},
    )
    with pytest.raises(KubeUnavailable, match="sent a node list not understood"):
        run(agent, node.info())
    server.answers[("GET", "/api/v1/nodes")] = (
        200,
        {"items": [{"status": {**ready, "allocatable": {"memory": "2Gi", "cpu": "2"}}}]},
    )
    assert run(agent, node.info()) == (2048, 2)


def test_unusable_files_make_every_call_name_the_setting(tmp_path: Any) -> None:
    config = KubeClusterConfig(
        name="k1", callback_url="http://h", server="https://k", ca_file=str(tmp_path / "missing.pem"), token_file="/t"
    )
    broken: list[Any] = []

    class Events:
        def watch_broken(self, node: str, error: BaseException) -> None:
            broken.append((node, str(error)))

    node = KubeNode(config, MemoryReactorClock(), Events())  # type: ignore[arg-type]
    with pytest.raises(KubeUnavailable, match=r"^kubernetes\.clusters\.k1\.ca_file: cannot read"):
        run(RequestTraversalAgent(Resource()), node.info())
    node.watch(OURS)
    assert broken and broken[0][1].startswith("kubernetes.clusters.k1.ca_file: cannot read")
