"""Docker SDK clients for configured nodes.

Everything here blocks; callers run it on the Docker thread pool
(:class:`ccserver.threads.ThreadPoolService`), never on the reactor thread.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import docker
from docker.tls import TLSConfig
from requests.adapters import HTTPAdapter

from ccserver.config import NodeConfig


class _HostnameAdapter(HTTPAdapter):
    """An HTTPS adapter that checks the engine's certificate against another name, or (with
    ``False``) only against the CA: docker-py 7 dropped ``assert_hostname``; urllib3 keeps it."""

    def __init__(self, assert_hostname: str | bool, **kwargs: Any) -> None:
        self.assert_hostname = assert_hostname
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["assert_hostname"] = self.assert_hostname
        super().init_poolmanager(*args, **kwargs)


class NodeTLSConfig(TLSConfig):
    def __init__(self, assert_hostname: str | bool | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.assert_hostname = assert_hostname

    def configure_client(self, client: Any) -> None:
        super().configure_client(client)
        if self.assert_hostname is not None and self.assert_hostname is not True:
            client.mount("https://", _HostnameAdapter(self.assert_hostname))


def make_client(node: NodeConfig, timeout: float) -> docker.DockerClient:
    """A client for ``node`` with its TLS settings (the 0.10 ``tls`` keys map onto docker-py's
    ``TLSConfig``: ``verify`` is a CA file or a boolean, ``client_cert`` a (cert, key) pair)."""
    tls: NodeTLSConfig | bool = False
    if node.tls is not None:
        verify = node.tls.verify
        ca_cert = node.tls.ca_cert
        if isinstance(verify, str):
            ca_cert, verify = verify, True
        tls = NodeTLSConfig(
            client_cert=node.tls.client_cert,
            ca_cert=ca_cert,
            verify=verify,
            assert_hostname=node.tls.assert_hostname,
        )
    base_url = node.base_url
    if tls and base_url.startswith("tcp://"):
        base_url = "https://" + base_url[len("tcp://"):]
    return docker.DockerClient(base_url=base_url, tls=tls, timeout=int(max(1, timeout)), version="auto")


def bridge_gateway(node: NodeConfig, timeout: float) -> str:
    """The gateway address of the engine's default ``bridge`` network, where containers on it
    reach the host (usually 172.17.0.1)."""
    client = make_client(node, timeout)
    try:
        network = client.networks.get("bridge")
        configs = network.attrs.get("IPAM", {}).get("Config") or []
        for entry in configs:
            gateway = entry.get("Gateway")
            if gateway and ":" not in gateway:
                return gateway
        # Docker 20.10 leaves Gateway out for the default bridge; its gateway is the first
        # address of the subnet (docker0), as the engine assigns it.
        for entry in configs:
            subnet = entry.get("Subnet")
            if subnet and ":" not in subnet:
                return str(next(ipaddress.ip_network(subnet, strict=False).hosts()))
        raise LookupError("the bridge network has no IPv4 gateway or subnet")
    finally:
        client.close()
