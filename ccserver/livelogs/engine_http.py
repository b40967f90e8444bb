"""HTTP to a Docker engine under the reactor, without a thread: Twisted's ``Agent`` over the
node's endpoint (a unix socket, TCP, or TLS with the node's client certificate), as
:func:`ccserver.cluster.engine.make_client` configures the Docker SDK for the same node.

Only what following logs needs: small JSON answers (:meth:`EngineHTTP.get_json`) and
streamed bodies (:meth:`EngineHTTP.stream`), each with a deadline for the answer's headers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from OpenSSL import SSL
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.internet.ssl import Certificate, CertificateOptions, PrivateCertificate, optionsForClientTLS, platformTrust
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IAgentEndpointFactory, IResponse
from zope.interface import implementer

from ccserver.config import NodeConfig
from ccserver.http_body import read_bounded

#: the largest JSON answer read (a container's inspection, the list of running containers)
MAX_JSON_BYTES = 16 * 1024 * 1024


class EngineError(Exception):
    """The engine answered with an error status, or not at all."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class TLSMaterial:
    """The PEM files of a node's TLS settings, read (off the reactor) once."""

    ca: bytes | None
    cert: bytes | None
    key: bytes | None


def read_tls_material(node: NodeConfig) -> TLSMaterial | None:
    """Blocking (file reads): run on a thread."""
    tls = node.tls
    if tls is None:
        return None
    ca_path = tls.verify if isinstance(tls.verify, str) else tls.ca_cert

    def read(path: str | None) -> bytes | None:
        if not path:
            return None
        with open(path, "rb") as f:
            return f.read()

    cert, key = tls.client_cert if tls.client_cert else (None, None)
    return TLSMaterial(ca=read(ca_path), cert=read(cert), key=read(key))


@implementer(IOpenSSLClientConnectionCreator)
class _CAOnly:
    """TLS that checks the certificate chain (or nothing, with ``verify = false``) but not the
    name: ``tls.assert_hostname = false``, as the Docker SDK client does."""

    def __init__(self, options: CertificateOptions) -> None:
        self._context = options.getContext()

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:  # noqa: N802 (Twisted's name)
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tlsProtocol)
        return connection


def connection_creator(node: NodeConfig, material: TLSMaterial) -> Any:
    """The client TLS settings of ``node``: its CA (``tls.verify`` as a file, or ``ca_cert``;
    the system's with ``verify = true``), its client certificate, its host name check."""
    tls = node.tls
    assert tls is not None
    client = None
    if material.cert and material.key:
        client = PrivateCertificate.loadPEM(material.cert + b"\n" + material.key)
    trust = Certificate.loadPEM(material.ca) if material.ca else None
    roots = trust if trust is not None else platformTrust()
    mine: dict[str, Any] = {}
    if client is not None:
        mine = {"privateKey": client.privateKey.original, "certificate": client.original}
    if tls.verify is False:
        return _CAOnly(CertificateOptions(verify=False, **mine))
    if tls.assert_hostname is False:
        return _CAOnly(CertificateOptions(trustRoot=roots, **mine))
    name = tls.assert_hostname if isinstance(tls.assert_hostname, str) else urlsplit(node.base_url).hostname or ""
    return optionsForClientTLS(name, trustRoot=roots, clientCertificate=client)


@implementer(IAgentEndpointFactory)
class _NodeEndpoints:
    def __init__(self, reactor: Any, node: NodeConfig, material: TLSMaterial | None, timeout: float) -> None:
        self.reactor, self.node, self.material, self.timeout = reactor, node, material, timeout
        self._creator = connection_creator(node, material) if node.tls is not None and material is not None else None

    def endpointForURI(self, uri: Any) -> IStreamClientEndpoint:  # noqa: N802 (Twisted's name)
        url = urlsplit(self.node.base_url)
        if url.scheme == "unix":
            return UNIXClientEndpoint(self.reactor, url.path, timeout=self.timeout)
        default = 2376 if self._creator is not None or url.scheme == "https" else 2375
        endpoint = HostnameEndpoint(self.reactor, url.hostname or "localhost", url.port or default, self.timeout)
        if self._creator is not None:
            return wrapClientTLS(self._creator, endpoint)
        return endpoint


class EngineHTTP:
    """One node's engine API.  Connections are not pooled: each request is its own
    connection, closed when its answer is read (a followed log holds one while it runs)."""

    def __init__(self, reactor: Any, node: NodeConfig, material: TLSMaterial | None, timeout: float) -> None:
        self.reactor = reactor
        self.node = node
        self.timeout = timeout
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.agent = Agent.usingEndpointFactory(reactor, _NodeEndpoints(reactor, node, material, timeout), pool=pool)

    def _request(self, path: str, query: dict[str, Any]) -> Deferred[IResponse]:
        url = "http://docker" + path + ("?" + urlencode(query) if query else "")
        d = self.agent.request(b"GET", url.encode("ascii"))
        d.addTimeout(self.timeout, self.reactor)
        return d

    async def get_json(self, path: str, query: dict[str, Any] | None = None) -> Any:
        response = await self._request(path, query or {})
        body = await _read_all(response, MAX_JSON_BYTES, self.reactor, self.timeout)
        if response.code >= 300:
            raise EngineError(_message(body, response.code), response.code)
        return json.loads(body)

    async def stream(self, path: str, query: dict[str, Any], on_data: Callable[[bytes], None]) -> BodyStream:
        """Open a streamed answer; ``on_data`` gets its bytes as they come.  The returned
        :class:`BodyStream` says when it ends and can be closed."""
        response = await self._request(path, query)
        if response.code >= 300:
            body = await _read_all(response, 65536, self.reactor, self.timeout)
            raise EngineError(_message(body, response.code), response.code)
        reader = BodyStream(on_data, response.headers.getRawHeaders(b"content-type", [b""])[0].decode("latin-1"))
        response.deliverBody(reader)
        return reader


def container_path(name: str, what: str) -> str:
    return f"/containers/{quote(name, safe='')}/{what}"


class BodyStream(Protocol):
    """A streamed answer being read: :attr:`ended` fires with True when the engine ended it
    (the container ended), False when the connection broke or was closed by :meth:`close`."""

    def __init__(self, on_data: Callable[[bytes], None], content_type: str) -> None:
        self.on_data = on_data
        self.content_type = content_type
        self.ended: Deferred[bool] = Deferred()
        self.closed = False
        self.open = True

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted's name)
        if not self.closed:
            self.on_data(data)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]  # noqa: N802
        self.open = False
        clean = reason is not None and reason.check(ResponseDone, PotentialDataLoss) is not None
        if not self.ended.called:
            self.ended.callback(clean and not self.closed)

    def close(self) -> None:
        """Stop reading and close the connection."""
        self.closed = True
        if self.open and self.transport is not None:
            self.transport.stopProducing()  # type: ignore[attr-defined]  # a producer: the body's transport


async def _read_all(response: IResponse, limit: int, reactor: Any, timeout: float) -> bytes:
    done = read_bounded(response, limit, EngineError)
    done.addTimeout(timeout, reactor)
    return await done


def _message(body: bytes, status: int) -> str:
    try:
        return f"{status}: {json.loads(body).get('message', '')}"
    except (ValueError, AttributeError):
        return f"{status}: {body[:200].decode('utf-8', 'replace')}"
