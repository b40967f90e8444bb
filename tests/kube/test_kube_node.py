"""KubeNode against the real single-node cluster (the ``kube_cluster`` fixture): capacity,
a Job's whole life (created, started, its pod's end and exit code, its log, its removal
leaving nothing), stuck pods, TLS and credential errors naming the setting, a token and a
kubeconfig client, and the pod watch resumed after its connections are cut (through a real TCP
proxy of this test, so that the shared cluster is not disturbed).
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import trustme
from twisted.internet import reactor as global_reactor
from twisted.internet import threads
from twisted.internet.task import deferLater
from twisted.protocols import portforward

from ccserver.cluster.docker_ops import ContainerGone, cut_marker
from ccserver.config import KubeClusterConfig
from ccserver.kubernetes.errors import KubeAPIError, KubeUnavailable
from ccserver.kubernetes.node import KubeConflict, KubeNode
from ccserver.metrics import Metrics

reactor: Any = global_reactor

IMAGE = "ccserver-test/base:1"  # no entrypoint: the args are the command


class Events:
    def __init__(self) -> None:
        self.died: list[tuple[str, str, int, str | None]] = []
        self.stuck: list[tuple[str, str, str]] = []
        self.broken: list[tuple[str, BaseException]] = []
        self.running: list[tuple[str, str]] = []

    def container_running(self, node: str, name: str) -> None:
        self.running.append((node, name))

    def container_died(self, node: str, name: str, code: int, owner: str | None) -> None:
        self.died.append((node, name, code, owner))

    def container_stuck(self, node: str, name: str, reason: str) -> None:
        self.stuck.append((node, name, reason))

    def watch_broken(self, node: str, error: BaseException) -> None:
        self.broken.append((node, error))


async def eventually(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = reactor.seconds() + timeout
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return result
        if reactor.seconds() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        await deferLater(reactor, 0.25, lambda: None)


def settings(kube: Any, **keys: Any) -> KubeClusterConfig:
    base: dict[str, Any] = {
        "name": "k1",
        "callback_url": f"http://{kube.callback_host}:5000",
        "server": kube.server,
        "ca_file": kube.ca_file,
        "client_cert_file": kube.client_cert_file,
        "client_key_file": kube.client_key_file,
        "namespace": kube.namespace,
        "api_timeout_seconds": 10.0,
    }
    base.update(keys)
    return KubeClusterConfig(**base)


def new_name() -> str:
    return secrets.token_hex(12)


@pytest.fixture
def daemon(kube_cluster: Any) -> Any:
    """A daemon id of this test's own; its Jobs and pods are deleted afterwards."""
    kube_cluster.import_image(IMAGE)
    daemon = secrets.token_hex(16)
    yield daemon
    selector = f"labelSelector=io.curious-containers.daemon%3D{daemon}"
    ns = kube_cluster.namespace
    body = {"propagationPolicy": "Background"}
    kube_cluster.api("DELETE", f"/apis/batch/v1/namespaces/{ns}/jobs?{selector}", json=body)
    kube_cluster.api("DELETE", f"/api/v1/namespaces/{ns}/pods?{selector}", json=body)


async def api(kube: Any, method: str, path: str) -> tuple[int, Any]:
    return await threads.deferToThread(kube.api, method, path)


