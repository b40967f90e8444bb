"""ccserver.notifications: retry logic on a fake clock and fake HTTP, then the real thing on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import pytest_twisted
import trustme
from bson import ObjectId
from OpenSSL import SSL
from treq.testing import StubTreq
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import IRealm, Portal
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IOpenSSLContextFactory
from twisted.internet.ssl import Certificate
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.client import BrowserLikePolicyForHTTPS, ResponseNeverReceived
from twisted.web.guard import DigestCredentialFactory, HTTPAuthSessionWrapper
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface import implementer

from ccserver.config import DeadNodeNotification, HTTPAuth
from ccserver.notifications import Delivery, Notifier, redact_url

WAIT = 15.0  # seconds: the longest any integration test waits for anything
PASSWORD = "s3cret-Pa55"
BASIC = {"auth_type": "basic", "username": "alice", "password": PASSWORD}
DIGEST = {"auth_type": "digest", "username": "alice", "password": PASSWORD}


# --- receivers (twisted.web resources, served by StubTreq or a real Site) ---------------------


class Receiver(Resource):
    """Answers each POST with the next of ``statuses`` (the last one repeats) and records it."""

    isLeaf = True

    def __init__(self, *statuses: int) -> None:
        super().__init__()
        self.statuses = list(statuses or (200,))
        self.requests: list[dict[str, Any]] = []

    def record(self, request: Request) -> None:
        self.requests.append(
            {
                "uri": request.uri.decode(),
                "headers": {
                    k.decode().lower(): [x.decode() for x in v] for k, v in request.requestHeaders.getAllRawHeaders()
                },
                "body": request.content.read(),
            }
        )

    def render_POST(self, request: Request) -> bytes:  # noqa: N802
        self.record(request)
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        request.setResponseCode(status)
        return b'{"ok": true}'

    @property
    def bodies(self) -> list[Any]:
        return [json.loads(r["body"]) if r["body"] else None for r in self.requests]


class BasicReceiver(Receiver):
    def render_POST(self, request: Request) -> bytes:  # noqa: N802
        if (request.getUser(), request.getPassword()) != (b"alice", PASSWORD.encode()):
            self.record(request)
            request.setResponseCode(401)
            request.setHeader(b"WWW-Authenticate", b'Basic realm="cc"')
            return b""
        return super().render_POST(request)


class DigestReceiver(Receiver):
    """A digest check written independently of ccserver.httpauth (MD5 or SHA-256, qop=auth)."""

    def __init__(self, algorithm: str = "SHA-256") -> None:
        super().__init__(200)
        self.algorithm = algorithm
        self.hash = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}[algorithm]
        self.nonces: set[str] = set()
        self.challenges = 0

    def h(self, text: str) -> str:
        return self.hash(text.encode()).hexdigest()

    def render_POST(self, request: Request) -> bytes:  # noqa: N802
        header = (request.getHeader(b"authorization") or b"").decode()
        got = dict((k, a or b) for k, a, b in re.findall(r'(\w+)=(?:"([^"]*)"|([^\s,]+))', header))
        if header.startswith("Digest ") and got.get("nonce") in self.nonces and got.get("username") == "alice":
            ha1 = self.h(f"alice:cc:{PASSWORD}")
            ha2 = self.h(f"POST:{got['uri']}")
            expected = self.h(f"{ha1}:{got['nonce']}:{got['nc']}:{got['cnonce']}:auth:{ha2}")
            if got["response"] == expected and got["uri"] == request.uri.decode() and got.get("opaque") == "op":
                return super().render_POST(request)
        self.record(request)
        self.challenges += 1
        nonce = base64.b64encode(str(self.challenges).encode() * 8).decode()
        self.nonces.add(nonce)
        request.setResponseCode(401)
        request.setHeader(
            b"WWW-Authenticate",
            f'Digest realm="cc", qop="auth", algorithm={self.algorithm}, nonce="{nonce}", opaque="op"'.encode(),
        )
        return b""


class Silent(Resource):
    """Never answers; records when the client gives up (the connection is closed)."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.started = 0
        self.aborted = 0

    def render_POST(self, request: Request) -> Any:  # noqa: N802
        self.started += 1
        request.notifyFinish().addErrback(lambda _: setattr(self, "aborted", self.aborted + 1))
        return NOT_DONE_YET


