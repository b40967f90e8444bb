"""Where the daemon listens and which address it gives containers for callbacks.

Pure functions from configuration (and, when nothing is configured, the Docker bridge
gateway) to Twisted server endpoint strings and the callback ``host``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ccserver.config import DEFAULT_PORT, Config, TLSListener


def _escape(value: str) -> str:
    """Quote ``:``, ``=`` and ``\\`` for a Twisted endpoint description."""
    return value.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


def tls_endpoint(tls: TLSListener) -> str:
    parts = [
        f"ssl:{tls.port}",
        f"interface={_escape(tls.interface)}",
        f"privateKey={_escape(tls.private_key)}",
        f"certKey={_escape(tls.certificate)}",
    ]
    if tls.chain:
        parts.append(f"extraCertChain={_escape(tls.chain)}")
    return ":".join(parts)


def tcp_endpoint(port: int, interface: str) -> str:
    return f"tcp:{port}:interface={_escape(interface)}"


@dataclass(frozen=True)
class Plan:
    """The listeners to open and the callback host; ``needs_gateway`` says that the Docker
    bridge gateway must be asked for before either is final (see :func:`complete`)."""

    endpoints: tuple[str, ...]
    host: str | None
    needs_gateway: bool
    default_port: int


def plan(config: Config, cli_listen: list[str]) -> Plan:
    server = config.server
    if cli_listen:
        endpoints = tuple(cli_listen)
    elif server.listen:
        endpoints = server.listen
    elif config.source is None:
        # no configuration at all: loopback now, the bridge gateway once it is known
        return Plan((tcp_endpoint(DEFAULT_PORT, "127.0.0.1"),), server.host, True, DEFAULT_PORT)
    else:
        eps = []
        if server.internal_port is not None or server.tls is None:
            port = DEFAULT_PORT if server.internal_port is None else server.internal_port
            eps.append(tcp_endpoint(port, server.internal_interface))
        if server.tls is not None:
            eps.append(tls_endpoint(server.tls))
        endpoints = tuple(eps)
    port = first_port(endpoints) or DEFAULT_PORT
    return Plan(endpoints, server.host, server.host is None, port)


def first_port(endpoints: tuple[str, ...]) -> int | None:
    """The port of the first plain ``tcp:`` (else ``ssl:``) endpoint, for the callback URL."""
    for scheme in ("tcp", "ssl"):
        for description in endpoints:
            head, _, rest = description.partition(":")
            if head == scheme:
                port = rest.split(":", 1)[0]
                if port.startswith("port="):
                    port = port[5:]
                if port.isdigit():
                    return int(port)
    return None


def complete(p: Plan, gateway: str | None, config_source: str | None) -> tuple[str, ...]:
    """The endpoints to open once the gateway is known (``None``: it could not be found)."""
    if config_source is None and gateway:
        return p.endpoints + (tcp_endpoint(p.default_port, gateway),)
    return p.endpoints


def callback_host(p: Plan, gateway: str | None, bound: list[tuple[str, int]]) -> str:
    """``server.host`` if configured, else a URL on the gateway (or loopback) with the port
    actually bound by the first plain listener (else the first TLS one).

    ``bound`` holds (kind, port) of each open listener, kind ``tcp`` or ``ssl``."""
    if p.host:
        return p.host
    address = gateway or "127.0.0.1"
    for kind, scheme in (("tcp", "http"), ("ssl", "https")):
        for k, port in bound:
            if k == kind:
                return f"{scheme}://{address}:{port}"
    return f"http://{address}:{p.default_port}"
