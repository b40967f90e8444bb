"""The API client over real TLS on a real socket, against a small local HTTPS server
(trustme's CA): the trust root is the configured CA only, an IP-address server is checked
against the certificate's IP SANs, a token is sent as a bearer, and each failure's message
names the setting to fix.  The same against a real API server: tests/kube/test_kube_node.py."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import trustme
from twisted.internet import reactor as global_reactor
from twisted.internet.ssl import CertificateOptions, PrivateCertificate
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from ccserver.config import KubeClusterConfig
from ccserver.kubernetes.api import KubeAPI, forbidden_text
from ccserver.kubernetes.credentials import read_credentials
from ccserver.kubernetes.errors import KubeAPIError, KubeUnavailable
from ccserver.metrics import Metrics

reactor: Any = global_reactor

FORBIDDEN = (
    'jobs.batch is forbidden: User "system:serviceaccount:cc:runner" cannot create resource "jobs" '
    'in API group "batch" in the namespace "cc"'
)


class FakeAPIServer(Resource):
    """Answers as kube-apiserver does, for the few paths these tests use."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[bytes, bytes, bytes | None, bytes]] = []

    def render(self, request: Any) -> Any:
        auth = request.getHeader(b"authorization")
        self.seen.append(
            (request.method, request.uri, auth.encode() if isinstance(auth, str) else auth, request.content.read())
        )
        request.setHeader(b"content-type", b"application/json")
        path = request.path
        if path == b"/api/v1/nodes":
            if auth != b"Bearer good-token":
                request.setResponseCode(401)
                return json.dumps({"kind": "Status", "reason": "Unauthorized", "message": "Unauthorized"}).encode()
            return json.dumps({"kind": "NodeList", "items": []}).encode()
        if path == b"/forbidden":
            request.setResponseCode(403)
            return json.dumps({"kind": "Status", "reason": "Forbidden", "message": FORBIDDEN}).encode()
        if path == b"/big":
            return b"[" + b"0," * 600_000 + b"0]"
        if path == b"/slow":
            return NOT_DONE_YET  # never answers
        request.setResponseCode(404)
        return json.dumps({"kind": "Status", "reason": "NotFound", "message": "nope"}).encode()


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Any]:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    other = trustme.CA()
    other.cert_pem.write_to_path(str(tmp_path / "other-ca.pem"))
    (tmp_path / "token").write_text("good-token\n")
    (tmp_path / "bad-token").write_text("bad-token\n")
    return {"ca": ca, "server": server, "dir": tmp_path}


@pytest_twisted.async_yield_fixture
async def https(pki: dict[str, Any]) -> AsyncIterator[tuple[int, FakeAPIServer]]:
    pem = b"".join(b.bytes() for b in pki["server"].cert_chain_pems) + pki["server"].private_key_pem.bytes()
    cert = PrivateCertificate.loadPEM(pem)
    options = CertificateOptions(privateKey=cert.privateKey.original, certificate=cert.original)
    resource = FakeAPIServer()
    port = reactor.listenSSL(0, Site(resource), options, interface="127.0.0.1")
    try:
        yield port.getHost().port, resource
    finally:
        await port.stopListening()


def api_for(pki: dict[str, Any], server: str, ca: str = "ca.pem", token: str = "token", timeout: float = 5) -> KubeAPI:
    d = pki["dir"]
    config = KubeClusterConfig(
        name="k1",
        callback_url="http://h:5000",
        server=server,
        ca_file=str(d / ca),
        token_file=str(d / token),
        api_timeout_seconds=timeout,
    )
    return KubeAPI(config, reactor, read_credentials(config), metrics=Metrics())


@pytest_twisted.ensureDeferred
async def test_an_ip_address_server_with_its_ca_and_a_token(pki: dict[str, Any], https: Any) -> None:
    port, resource = https
    api = api_for(pki, f"https://127.0.0.1:{port}")
    try:
        assert await api.call("list_nodes", "GET", "/api/v1/nodes") == {"kind": "NodeList", "items": []}
        assert await api.call("list_nodes", "GET", "/api/v1/nodes", {"labelSelector": "a=b"}) == {
            "kind": "NodeList",
            "items": [],
        }
        assert resource.seen[0][:3] == (b"GET", b"/api/v1/nodes", b"Bearer good-token")
        assert resource.seen[1][1] == b"/api/v1/nodes?labelSelector=a%3Db"
        with pytest.raises(KubeAPIError) as info:
            await api.call("get_job", "GET", "/apis/batch/v1/namespaces/x/jobs/y")
        assert info.value.status == 404 and info.value.reason == "NotFound"
    finally:
        await api.close()


@pytest_twisted.ensureDeferred
async def test_a_wrong_ca_names_ca_file(pki: dict[str, Any], https: Any) -> None:
    port, _ = https
    api = api_for(pki, f"https://127.0.0.1:{port}", ca="other-ca.pem")
    try:
        with pytest.raises(KubeUnavailable) as info:
            await api.call("list_nodes", "GET", "/api/v1/nodes")
        assert str(info.value).startswith(
            "kubernetes.clusters.k1.ca_file: the API server's certificate is not signed by this CA"
        ), str(info.value)
    finally:
        await api.close()