@pytest.fixture
def log_events() -> Iterator[list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def assert_no_secret(events: list[dict[str, Any]], *secrets: str) -> None:
    from twisted.logger import formatEvent

    assert events, "something should have been logged"
    for event in events:
        text = formatEvent(event) + repr(event)
        for secret in secrets:
            assert secret not in text
        assert "Authorization" not in text and "authorization" not in text


# --- unit tests: StubTreq and a fake clock ------------------------------------------------------


def stub(resource: Resource, **kwargs: Any) -> tuple[Notifier, Clock]:
    clock = Clock()
    return Notifier(MemoryReactorClock(), clock=clock, http_client=StubTreq(resource), **kwargs), clock


def result(d: Deferred[Any]) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "the Deferred has not fired"
    assert not isinstance(out[0], Failure), out[0]
    return out[0]


def test_posts_json_once_on_success() -> None:
    receiver = Receiver(201)
    notifier, _ = stub(receiver)
    delivery = result(notifier.send("https://example.org/hook?x=1", {"a": [1, 2]}))
    assert delivery == Delivery("https://example.org/hook", True, 201, 1)
    assert receiver.bodies == [{"a": [1, 2]}]
    assert receiver.requests[0]["headers"]["content-type"] == ["application/json"]
    assert receiver.requests[0]["uri"] == "/hook?x=1"


def test_none_sends_an_empty_body_as_0_10_did() -> None:
    receiver = Receiver()
    notifier, _ = stub(receiver)
    assert result(notifier.send("http://example.org/", None)).delivered
    assert receiver.requests[0]["body"] == b""
    assert "content-type" not in receiver.requests[0]["headers"]


def test_5xx_is_retried_with_backoff_on_the_clock() -> None:
    receiver = Receiver(503, 502, 200)
    notifier, clock = stub(receiver)
    d = notifier.send("http://example.org/", {})
    assert not d.called and len(receiver.requests) == 1
    clock.advance(0.99)
    assert len(receiver.requests) == 1
    clock.advance(0.01)  # first back-off: 1 s
    assert len(receiver.requests) == 2 and not d.called
    clock.advance(1.99)
    assert len(receiver.requests) == 2
    clock.advance(0.01)  # second: 2 s
    assert result(d) == Delivery("http://example.org/", True, 200, 3)


def test_retries_are_bounded_and_then_the_failure_is_reported() -> None:
    receiver = Receiver(500)
    notifier, clock = stub(receiver, backoff_seconds=1.0, max_backoff_seconds=3.0)
    d = notifier.send("http://example.org/", {}, retries=4)
    clock.pump([1, 2, 3])
    assert not d.called and len(receiver.requests) == 4
    clock.advance(2.99)
    assert not d.called
    clock.advance(0.01)  # delays 1, 2, capped 3, 3 -> 9 s in all
    assert result(d) == Delivery("http://example.org/", False, 500, 5, "HTTP 500")
    assert clock.getDelayedCalls() == []


def test_retries_zero_means_one_try() -> None:
    notifier, _ = stub(Receiver(503))
    assert result(notifier.send("http://example.org/", {}, retries=0)).attempts == 1


@pytest.mark.parametrize("status", [400, 401, 403, 404, 302])
def test_4xx_and_other_answers_are_not_retried(status: int) -> None:
    receiver = Receiver(status, 200)
    notifier, clock = stub(receiver)
    assert result(notifier.send("http://example.org/", {})) == Delivery(
        "http://example.org/", False, status, 1, f"HTTP {status}"
    )
    assert len(receiver.requests) == 1 and clock.getDelayedCalls() == []


def test_a_try_without_answer_times_out_on_the_clock_and_is_retried() -> None:
    silent = Silent()
    notifier, clock = stub(silent)
    d = notifier.send("http://example.org/", {}, timeout=5.0, retries=1)
    clock.advance(4.9)
    assert not d.called and silent.started == 1
    clock.advance(0.1)  # timeout, then 1 s back-off
    clock.advance(1.0)
    assert silent.started == 2
    clock.advance(5.0)
    delivery = result(d)
    assert delivery == Delivery("http://example.org/", False, None, 2, "no answer within 5 s")


class FakeClient:
    """An http_client whose posts fail with the given errors, then answer from a receiver."""

    def __init__(self, errors: list[BaseException], then: Resource | None = None) -> None:
        self.errors = errors
        self.calls = 0
        self.then = StubTreq(then or Receiver())

    def post(self, url: str, **kwargs: Any) -> Deferred[Any]:
        self.calls += 1
        if self.errors:
            return fail(self.errors.pop(0))
        return self.then.post(url, **kwargs)


def test_connection_errors_are_retried() -> None:
    client = FakeClient([ConnectionRefusedError(), ResponseNeverReceived([Failure(ConnectionRefusedError())])])
    clock = Clock()
    notifier = Notifier(MemoryReactorClock(), clock=clock, http_client=client)
    d = notifier.send("http://example.org/", {})
    clock.pump([1, 2])
    assert result(d) == Delivery("http://example.org/", True, 200, 3)


def test_tls_verification_failures_and_unexpected_errors_are_not_retried() -> None:
    for error in (ResponseNeverReceived([Failure(SSL.Error("certificate verify failed"))]), RuntimeError("bug")):
        client = FakeClient([error])
        notifier = Notifier(MemoryReactorClock(), clock=Clock(), http_client=client)
        delivery = result(notifier.send("https://example.org/", {}))
        assert not delivery.delivered and delivery.attempts == 1 and client.calls == 1
        assert type(error).__name__ in (delivery.error or "")


def test_a_client_that_raises_synchronously_does_not_fail_the_caller() -> None:
    class Broken:
        def post(self, *args: Any, **kwargs: Any) -> Any:
            raise TypeError("broken client")

    notifier = Notifier(MemoryReactorClock(), clock=Clock(), http_client=Broken())
    delivery = result(notifier.send("http://example.org/", {}))
    assert not delivery.delivered and "broken client" in (delivery.error or "")


@pytest.mark.parametrize(
    ("url", "data", "auth", "why"),
    [
        ("http://example.org/", {}, {"auth_type": "ntlm", "username": "u", "password": "p"}, "auth_type"),
        ("http://example.org/", {}, {"auth_type": "basic", "username": "u"}, "password"),
        ("http://example.org/", {"x": object()}, None, "JSON"),
        ("ftp://example.org/", {}, None, "http"),
        (None, {}, None, "no url"),
        ("not a url", {}, None, "http"),
    ],
)
def test_invalid_notifications_are_not_sent(url: Any, data: Any, auth: Any, why: str) -> None:
    receiver = Receiver()
    notifier, _ = stub(receiver)
    delivery = result(notifier.send(url, data, auth=auth))
    assert not delivery.delivered and delivery.attempts == 0 and why in (delivery.error or "")
    assert receiver.requests == []


def test_basic_auth_header_from_auth_or_from_the_url() -> None:
    receiver = BasicReceiver()
    notifier, _ = stub(receiver)
    auth = HTTPAuth(auth_type="basic", username="alice", password=PASSWORD)
    assert result(notifier.send("http://example.org/", {}, auth=auth)).delivered
    expected = "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    assert receiver.requests[0]["headers"]["authorization"] == [expected]
    # as with requests in 0.10, user info in the URL is basic authentication (and is not logged)
    delivery = result(notifier.send(f"http://alice:{PASSWORD}@example.org/x", {}))
    assert delivery == Delivery("http://example.org/x", True, 200, 1)
    assert receiver.requests[1]["headers"]["authorization"] == [expected]


def test_wrong_basic_password_is_a_401_not_retried(log_events: list[dict[str, Any]]) -> None:
    receiver = BasicReceiver()
    notifier, _ = stub(receiver)
    auth = {"auth_type": "basic", "username": "alice", "password": "wrong-" + PASSWORD}
    assert result(notifier.send("http://example.org/", {}, auth=auth)) == Delivery(
        "http://example.org/", False, 401, 1, "HTTP 401"
    )
    assert_no_secret(log_events, PASSWORD, base64.b64encode(f"alice:wrong-{PASSWORD}".encode()).decode())


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_digest_handshake(algorithm: str) -> None:
    receiver = DigestReceiver(algorithm)
    notifier, _ = stub(receiver, make_cnonce=lambda: "cnonce-1")
    auth = {"auth_type": "digest", "username": "alice", "password": PASSWORD}
    assert result(notifier.send("http://example.org/hook?q=1", {"n": 1}, auth=auth)).delivered
    first, second = receiver.requests
    assert "authorization" not in first["headers"]
    assert second["headers"]["authorization"][0].startswith('Digest username="alice", realm="cc", uri="/hook?q=1"')
    assert 'cnonce="cnonce-1"' in second["headers"]["authorization"][0]
    assert receiver.bodies == [{"n": 1}, {"n": 1}]


def test_wrong_digest_password_is_not_retried(log_events: list[dict[str, Any]]) -> None:
    receiver = DigestReceiver()
    notifier, clock = stub(receiver)
    auth = {"auth_type": "digest", "username": "alice", "password": "wrong"}
    delivery = result(notifier.send("http://example.org/", {}, auth=auth))
    assert delivery == Delivery("http://example.org/", False, 401, 1, "HTTP 401")
    assert len(receiver.requests) == 2 and clock.getDelayedCalls() == []
    assert_no_secret(log_events, "wrong", "Digest username")


def test_digest_asked_but_the_server_offers_none() -> None:
    notifier, _ = stub(BasicReceiver())
    auth = {"auth_type": "digest", "username": "alice", "password": PASSWORD}
    assert result(notifier.send("http://example.org/", {}, auth=auth)).status == 401


def test_notify_task_sends_each_notification_with_meta_data_when_asked() -> None:
    receiver = BasicReceiver()
    notifier, _ = stub(receiver)
    task_id = ObjectId()
    task = {
        "_id": task_id,
        "notifications": [
            {
                "connector_access": {
                    "url": "https://example.org/a",
                    "json_data": {"run": 7},
                    "ssl_verify": False,
                    "auth": {"auth_type": "basic", "username": "alice", "password": PASSWORD},
                },
                "add_meta_data": True,
            },
            {"connector_access": {"url": "https://example.org/b", "json_data": {"run": 8}}, "add_meta_data": False},
            {"connector_access": {"url": "https://example.org/c"}, "add_meta_data": True},
            None,
        ],
    }
    deliveries = result(notifier.notify_task(task))
    assert [(d.url, d.delivered, d.status) for d in deliveries] == [
        ("https://example.org/a", True, 200),
        ("https://example.org/b", False, 401),
        ("https://example.org/c", False, 401),
    ]
    assert receiver.bodies == [{"run": 7, "task_id": str(task_id)}, {"run": 8}, {"task_id": str(task_id)}]
    assert len(str(task_id)) == 24
    assert result(notifier.notify_task({"_id": task_id})) == []


def test_notify_dead_node() -> None:
    receiver = BasicReceiver()
    notifier, _ = stub(receiver)
    config = DeadNodeNotification(
        url="https://example.org/cluster", auth=HTTPAuth("basic", "alice", PASSWORD), ssl_verify=True
    )
    assert result(notifier.notify_dead_node(config, "node-3")).delivered
    assert receiver.bodies == [{"name": "node-3"}]
    assert result(notifier.notify_dead_node(None, "node-3")) is None


def test_stop_cancels_notifications_in_flight() -> None:
    receiver = Receiver(503)
    notifier, clock = stub(receiver)
    d = notifier.send("http://example.org/", {})
    assert not d.called
    stopped = notifier.stop()
    assert result(stopped) == [(True, Delivery("http://example.org/", False, 503, 1, "cancelled"))]
    assert d.called and clock.getDelayedCalls() == []
    assert result(notifier.stop()) == []


def test_stop_cancels_a_request_waiting_for_its_answer() -> None:
    silent = Silent()
    notifier, clock = stub(silent)
    d = notifier.send("http://example.org/", {})
    assert silent.started == 1 and not d.called
    assert result(notifier.stop()) == [(True, Delivery("http://example.org/", False, None, 1, "cancelled"))]
    assert clock.getDelayedCalls() == []


def test_redact_url() -> None:
    assert redact_url("https://u:p@host.example:8443/a/b?token=x#f") == "https://host.example:8443/a/b"
    assert redact_url("http://[::1]:80/") == "http://[::1]:80/"
    assert redact_url("http://bad:port/") == "<invalid url>"


# --- integration: a real twisted.web server on 127.0.0.1 ---------------------------------------


@pytest_twisted.async_yield_fixture
async def serve() -> AsyncIterator[Callable[..., str]]:
    ports = []

    def listen(resource: Resource, tls: Any = None, path: str = "/notify") -> str:
        site = Site(resource)
        if tls is None:
            port = reactor.listenTCP(0, site, interface="127.0.0.1")
        else:
            port = reactor.listenSSL(0, site, tls, interface="127.0.0.1")
        ports.append(port)
        return f"{'https' if tls else 'http'}://127.0.0.1:{port.getHost().port}{path}"

    yield listen
    for port in ports:
        await port.stopListening()


def real(**kwargs: Any) -> Notifier:
    kwargs.setdefault("backoff_seconds", 0.05)
    return Notifier(reactor, **kwargs)


async def wait(d: Deferred[Any]) -> Any:
    return await d.addTimeout(WAIT, reactor)


@pytest_twisted.ensureDeferred
async def test_real_json_body_and_meta_data(serve: Callable[..., str]) -> None:
    receiver = Receiver()
    url = serve(receiver)
    task_id = ObjectId()
    notification = {"connector_access": {"url": url, "json_data": {"k": "v"}}, "add_meta_data": True}
    task = {"_id": task_id, "notifications": [notification]}
    [delivery] = await wait(real().notify_task(task))
    assert delivery.delivered and delivery.status == 200
    assert receiver.bodies == [{"k": "v", "task_id": str(task_id)}]
    assert receiver.requests[0]["headers"]["content-type"] == ["application/json"]


@pytest_twisted.ensureDeferred
async def test_real_basic_auth(serve: Callable[..., str], log_events: list[dict[str, Any]]) -> None:
    receiver = BasicReceiver()
    url = serve(receiver)
    notifier = real()
    ok = await wait(notifier.send(url, {"a": 1}, auth=BASIC))
    assert ok.delivered
    bad = await wait(notifier.send(url, {"a": 1}, auth={"auth_type": "basic", "username": "alice", "password": "nope"}))
    assert (bad.delivered, bad.status, bad.attempts) == (False, 401, 1)
    assert_no_secret(log_events, PASSWORD, "nope")


@implementer(IRealm)
class _Realm:
    def __init__(self, resource: Resource) -> None:
        self.resource = resource

    def requestAvatar(self, avatar_id: Any, mind: Any, *interfaces: Any) -> Any:  # noqa: N802
        assert IResource in interfaces
        return IResource, self.resource, lambda: None


@pytest_twisted.ensureDeferred
async def test_real_digest_auth_against_twisted_guard(serve: Callable[..., str]) -> None:
    receiver = Receiver()
    portal = Portal(_Realm(receiver), [InMemoryUsernamePasswordDatabaseDontUse(alice=PASSWORD.encode())])
    url = serve(HTTPAuthSessionWrapper(portal, [DigestCredentialFactory(b"md5", b"cc-test")]))
    notifier = real()
    ok = await wait(notifier.send(url, {"d": 1}, auth=DIGEST))
    assert ok.delivered and receiver.bodies == [{"d": 1}]
    bad = await wait(notifier.send(url, {"d": 2}, auth=HTTPAuth("digest", "alice", "wrong")))
    assert (bad.delivered, bad.status, bad.attempts) == (False, 401, 1)
    assert receiver.bodies == [{"d": 1}]


@pytest_twisted.ensureDeferred
async def test_real_digest_auth_sha_256(serve: Callable[..., str]) -> None:
    receiver = DigestReceiver("SHA-256")
    url = serve(receiver)
    ok = await wait(real().send(url, {"d": 1}, auth=DIGEST))
    assert ok.delivered and receiver.challenges == 1


@pytest_twisted.ensureDeferred
async def test_real_retry_after_503_then_success(serve: Callable[..., str]) -> None:
    receiver = Receiver(503, 200)
    url = serve(receiver)
    delivery = await wait(real().send(url, {"r": 1}))
    assert (delivery.delivered, delivery.status, delivery.attempts) == (True, 200, 2)
    assert receiver.bodies == [{"r": 1}, {"r": 1}]


@pytest_twisted.ensureDeferred
async def test_real_no_retry_after_400(serve: Callable[..., str]) -> None:
    receiver = Receiver(400, 200)
    url = serve(receiver)
    delivery = await wait(real().send(url, {}))
    assert (delivery.delivered, delivery.status, delivery.attempts) == (False, 400, 1)
    assert len(receiver.requests) == 1


@pytest_twisted.ensureDeferred
async def test_real_timeout_against_a_server_that_never_answers(serve: Callable[..., str]) -> None:
    silent = Silent()
    url = serve(silent)
    start = time.monotonic()
    delivery = await wait(real().send(url, {}, timeout=0.5, retries=1))
    elapsed = time.monotonic() - start
    assert (delivery.delivered, delivery.status, delivery.attempts) == (False, None, 2)
    assert delivery.error == "no answer within 0.5 s"
    assert 1.0 <= elapsed < 5.0  # two tries of 0.5 s and a 0.05 s back-off
    assert silent.started == 2
    await wait(_until(lambda: silent.aborted == 2))  # the client closed both connections


@pytest_twisted.ensureDeferred
async def test_real_connection_refused_is_retried_then_reported(serve: Callable[..., str]) -> None:
    port = reactor.listenTCP(0, Site(Receiver()), interface="127.0.0.1")
    number = port.getHost().port
    await port.stopListening()
    delivery = await wait(real().send(f"http://127.0.0.1:{number}/", {}, retries=2))
    assert (delivery.delivered, delivery.attempts) == (False, 3)
    assert "ConnectionRefused" in (delivery.error or "")


@implementer(IOpenSSLContextFactory)
class _ServerTLS:
    """A server context factory (for listenSSL) holding trustme's certificate."""

    def __init__(self, cert: Any) -> None:
        self._context = SSL.Context(SSL.TLS_SERVER_METHOD)
        cert.configure_cert(self._context)

    def getContext(self) -> SSL.Context:  # noqa: N802
        return self._context


@pytest.fixture(scope="module")
def tls() -> tuple[Any, Any]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server = _ServerTLS(cert)
    trusting = BrowserLikePolicyForHTTPS(trustRoot=Certificate.loadPEM(ca.cert_pem.bytes()))
    return server, trusting


@pytest_twisted.ensureDeferred
async def test_real_https_self_signed(serve: Callable[..., str], tls: tuple[Any, Any]) -> None:
    server, trusting = tls
    receiver = Receiver()
    url = serve(receiver, tls=server)
    # verified against the platform's trust store: the unknown CA fails, and is not retried
    refused = await wait(real().send(url, {"v": 1}))
    assert (refused.delivered, refused.status, refused.attempts) == (False, None, 1)
    assert "SSL" in (refused.error or "") or "certificate" in (refused.error or "")
    assert receiver.requests == []
    # ssl_verify = false: accepted (and the risk is the user's)
    accepted = await wait(real().send(url, {"v": 2}, ssl_verify=False))
    assert accepted.delivered
    # verified against a trust root that knows the CA
    trusted = await wait(real(https_policy=trusting).send(url, {"v": 3}))
    assert trusted.delivered
    assert receiver.bodies == [{"v": 2}, {"v": 3}]


def _until(predicate: Callable[[], bool], interval: float = 0.02) -> Deferred[None]:
    from twisted.internet.task import LoopingCall

    loop = LoopingCall(lambda: loop.stop() if predicate() else None)
    d = loop.start(interval, now=True)
    return d.addCallback(lambda _: None)