@pytest_twisted.ensureDeferred
async def test_info_is_the_allocatable_ram_and_cpus_of_the_node(kube_cluster: Any) -> None:
    node = KubeNode(settings(kube_cluster), reactor, Events())
    try:
        ram, cpus = await node.info()
        status, nodes = await api(kube_cluster, "GET", "/api/v1/nodes")
        assert status == 200
        allocatable = nodes["items"][0]["status"]["allocatable"]
        assert ram > 100 and cpus >= 1, (ram, cpus, allocatable)
        from lightkube.utils.quantity import parse_quantity

        assert ram == int(parse_quantity(allocatable["memory"]) // (1024 * 1024))
        # a selector no node matches: no capacity
        other = KubeNode(settings(kube_cluster, node_selector=(("ccserver-test", "nowhere"),)), reactor, Events())
        assert await other.info() == (0, 0)
        await other.close()
    finally:
        await node.close()


@pytest_twisted.ensureDeferred
async def test_a_job_runs_to_its_exit_code_and_its_removal_leaves_nothing(kube_cluster: Any, daemon: str) -> None:
    events = Events()
    metrics = Metrics()
    node = KubeNode(settings(kube_cluster), reactor, events, metrics, pull_policy="never")
    ns = kube_cluster.namespace
    name = new_name()
    try:
        node.watch(daemon)
        await node.create(name, IMAGE, "sh -c 'echo hello; echo world; exit 3'", 64, "application", daemon, 0.5)
        assert await node.state(name) == ("created", 0)
        assert await node.ours(daemon) == {name: ("application", "created", False)}
        with pytest.raises(KubeConflict):
            await node.create(name, IMAGE, "true", 64, "application", daemon, None)
        await node.start(name)
        await eventually(lambda: events.died, 90, "the pod's end")
        assert events.died == [("k1", name, 3, daemon)]
        assert await node.state(name) == ("exited", 3)
        assert (await node.ours(daemon))[name] == ("application", "exited", False)
        assert await node.logs_tail(name, 4000) == "hello\nworld\n"
        assert await node.logs_tail(name, 4) == cut_marker(4) + "rld\n"
        # requests = limits, in the pod the Job made
        status, pods = await api(
            kube_cluster, "GET", f"/api/v1/namespaces/{ns}/pods?labelSelector=batch.kubernetes.io/job-name%3D{name}"
        )
        (pod,) = pods["items"]
        resources = pod["spec"]["containers"][0]["resources"]
        assert resources == {"limits": {"cpu": "500m", "memory": "64Mi"}, "requests": {"cpu": "500m", "memory": "64Mi"}}
        assert pod["metadata"]["labels"]["io.curious-containers.container"] == name

        assert await node.remove(name, daemon) is True

        async def nothing_left() -> bool:
            jobs = await api(kube_cluster, "GET", f"/apis/batch/v1/namespaces/{ns}/jobs/{name}")
            pods = await api(
                kube_cluster, "GET", f"/api/v1/namespaces/{ns}/pods?labelSelector=batch.kubernetes.io/job-name%3D{name}"
            )
            return jobs[0] == 404 and pods[1]["items"] == []

        await eventually(nothing_left, 60, "no Job and no pod left")
        assert await node.remove(name, daemon) is False
        with pytest.raises(ContainerGone):
            await node.start(name)
        with pytest.raises(ContainerGone):
            await node.state(name)
        assert await node.ours(daemon) == {}
        assert await node.logs_tail(name, 100) == ""
        assert events.died == [("k1", name, 3, daemon)]  # reported once
        count = metrics.kube_calls.labels(operation="create_job", node="k1")._sum.get()
        assert count > 0
    finally:
        await node.close()


@pytest_twisted.ensureDeferred
async def test_a_running_pod_is_reported_once_and_its_output_followed_until_it_ends(
    kube_cluster: Any, daemon: str
) -> None:
    """The watch reports the container running (once); its pod log, followed, brings the
    first line while the container still runs and ends when the container ends; followed
    again from the first line's second, it brings what came after."""
    events = Events()
    node = KubeNode(settings(kube_cluster), reactor, events, pull_policy="never")
    name = new_name()
    try:
        node.watch(daemon)
        script = "echo one; sleep 3; echo two; sleep 1; echo three"
        await node.create(name, IMAGE, f"sh -c '{script}'", 32, "application", daemon, None)
        assert await node.follow_logs(name, lambda data: None, None, None) is None  # no pod yet
        await node.start(name)
        await eventually(lambda: events.running, 90, "the container running")
        assert events.running == [("k1", name)]
        received = bytearray()
        stream = await node.follow_logs(name, received.extend, None, 100)
        assert stream is not None
        await eventually(lambda: b"one" in received, 20, "the first line")
        assert b"three" not in received and not events.died  # still running
        assert await stream.ended is True  # the API server ends it with the container
        lines = bytes(received).decode().splitlines()
        assert [line.split(" ", 1)[1] for line in lines] == ["one", "two", "three"]
        assert all(line.split(" ", 1)[0].endswith("Z") for line in lines)  # each led by its time
        await eventually(lambda: events.died, 60, "the pod's end")
        assert events.running == [("k1", name)] and events.died == [("k1", name, 0, daemon)]
    finally:
        await node.remove(name, daemon)
        await node.close()


@pytest_twisted.ensureDeferred
async def test_another_daemons_job_is_never_removed(kube_cluster: Any, daemon: str) -> None:
    node = KubeNode(settings(kube_cluster), reactor, Events(), pull_policy="never")
    name = new_name()
    try:
        await node.create(name, IMAGE, "true", 32, "application", daemon, None)
        assert await node.remove(name, secrets.token_hex(16)) is False
        assert await node.state(name) == ("created", 0)
        assert await node.ours(secrets.token_hex(16)) == {}
    finally:
        await node.close()


@pytest_twisted.ensureDeferred
async def test_a_pod_too_big_for_the_cluster_is_stuck_with_the_schedulers_reason(
    kube_cluster: Any, daemon: str
) -> None:
    events = Events()
    node = KubeNode(settings(kube_cluster, pending_timeout_seconds=3.0), reactor, events, pull_policy="never")
    ns = kube_cluster.namespace
    name = new_name()
    try:
        node.watch(daemon)
        await node.create(name, IMAGE, "true", 64 * 1024 * 1024, "application", daemon, None)  # 64 TiB
        started = reactor.seconds()
        await node.start(name)
        await eventually(lambda: events.stuck, 40, "the stuck report")
        ((node_name, stuck, reason),) = events.stuck
        assert (node_name, stuck) == ("k1", name)
        assert reason.startswith(
            "the pod stayed Pending longer than 3 s (pending_timeout_seconds): pod not scheduled: Unschedulable"
        )
        assert "Insufficient memory" in reason
        assert reactor.seconds() - started >= 3
        # the Job was deleted before the report
        status, _ = await api(kube_cluster, "GET", f"/apis/batch/v1/namespaces/{ns}/jobs/{name}")
        assert status == 404
        assert events.died == []
    finally:
        await node.close()


@pytest_twisted.ensureDeferred
async def test_an_image_not_in_the_cluster_fails_at_once(kube_cluster: Any, daemon: str) -> None:
    events = Events()
    node = KubeNode(settings(kube_cluster, pending_timeout_seconds=600.0), reactor, events, pull_policy="never")
    name = new_name()
    try:
        node.watch(daemon)
        await node.create(name, "ccserver-test/never-imported:1", "true", 64, "application", daemon, None)
        await node.start(name)
        await eventually(lambda: events.stuck, 60, "the stuck report")
        ((_, stuck, reason),) = events.stuck
        assert stuck == name
        assert reason.startswith("the pod cannot start: container app waiting: ErrImageNeverPull"), reason
        with pytest.raises(ContainerGone):
            await node.state(name)
    finally:
        await node.close()


@pytest_twisted.ensureDeferred
async def test_a_wrong_ca_and_a_wrong_token_name_their_setting(kube_cluster: Any, tmp_path: Path) -> None:
    trustme.CA().cert_pem.write_to_path(str(tmp_path / "other-ca.pem"))
    node = KubeNode(settings(kube_cluster, ca_file=str(tmp_path / "other-ca.pem")), reactor, Events())
    with pytest.raises(KubeUnavailable) as info:
        await node.info()
    assert str(info.value).startswith(
        "kubernetes.clusters.k1.ca_file: the API server's certificate is not signed by this CA"
    ), str(info.value)
    await node.close()
    (tmp_path / "token").write_text("not-the-token\n")
    bad = settings(kube_cluster, client_cert_file=None, client_key_file=None, token_file=str(tmp_path / "token"))
    node = KubeNode(bad, reactor, Events())
    with pytest.raises(KubeUnavailable) as info:
        await node.info()
    assert str(info.value).startswith("kubernetes.clusters.k1.token_file: the API server at")
    assert "401" in str(info.value) and "not-the-token" not in str(info.value)
    await node.close()
    # a client certificate the cluster's CA did not sign
    stranger = trustme.CA().issue_cert("ccserver-stranger")
    stranger.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    stranger.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    node = KubeNode(
        settings(kube_cluster, client_cert_file=str(tmp_path / "cert.pem"), client_key_file=str(tmp_path / "key.pem")),
        reactor,
        Events(),
    )
    with pytest.raises(KubeUnavailable) as info:
        await node.info()
    assert str(info.value).startswith("kubernetes.clusters.k1.client_cert_file: the API server at"), str(info.value)
    await node.close()
    # an unreadable file: every call says which
    missing = settings(kube_cluster, ca_file=str(tmp_path / "nope.pem"))
    node = KubeNode(missing, reactor, Events())
    with pytest.raises(KubeUnavailable, match=r"^kubernetes\.clusters\.k1\.ca_file: cannot read"):
        await node.info()
    await node.close()


@pytest_twisted.ensureDeferred
async def test_a_token_client_and_a_kubeconfig_client_work(kube_cluster: Any, daemon: str) -> None:
    token = settings(kube_cluster, client_cert_file=None, client_key_file=None, token_file=kube_cluster.token_file)
    events = Events()
    node = KubeNode(token, reactor, events, pull_policy="never")
    name = new_name()
    try:
        ram, cpus = await node.info()
        assert ram > 0 and cpus > 0
        node.watch(daemon)
        await node.create(name, IMAGE, "sh -c 'exit 0'", 32, "application", daemon, None)
        await node.start(name)
        await eventually(lambda: events.died, 90, "the pod's end")
        assert events.died == [("k1", name, 0, daemon)]
        assert await node.ours(daemon) == {name: ("application", "exited", False)}
    finally:
        await node.close()
    kubeconfig = KubeClusterConfig(
        name="k2", callback_url="http://h:5000", kubeconfig=kube_cluster.kubeconfig, namespace=kube_cluster.namespace
    )
    for context in (None, "ccserver-test-token"):  # the admin certificate, the token
        node = KubeNode(replace(kubeconfig, context=context), reactor, Events())
        try:
            assert (await node.info())[0] == ram
            assert await node.state(name) == ("exited", 0)
        finally:
            await node.close()


class CuttableProxy:
    """A TCP proxy to the API server whose connections this test can cut (or refuse)."""

    def __init__(self, target_port: int) -> None:
        self.connections: list[Any] = []
        outer = self

        class Server(portforward.ProxyServer):
            def connectionMade(self) -> None:  # noqa: N802
                outer.connections.append(self)
                super().connectionMade()

        factory = portforward.ProxyFactory("127.0.0.1", target_port)
        factory.protocol = Server
        self.port = reactor.listenTCP(0, factory, interface="127.0.0.1")

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port.getHost().port}"

    def cut(self) -> None:
        for connection in self.connections:
            connection.transport.abortConnection()
        self.connections.clear()


