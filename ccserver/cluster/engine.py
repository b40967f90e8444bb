"""Docker SDK clients for configured nodes.

Everything here blocks; callers run it on the Docker thread pool
(:class:`ccserver.threads.ThreadPoolService`), never on the reactor thread.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import urlsplit

import docker
from docker.errors import TLSParameterError
from docker.tls import TLSConfig
from docker.transport import UnixHTTPAdapter
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


#: connections kept open to one engine over its unix socket: every thread that may call it at
#: once (the Docker, pull, look-up and health pools) finds one, instead of a new one per call
UNIX_POOL_SIZE = 32


class _OnePoolUnixAdapter(UnixHTTPAdapter):
    """docker-py's unix-socket adapter keys its connection pools by the whole request URL, so
    each container's own URLs (create, start, remove by name) made a new pool and a new
    connection to the engine, and pushed an older pool, its connection closed, out of the 25
    it keeps: a connect and a close per call, on both sides.  Every request goes to the same
    socket, so one pool serves them all (docker-py gives the pool the host ``localhost``,
    whatever the URL)."""

    def get_connection(self, url: Any, proxies: Any = None) -> Any:
        return super().get_connection("http+docker://localhost", proxies)


def _one_pool(client: docker.DockerClient, timeout: int) -> docker.DockerClient:
    """``client`` with :class:`_OnePoolUnixAdapter` mounted where docker-py mounted its own
    (a unix socket only: over TCP requests' adapter keys its pools by host already)."""
    api = client.api
    old = api.adapters.get("http+docker://")
    if isinstance(old, UnixHTTPAdapter):
        adapter = _OnePoolUnixAdapter(old.socket_path, timeout, max_pool_size=UNIX_POOL_SIZE)
        api.mount("http+docker://", adapter)  # requests' Session.mount replaces the old one
        # docker-py falls back on this one for URLs no mount matches
        api._custom_adapter = adapter  # type: ignore[attr-defined]  # docker-py's own attribute, untyped
        old.close()
    return client


class NodeTLSConfig(TLSConfig):
    def __init__(self, assert_hostname: str | bool | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.assert_hostname = assert_hostname

    def configure_client(self, client: Any) -> None:
        super().configure_client(client)
        if self.assert_hostname is not None and self.assert_hostname is not True:
            client.mount("https://", _HostnameAdapter(self.assert_hostname))
        _keep_session_verify(client)


def _keep_session_verify(session: Any) -> None:
    """Make the node's CA win over ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE``.

    requests replaces a request's ``verify=None`` (docker-py never sets it per request) by
    those environment variables *before* it falls back to the session's ``verify``, so on a
    machine that sets them (many do, for the system bundle) the configured ``tls.verify`` CA
    would be ignored and every TLS node refused.  Passing the session's value explicitly keeps
    it; with ``verify = true`` (the system trust store) the environment still applies.
    """
    merge = session.merge_environment_settings

    def merge_environment_settings(url: Any, proxies: Any, stream: Any, verify: Any, cert: Any) -> Any:
        if verify is None and session.verify is not True:
            verify = session.verify
        return merge(url, proxies, stream, verify, cert)

    session.merge_environment_settings = merge_environment_settings


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
        base_url = "https://" + base_url[len("tcp://") :]
    seconds = int(max(1, timeout))
    return _one_pool(docker.DockerClient(base_url=base_url, tls=tls, timeout=seconds, version="auto"), seconds)


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


_SSL_DETAIL = re.compile(
    r"\[SSL: [A-Z0-9_]+\][^\"()]*|certificate verify failed[^\"()]*|hostname '[^']*' doesn't match[^\"()]*"
)


def describe_error(node: NodeConfig, error: BaseException, timeout: float | None = None) -> str:
    """What went wrong talking to ``node``, in words an admin can act on: TLS problems name
    the setting to look at (``tls.verify``, ``tls.assert_hostname``, ``tls.client_cert``)."""
    text = _chain_text(error)
    detail_match = _SSL_DETAIL.search(text)
    detail = detail_match.group(0).strip().rstrip(".") if detail_match else ""
    where = f"Docker engine at {node.base_url}"
    tls = node.tls
    if "mismatch" in text or "doesn't match" in text or "not valid for" in text:
        expected = tls.assert_hostname if tls is not None and isinstance(tls.assert_hostname, str) else None
        host = urlsplit(node.base_url).hostname or node.base_url
        name = f"the name {expected!r} (tls.assert_hostname)" if expected else f"{host} (the host of base_url)"
        return (
            f"TLS error: the certificate of the {where} is not valid for {name} ({detail}); set "
            "tls.assert_hostname to a name the certificate carries, or to false to check the CA only"
        )
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        ca = tls.verify if tls is not None and isinstance(tls.verify, str) else tls.ca_cert if tls else None
        trusted = f"the CA in tls.verify ({ca})" if ca else "the system's trusted CAs"
        return f"TLS error: the certificate of the {where} is not signed by {trusted} ({detail})"
    if any(s in text for s in ("BAD_CERTIFICATE", "CERTIFICATE_REQUIRED", "UNKNOWN_CA", "bad certificate")):
        return f"TLS error: the {where} refused our client certificate (tls.client_cert): {detail or 'refused'}"
    if "WRONG_VERSION_NUMBER" in text or "RECORD_LAYER_FAILURE" in text or "record layer failure" in text:
        return f"TLS error: the {where} does not speak TLS ({detail}); remove its tls section or fix base_url"
    if "HTTP request to an HTTPS server" in text:
        return f"the {where} expects TLS: configure docker.nodes.{node.name}.tls"
    if "SSL" in text and detail:
        return f"TLS error with the {where}: {detail}"
    if isinstance(error, TLSParameterError) or "certificate and key files" in text:
        return f"TLS settings of node {node.name}: {_first_line(str(error))}"
    if isinstance(error, TimeoutError) or "timed out" in text.lower() or "TimeoutError" in text:
        limit = f" within {timeout:g} s (api_timeout)" if timeout else ""
        return f"the {where} did not answer{limit}"
    if (
        "Connection refused" in text
        or "ConnectionRefused" in text
        or "FileNotFoundError" in text
        or "No such file or directory" in text
    ):
        return f"the {where} is not running (nothing listens there): {_first_line(str(error) or text)}"
    return f"the {where} does not answer: {_first_line(str(error) or text)}"


def _chain_text(error: BaseException) -> str:
    parts = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts.append(f"{current.__class__.__name__}: {current}")
        current = current.__cause__ or current.__context__
    return " <- ".join(parts)


def _first_line(text: str) -> str:
    text = text.strip()
    return (text.splitlines()[0] if text else "")[:500]
