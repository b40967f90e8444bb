"""Notifications go only where ``[notifications]`` allows (server-side request forgery).

Real receivers on loopback addresses (127.0.0.1 and 127.0.0.2 are both this machine), the
real Notifier with its real HTTP client and the reactor's real resolver: an allowed
destination gets the notification, a refused one gets nothing, the refusal is logged without
the password, and the sender never fails.  The rule is checked on the address the name
resolves to; TLS still verifies the certificate against the name.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import pytest_twisted
import trustme
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.ssl import Certificate
from twisted.logger import formatEvent, globalLogPublisher
from twisted.web.client import BrowserLikePolicyForHTTPS
from twisted.web.server import Site

from ccserver.config import ConfigError, DeadNodeNotification, HTTPAuth, from_dict
from ccserver.destinations import Destinations
from ccserver.notifications import Notifier
from ccserver.service import CCServer
from tests.notifications.test_notifier import Receiver, _ServerTLS

WAIT = 20.0
PASSWORD = "notify-Pa55-secret"
BASIC = {"auth_type": "basic", "username": "alice", "password": PASSWORD}


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    lines: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        lines.append(formatEvent(event) + " " + repr(event))

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


@pytest_twisted.async_yield_fixture
async def serve() -> AsyncIterator[Callable[..., tuple[Receiver, int]]]:
    ports = []

    def listen(interface: str, tls: Any = None) -> tuple[Receiver, int]:
        receiver = Receiver()
        site = Site(receiver)
        if tls is None:
            port = reactor.listenTCP(0, site, interface=interface)
        else:
            port = reactor.listenSSL(0, site, tls, interface=interface)
        ports.append(port)
        return receiver, port.getHost().port

    yield listen
    for port in ports:
        await port.stopListening()


def notifier(networks: tuple[str, ...] = (), hosts: tuple[str, ...] = (), **kwargs: Any) -> Notifier:
    return Notifier(reactor, backoff_seconds=0.05, destinations=Destinations.from_strings(networks, hosts), **kwargs)


async def wait(d: Deferred[Any]) -> Any:
    return await d.addTimeout(WAIT, reactor)


@pytest_twisted.ensureDeferred
async def test_allowed_network_delivered_other_address_refused_and_logged(
    serve: Callable[..., tuple[Receiver, int]], log_lines: list[str]
) -> None:
    inside, inside_port = serve("127.0.0.1")
    outside, outside_port = serve("127.0.0.2")
    sender = notifier(networks=("127.0.0.1/32",))
    ok = await wait(sender.send(f"http://127.0.0.1:{inside_port}/notify", {"v": 1}, auth=BASIC))
    assert ok.delivered and ok.status == 200
    assert inside.bodies == [{"v": 1}]
    refused = await wait(sender.send(f"http://127.0.0.2:{outside_port}/notify?token=abc", {"v": 2}, auth=BASIC))
    assert not refused.delivered and refused.attempts == 1  # not retried
    assert "not an allowed notification destination" in (refused.error or "")
    assert outside.requests == []
    refusals = [line for line in log_lines if "refused, not sent" in line]
    assert len(refusals) == 1 and f"127.0.0.2:{outside_port}/notify" in refusals[0]
    assert not any(PASSWORD in line or "token=abc" in line for line in log_lines)


@pytest_twisted.ensureDeferred
async def test_the_rule_is_on_the_resolved_address_not_the_name(serve: Callable[..., tuple[Receiver, int]]) -> None:
    receiver, port = serve("127.0.0.1")
    # "localhost" is not in 10.0.0.0/8 once resolved, whatever its name looks like
    refused = await wait(notifier(networks=("10.0.0.0/8",)).send(f"http://localhost:{port}/n", {"v": 1}))
    assert not refused.delivered and receiver.requests == []
    # the same name, and its address allowed: delivered
    ok = await wait(notifier(networks=("127.0.0.0/8", "::1/128")).send(f"http://localhost:{port}/n", {"v": 2}))
    assert ok.delivered and receiver.bodies == [{"v": 2}]


@pytest_twisted.ensureDeferred
async def test_allowed_hosts_by_name_and_wildcard(serve: Callable[..., tuple[Receiver, int]]) -> None:
    receiver, port = serve("127.0.0.1")
    by_name = notifier(hosts=("LOCALHOST",))
    assert (await wait(by_name.send(f"http://localhost:{port}/n", {"v": 1}))).delivered
    # an allowed name does not allow its address written as a literal
    assert not (await wait(by_name.send(f"http://127.0.0.1:{port}/n", {"v": 2}))).delivered
    wildcard = notifier(hosts=("*.localhost",))
    assert not (await wait(wildcard.send(f"http://localhost:{port}/n", {"v": 3}))).delivered
    assert receiver.bodies == [{"v": 1}]


@pytest_twisted.ensureDeferred
async def test_https_to_an_allowed_address_still_verifies_the_certificate(
    serve: Callable[..., tuple[Receiver, int]],
) -> None:
    ca = trustme.CA()
    receiver, port = serve("127.0.0.1", tls=_ServerTLS(ca.issue_cert("localhost")))
    trusting = BrowserLikePolicyForHTTPS(trustRoot=Certificate.loadPEM(ca.cert_pem.bytes()))
    allowed = ("127.0.0.0/8", "::1/128")
    ok = await wait(notifier(networks=allowed, https_policy=trusting).send(f"https://localhost:{port}/n", {"v": 1}))
    assert ok.delivered, ok.error
    # the certificate names localhost, not 127.0.0.1: refused by TLS, as without the rule
    wrong = await wait(notifier(networks=allowed, https_policy=trusting).send(f"https://127.0.0.1:{port}/n", {"v": 2}))
    assert not wrong.delivered
    # an unknown CA is still refused
    unknown = await wait(notifier(networks=allowed).send(f"https://localhost:{port}/n", {"v": 3}))
    assert not unknown.delivered
    assert receiver.bodies == [{"v": 1}]


@pytest_twisted.ensureDeferred
async def test_dead_node_notification_follows_the_same_rule(serve: Callable[..., tuple[Receiver, int]]) -> None:
    receiver, port = serve("127.0.0.2")
    dead = DeadNodeNotification(
        url=f"http://127.0.0.2:{port}/dead", auth=HTTPAuth("basic", "admin", PASSWORD), ssl_verify=True
    )
    refused = await wait(notifier(networks=("127.0.0.1/32",)).notify_dead_node(dead, "node-1"))
    assert refused is not None and not refused.delivered and receiver.requests == []
    ok = await wait(notifier(networks=("127.0.0.2/32",)).notify_dead_node(dead, "node-1"))
    assert ok is not None and ok.delivered and receiver.bodies == [{"name": "node-1"}]


@pytest_twisted.ensureDeferred
async def test_task_notifications_refused_and_allowed_side_by_side(serve: Callable[..., tuple[Receiver, int]]) -> None:
    inside, inside_port = serve("127.0.0.1")
    outside, outside_port = serve("127.0.0.2")
    task = {
        "_id": "t1",
        "notifications": [
            {"connector_access": {"url": f"http://127.0.0.2:{outside_port}/n", "json_data": {"who": "outside"}}},
            {"connector_access": {"url": f"http://127.0.0.1:{inside_port}/n", "json_data": {"who": "inside"}}},
        ],
    }
    deliveries = await wait(notifier(networks=("127.0.0.1/32",)).notify_task(task))
    assert [d.delivered for d in deliveries] == [False, True]
    assert inside.bodies == [{"who": "inside"}] and outside.requests == []


@pytest_twisted.ensureDeferred
async def test_unrestricted_by_default_as_0_10(serve: Callable[..., tuple[Receiver, int]]) -> None:
    receiver, port = serve("127.0.0.2")
    assert (await wait(Notifier(reactor).send(f"http://127.0.0.2:{port}/n", {"v": 1}))).delivered
    assert receiver.bodies == [{"v": 1}]


@pytest_twisted.ensureDeferred
async def test_the_daemon_applies_the_configured_rule(
    serve: Callable[..., tuple[Receiver, int]], tmp_path: Any
) -> None:
    receiver, port = serve("127.0.0.2")
    config = from_dict(
        {"server": {"data_dir": str(tmp_path)}, "notifications": {"allowed_networks": ["10.0.0.0/8"]}},
        "<test>",
        {"HOME": str(tmp_path)},
    )
    daemon = CCServer(config, reactor)  # not started: only its notifier is used
    refused = await wait(daemon.notifier.send(f"http://127.0.0.2:{port}/n", {"v": 1}))
    assert not refused.delivered and receiver.requests == []


@pytest.mark.parametrize(
    "section, message",
    [
        ({"allowed_networks": ["10.0.0.0/33"]}, "notifications.allowed_networks[0]: expected an IP network"),
        ({"allowed_networks": ["intranet"]}, "notifications.allowed_networks[0]"),
        ({"allowed_hosts": ["https://hooks.example.org"]}, "notifications.allowed_hosts[0]: expected a host name"),
        ({"allowed_hosts": "hooks.example.org"}, "notifications.allowed_hosts: expected array"),
        ({"allowed": []}, "notifications.allowed: unknown key"),
    ],
)
def test_config_errors_name_the_file_and_key(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match="^my.toml: " + message.replace("[", r"\[").replace("]", r"\]")):
        from_dict({"notifications": section}, "my.toml", {"HOME": "/nonexistent"})