@pytest_twisted.ensureDeferred
async def test_the_watch_resumes_after_its_connection_is_cut_and_reports_when_it_cannot(
    kube_cluster: Any, daemon: str
) -> None:
    from urllib.parse import urlsplit

    proxy = CuttableProxy(urlsplit(kube_cluster.server).port or 443)
    events = Events()
    node = KubeNode(settings(kube_cluster, server=proxy.server), reactor, events, pull_policy="never")
    try:
        node.watch(daemon)
        watch = node._watch
        assert watch is not None
        await eventually(lambda: watch.opened >= 1, 20, "the watch open")
        first = new_name()
        await node.create(first, IMAGE, "sh -c 'exit 4'", 32, "application", daemon, None)
        proxy.cut()  # the watch's connection (and the pooled ones) break
        await deferLater(reactor, 0.5, lambda: None)  # the pool sees its connections closed
        await node.start(first)
        await eventually(lambda: events.died, 90, "the pod's end, seen by the resumed watch")
        assert events.died == [("k1", first, 4, daemon)]
        assert watch.opened >= 2 and watch.listed == 1  # resumed from its resourceVersion
        # now nothing listens there any more: after a few tries, the watch reports it is broken
        await proxy.port.stopListening()
        proxy.cut()
        await eventually(lambda: events.broken, 60, "the broken watch report")
        ((where, error),) = events.broken
        assert where == "k1"
        assert str(error).startswith("kubernetes.clusters.k1.server: nothing listens at"), str(error)
        assert not watch.running
    finally:
        await node.close()