@pytest_twisted.ensureDeferred
async def test_an_ip_address_the_certificate_lacks_names_server(pki: dict[str, Any]) -> None:
    elsewhere = pki["ca"].issue_cert("elsewhere.example", "10.9.9.9")
    pem = elsewhere.cert_chain_pems[0].bytes() + elsewhere.private_key_pem.bytes()
    cert = PrivateCertificate.loadPEM(pem)
    options = CertificateOptions(privateKey=cert.privateKey.original, certificate=cert.original)
    port = reactor.listenSSL(0, Site(FakeAPIServer()), options, interface="127.0.0.1")
    api = api_for(pki, f"https://127.0.0.1:{port.getHost().port}")
    try:
        with pytest.raises(KubeUnavailable) as info:
            await api.call("list_nodes", "GET", "/api/v1/nodes")
        assert str(info.value).startswith(
            "kubernetes.clusters.k1.server: the API server's certificate is not valid for 127.0.0.1"
        ), str(info.value)
    finally:
        await api.close()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_refused_token_names_token_file_and_is_not_shown(pki: dict[str, Any], https: Any) -> None:
    port, _ = https
    api = api_for(pki, f"https://127.0.0.1:{port}", token="bad-token")
    try:
        with pytest.raises(KubeAPIError) as info:
            await api.call("list_nodes", "GET", "/api/v1/nodes")
        assert info.value.status == 401
        assert str(info.value).startswith("kubernetes.clusters.k1.token_file: the API server at https://127.0.0.1:")
        assert "bad-token" not in str(info.value)
    finally:
        await api.close()


@pytest_twisted.ensureDeferred
async def test_a_token_file_rewritten_after_a_401_is_used_by_the_same_client(pki: dict[str, Any], https: Any) -> None:
    """A rotating token: the 401 has the file read again, and the call is made once more with
    the new token; while the file holds the refused token, the 401 stands."""
    port, resource = https
    path = pki["dir"] / "rotating"
    path.write_text("bad-token\n")
    api = api_for(pki, f"https://127.0.0.1:{port}", token="rotating")
    try:
        with pytest.raises(KubeAPIError) as info:
            await api.call("list_nodes", "GET", "/api/v1/nodes")
        assert info.value.status == 401
        assert [seen[2] for seen in resource.seen] == [b"Bearer bad-token"]  # the same token: no second try
        path.write_text("good-token\n")
        assert await api.call("list_nodes", "GET", "/api/v1/nodes") == {"kind": "NodeList", "items": []}
        assert [seen[2] for seen in resource.seen[1:]] == [b"Bearer bad-token", b"Bearer good-token"]
        assert await api.call("list_nodes", "GET", "/api/v1/nodes") == {"kind": "NodeList", "items": []}
        assert resource.seen[-1][2] == b"Bearer good-token" and len(resource.seen) == 4
    finally:
        await api.close()


@pytest_twisted.ensureDeferred
async def test_403_names_the_missing_permission(pki: dict[str, Any], https: Any) -> None:
    port, _ = https
    api = api_for(pki, f"https://127.0.0.1:{port}")
    try:
        with pytest.raises(KubeAPIError) as info:
            await api.call("create_job", "POST", "/forbidden", body={"kind": "Job"})
        assert str(info.value).startswith(
            "kubernetes.clusters.k1: missing RBAC permission: verb create on jobs (API group batch) in namespace cc"
        )
    finally:
        await api.close()


@pytest_twisted.ensureDeferred
async def test_a_deadline_from_the_ask_and_a_size_bound(pki: dict[str, Any], https: Any) -> None:
    port, _ = https
    api = api_for(pki, f"https://127.0.0.1:{port}", timeout=0.5)
    try:
        started = reactor.seconds()
        with pytest.raises(
            KubeUnavailable,
            match=r"did not answer slow within 0\.5 s \(kubernetes\.clusters\.k1\.api_timeout_seconds\)",
        ):
            await api.call("slow", "GET", "/slow")
        assert reactor.seconds() - started < 3
        with pytest.raises(KubeUnavailable, match="larger than 1000 bytes"):
            await api.call("big", "GET", "/big", limit=1000)
        assert api.metrics is not None
        failures = api.metrics.kube_failures.labels(operation="slow", node="k1", reason="timeout")._value.get()
        assert failures == 1
    finally:
        await api.close()


@pytest_twisted.ensureDeferred
async def test_nothing_listening_names_server(pki: dict[str, Any]) -> None:
    api = api_for(pki, "https://127.0.0.1:1")
    try:
        with pytest.raises(
            KubeUnavailable, match=r"^kubernetes\.clusters\.k1\.server: nothing listens at https://127\.0\.0\.1:1"
        ):
            await api.call("list_nodes", "GET", "/api/v1/nodes")
    finally:
        await api.close()


def test_forbidden_text_of_a_cluster_scoped_resource() -> None:
    message = 'nodes is forbidden: User "u" cannot list resource "nodes" in API group "" at the cluster scope'
    assert (
        forbidden_text(message)
        == f"missing RBAC permission: verb list on nodes cluster-wide (a ClusterRole) ({message})"
    )
    assert forbidden_text("something else") == "something else"
