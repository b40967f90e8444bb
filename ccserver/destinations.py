"""Where outgoing notifications may go (``[notifications]``).

A notification URL is chosen by whoever submits a task, and the daemon fetches it from its own
network: without a rule, any user can make the daemon POST to hosts only it reaches (a
database port, a cloud metadata service, an admin interface on the loopback): server-side
request forgery.  As in CC-Server 0.10 nothing is restricted by default; with
``allowed_networks`` or ``allowed_hosts`` set, a notification is sent only when

* its host name is one of ``allowed_hosts`` (exact, case-insensitive; ``*.example.org``
  also matches every name below ``example.org``), or
* the address the name resolves to lies in one of ``allowed_networks``.

The check is made on the address the connection then goes to: the name is resolved once (by
the reactor's resolver, whose ``getaddrinfo`` runs on a thread, never on the reactor), only
allowed addresses are connected to (in the resolver's order), and TLS still verifies the certificate against the
name.  A name that resolves again differently between a check and a connection (DNS
rebinding) therefore gains nothing.  A refused notification is not sent and is logged (its
URL without user info and query); it never fails the task.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.error import ConnectError, DNSLookupError
from twisted.internet.interfaces import IHostResolution, IResolutionReceiver, IStreamClientEndpoint
from twisted.web.client import URI
from twisted.web.iweb import IAgentEndpointFactory, IPolicyForHTTPS
from zope.interface import implementer

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
#: seconds to connect to a checked address
CONNECT_TIMEOUT = 10.0
#: at most this many of a name's allowed addresses are tried, one after the other
MAX_ADDRESSES = 4


class DestinationRefused(Exception):
    """The notification's host is not an allowed destination."""


@dataclass(frozen=True)
class Destinations:
    """The rule: no networks and no hosts means unrestricted (as 0.10)."""

    networks: tuple[Network, ...] = ()
    hosts: tuple[str, ...] = ()

    @classmethod
    def from_strings(cls, networks: tuple[str, ...], hosts: tuple[str, ...]) -> Destinations:
        """From configuration values already checked by :mod:`ccserver.config`."""
        return cls(tuple(ipaddress.ip_network(n, strict=False) for n in networks), tuple(_name(h) for h in hosts))

    @property
    def restricted(self) -> bool:
        return bool(self.networks or self.hosts)

    def allows_host(self, host: str) -> bool:
        name = _name(host)
        for allowed in self.hosts:
            if allowed.startswith("*."):
                if name.endswith(allowed[1:]) and name != allowed[2:]:
                    return True
            elif name == allowed:
                return True
        return False

    def allows_address(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.networks)


def _name(host: str) -> str:
    return host.strip().rstrip(".").lower()


def resolve(reactor: Any, host: str, port: int) -> Deferred[list[str]]:
    """The addresses ``host`` resolves to (an address resolves to itself), through the
    reactor's resolver (getaddrinfo on its thread pool); DNSLookupError when there are none."""
    d: Deferred[list[str]] = Deferred()
    found: list[str] = []

    @implementer(IResolutionReceiver)
    class Receiver:
        def resolutionBegan(self, resolution: IHostResolution) -> None:  # noqa: N802 (interface)
            pass

        def addressResolved(self, address: Any) -> None:  # noqa: N802
            found.append(address.host)

        def resolutionComplete(self) -> None:  # noqa: N802
            if found:
                d.callback(found)
            else:
                d.errback(DNSLookupError(f"{host} does not resolve"))

    reactor.nameResolver.resolveHostName(Receiver(), host, port)
    return d


@implementer(IStreamClientEndpoint)
class _CheckedEndpoint:
    def __init__(self, reactor: Any, rule: Destinations, uri: URI, policy: IPolicyForHTTPS) -> None:
        self.reactor = reactor
        self.rule = rule
        self.uri = uri
        self.policy = policy

    def connect(self, factory: Any) -> Deferred[Any]:
        return ensureDeferred(self._connect(factory))

    async def _connect(self, factory: Any) -> Any:
        host = self.uri.host.decode("idna") if isinstance(self.uri.host, bytes) else str(self.uri.host)
        host = host.strip("[]")
        port = self.uri.port
        addresses = await resolve(self.reactor, host, port)
        if not self.rule.allows_host(host):
            addresses = [a for a in addresses if self.rule.allows_address(a)]
            if not addresses:
                raise DestinationRefused(
                    f"{host} is not an allowed notification destination "
                    "(notifications.allowed_networks / allowed_hosts)"
                )
        last: Exception | None = None
        for address in addresses[:MAX_ADDRESSES]:  # in the resolver's order, as HostnameEndpoint
            kind = TCP6ClientEndpoint if ":" in address else TCP4ClientEndpoint
            endpoint: Any = kind(self.reactor, address, port, timeout=CONNECT_TIMEOUT)
            if self.uri.scheme == b"https":
                endpoint = wrapClientTLS(self.policy.creatorForNetloc(self.uri.host, port), endpoint)
            try:
                return await endpoint.connect(factory)
            except ConnectError as e:
                last = e
        assert last is not None
        raise last


@implementer(IAgentEndpointFactory)
class CheckedEndpointFactory:
    """Endpoints for ``Agent.usingEndpointFactory`` that connect only to allowed destinations
    (see the module docstring); ``policy`` makes the TLS of https URLs."""

    def __init__(self, reactor: Any, rule: Destinations, policy: IPolicyForHTTPS) -> None:
        self.reactor = reactor
        self.rule = rule
        self.policy = policy

    def endpointForURI(self, uri: URI) -> _CheckedEndpoint:  # noqa: N802 (interface name)
        return _CheckedEndpoint(self.reactor, self.rule, uri, self.policy)