def documented_rbac(namespace: str, suffix: str) -> list[dict[str, Any]]:
    """The objects of docs/kubernetes.rst's RBAC block, in ``namespace``, names made unique."""
    import yaml

    text = (Path(__file__).resolve().parents[2] / "docs" / "kubernetes.rst").read_text()
    block = text.split("The permissions the credentials need", 1)[1].split(".. code-block:: yaml", 1)[1]
    lines = []
    for line in block.splitlines()[1:]:
        if line and not line.startswith("   "):
            break
        lines.append(line[3:])
    objects = [o for o in yaml.safe_load_all("\n".join(lines)) if o]
    for o in objects:
        o["metadata"]["name"] += f"-{suffix}"
        if "namespace" in o["metadata"]:
            o["metadata"]["namespace"] = namespace
        if "roleRef" in o:
            o["roleRef"]["name"] += f"-{suffix}"
        for subject in o.get("subjects", ()):
            subject["name"] += f"-{suffix}"
            subject["namespace"] = namespace
    return objects


def _collection(o: dict[str, Any]) -> str:
    kind, ns = o["kind"], o["metadata"].get("namespace")
    plural = {"ServiceAccount": "serviceaccounts", "Role": "roles", "RoleBinding": "rolebindings"}
    plural |= {"ClusterRole": "clusterroles", "ClusterRoleBinding": "clusterrolebindings"}
    base = "/api/v1" if kind == "ServiceAccount" else "/apis/rbac.authorization.k8s.io/v1"
    return f"{base}/namespaces/{ns}/{plural[kind]}" if ns else f"{base}/{plural[kind]}"


@pytest_twisted.ensureDeferred
async def test_the_documented_rbac_is_enough_and_a_missing_permission_is_named(
    kube_cluster: Any, daemon: str, tmp_path: Path
) -> None:
    suffix = secrets.token_hex(4)
    ns = kube_cluster.namespace
    objects = documented_rbac(ns, suffix)
    assert [o["kind"] for o in objects] == [
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ClusterRole",
        "ClusterRoleBinding",
    ]

    def apply() -> str:
        for o in objects:
            status, answer = kube_cluster.api("POST", _collection(o), json=o)
            assert status == 201, answer
        account = objects[0]["metadata"]["name"]
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 3600},
        }
        status, answer = kube_cluster.api(
            "POST", f"/api/v1/namespaces/{ns}/serviceaccounts/{account}/token", json=request
        )
        assert status == 201, answer
        return str(answer["status"]["token"])

    def remove() -> None:
        for o in reversed(objects):
            kube_cluster.api("DELETE", f"{_collection(o)}/{o['metadata']['name']}")

    token = await threads.deferToThread(apply)
    try:
        (tmp_path / "token").write_text(token + "\n")
        config = settings(kube_cluster, client_cert_file=None, client_key_file=None, token_file=str(tmp_path / "token"))

        async def allowed() -> bool:  # RBAC caches take a moment to see new bindings
            try:
                await KubeNode(config, reactor, Events()).info()
                return True
            except KubeUnavailable:
                return False

        await eventually(allowed, 30, "the new bindings in force")
        events = Events()
        node = KubeNode(config, reactor, events, pull_policy="never")
        name = new_name()
        try:
            node.watch(daemon)
            await node.create(name, IMAGE, "sh -c 'echo out; exit 2'", 32, "application", daemon, None)
            await node.start(name)
            await eventually(lambda: events.died, 90, "the pod's end")
            assert events.died == [("k1", name, 2, daemon)]
            assert await node.state(name) == ("exited", 2)
            assert await node.logs_tail(name, 100) == "out\n"
            assert await node.ours(daemon) == {name: ("application", "exited", False)}
            assert await node.remove(name, daemon) is True
            with pytest.raises(ContainerGone):
                await node.state(name)
        finally:
            await node.close()
        # the same credentials in a namespace the Role does not cover
        elsewhere = KubeNode(replace(config, namespace="default"), reactor, Events(), pull_policy="never")
        try:
            with pytest.raises(KubeUnavailable) as info:
                await elsewhere.create(new_name(), IMAGE, "true", 32, "application", daemon, None)
            assert str(info.value).startswith(
                "kubernetes.clusters.k1: missing RBAC permission: verb create on jobs (API group batch) "
                "in namespace default"
            ), str(info.value)
        finally:
            await elsewhere.close()
    finally:
        await threads.deferToThread(remove)


@pytest_twisted.ensureDeferred
async def test_a_rotated_token_file_is_read_again_without_a_restart(kube_cluster: Any, tmp_path: Path) -> None:
    """A bound service-account token (here bound to a Secret) stops working when its object goes,
    as an expired one does; the next token written into the same file is used by the same client,
    from the first call the old one failed."""
    suffix = secrets.token_hex(4)
    ns = kube_cluster.namespace
    objects = documented_rbac(ns, suffix)
    account = objects[0]["metadata"]["name"]
    holder = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"ccserver-holder-{suffix}"}}

    def token_for(bound: dict[str, Any] | None) -> str:
        spec: dict[str, Any] = {"expirationSeconds": 3600}
        if bound is not None:
            spec["boundObjectRef"] = {"apiVersion": "v1", "kind": "Secret", "name": bound["metadata"]["name"]}
            spec["boundObjectRef"]["uid"] = bound["metadata"]["uid"]
        request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
        status, answer = kube_cluster.api(
            "POST", f"/api/v1/namespaces/{ns}/serviceaccounts/{account}/token", json=request
        )
        assert status == 201, answer
        return str(answer["status"]["token"])

    def apply() -> tuple[str, str]:
        for o in objects:
            status, answer = kube_cluster.api("POST", _collection(o), json=o)
            assert status == 201, answer
        status, secret = kube_cluster.api("POST", f"/api/v1/namespaces/{ns}/secrets", json=holder)
        assert status == 201, secret
        return token_for(secret), token_for(None)

    def remove() -> None:
        kube_cluster.api("DELETE", f"/api/v1/namespaces/{ns}/secrets/{holder['metadata']['name']}")
        for o in reversed(objects):
            kube_cluster.api("DELETE", f"{_collection(o)}/{o['metadata']['name']}")

    first, second = await threads.deferToThread(apply)
    assert first != second
    node = None
    try:
        (tmp_path / "token").write_text(first + "\n")
        config = settings(kube_cluster, client_cert_file=None, client_key_file=None, token_file=str(tmp_path / "token"))
        node = KubeNode(config, reactor, Events())

        async def works() -> bool:  # RBAC caches take a moment to see new bindings
            try:
                await node.info()
                return True
            except KubeUnavailable:
                return False

        await eventually(works, 30, "the first token accepted")
        # the object the first token is bound to goes: the token is refused from then on
        await threads.deferToThread(
            kube_cluster.api, "DELETE", f"/api/v1/namespaces/{ns}/secrets/{holder['metadata']['name']}"
        )

        async def refused() -> bool:
            try:
                await node.info()
                return False
            except KubeAPIError as e:
                assert e.status == 401, e
                assert first not in str(e)
                return True

        await eventually(refused, 60, "the first token refused")
        (tmp_path / "token").write_text(second + "\n")
        assert await node.info()  # the 401 had the file read again, and the call made once more
        assert node.api is not None and node.api.tokens is not None and node.api.tokens.token == second
    finally:
        if node is not None:
            await node.close()
        await threads.deferToThread(remove)
