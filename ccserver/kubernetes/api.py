"""The Kubernetes REST API under the reactor: Twisted's ``Agent`` (what treq is built on) over
TLS with the cluster's CA and client certificate or bearer token (read again from its file as
it rotates: :mod:`ccserver.kubernetes.tokens`), no thread.

Every call has one deadline, ``api_timeout_seconds``, from the ask to the whole answer
(connection, TLS, headers, body); answers are JSON of a bounded size.  Failures are
:class:`~ccserver.kubernetes.errors.KubeUnavailable` whose message names what to fix: the
setting (``ca_file``, ``token_file``, ``client_cert_file``, ``server``) for TLS and credentials,
the missing RBAC permission for a 403.  The token is never in a message or a log.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.ssl import Certificate, PrivateCertificate, optionsForClientTLS, trustRootFromCertificates
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer, IPolicyForHTTPS, IResponse
from zope.interface import implementer

from ccserver.config import KubeClusterConfig
from ccserver.http_body import read_bounded
from ccserver.kubernetes.credentials import Credentials, setting, token_text
from ccserver.kubernetes.errors import KubeAPIError, KubeUnavailable
from ccserver.kubernetes.tokens import TokenSource
from ccserver.livelogs.engine_http import BodyStream
from ccserver.metrics import Metrics

#: the largest JSON answer read (a list of Jobs or pods of one daemon)
MAX_JSON_BYTES = 32 * 1024 * 1024


class _Expired(Exception):
    """A call's deadline passed (it was cancelled)."""


@implementer(IPolicyForHTTPS)
class _ClusterTLS:
    """The cluster's CA as the only trust root, the server's name (or IP address, checked
    against the certificate's IP SANs) verified through service-identity, our client
    certificate when we have one."""

    def __init__(self, credentials: Credentials) -> None:
        roots = [
            Certificate.loadPEM(c.public_bytes(Encoding.PEM))
            for c in x509.load_pem_x509_certificates(credentials.ca_pem)
        ]
        client = None
        if credentials.cert_pem and credentials.key_pem:
            client = PrivateCertificate.loadPEM(credentials.cert_pem + b"\n" + credentials.key_pem)
        host = urlsplit(credentials.server).hostname or ""
        self._creator = optionsForClientTLS(host, trustRoot=trustRootFromCertificates(roots), clientCertificate=client)

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:  # noqa: N802 (Twisted's name)
        return self._creator


@implementer(IBodyProducer)
class _Bytes:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.length = len(data)

    def startProducing(self, consumer: Any) -> Deferred[None]:  # noqa: N802 (Twisted's name)
        consumer.write(self.data)
        return succeed(None)

    def pauseProducing(self) -> None:  # noqa: N802
        pass

    def resumeProducing(self) -> None:  # noqa: N802
        pass

    def stopProducing(self) -> None:  # noqa: N802
        pass


_FORBIDDEN = re.compile(
    r'cannot (?P<verb>[\w-]+) resource "(?P<resource>[^"]+)"(?: in API group "(?P<group>[^"]*)")?'
    r'(?: in the namespace "(?P<namespace>[^"]+)"| at the cluster scope)?'
)


def forbidden_text(message: str) -> str:
    """The RBAC permission a 403's Status message says is missing, in words."""
    m = _FORBIDDEN.search(message)
    if not m:
        return message
    resource = m["resource"] + (f" (API group {m['group']})" if m["group"] else "")
    where = f"in namespace {m['namespace']}" if m["namespace"] else "cluster-wide (a ClusterRole)"
    return f"missing RBAC permission: verb {m['verb']} on {resource} {where} ({message})"


class KubeAPI:
    """One cluster's API server: JSON calls with a deadline, and streamed answers (watches)."""

    def __init__(
        self,
        config: KubeClusterConfig,
        reactor: Any,
        credentials: Credentials,
        agent: Any = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self.reactor = reactor
        self.credentials = credentials
        self.timeout = config.api_timeout_seconds
        self.metrics = metrics
        self.pool: HTTPConnectionPool | None = None
        if agent is None:
            self.pool = HTTPConnectionPool(reactor, persistent=True)
            self.pool.maxPersistentPerHost = 8
            agent = Agent(reactor, contextFactory=_ClusterTLS(credentials), pool=self.pool, connectTimeout=self.timeout)
        self.agent = agent
        self._base = credentials.server.rstrip("/")
        self.tokens: TokenSource | None = None
        if credentials.token:
            self.tokens = TokenSource(
                credentials.token, credentials.token_file, credentials.where("token"), reactor, token_text
            )

    # --- calls -------------------------------------------------------------------------

    async def call(
        self,
        operation: str,
        method: str,
        path: str,
        query: dict[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        limit: int = MAX_JSON_BYTES,
        raw: bool = False,
    ) -> Any:
        """The JSON answer (``raw``: the bytes) of one call; an error status raises
        :class:`KubeAPIError` (401/403 with the setting or permission named)."""
        started = self.reactor.seconds()
        failure = None
        try:
            return await self._within(ensureDeferred(self._call(method, path, query, body, content_type, limit, raw)))
        except _Expired:
            failure = "timeout"
            raise KubeUnavailable(self._late(operation)) from None
        except KubeAPIError as e:
            failure = "refused" if e.status in (401, 403) else "status" if e.status >= 500 else None
            raise
        except KubeUnavailable:
            failure = "error"
            raise
        except Exception as e:
            failure = "error"
            raise KubeUnavailable(self.describe(e)) from None
        finally:
            if self.metrics is not None:
                self.metrics.kube_call(operation, self.config.name, self.reactor.seconds() - started, failure)

    async def _within(self, work: Deferred[Any], seconds: float | None = None) -> Any:
        """``work``'s result, or :class:`_Expired` once it was cancelled at the deadline
        (whatever the cancelled work raised then: the Agent wraps its CancelledError)."""
        expired: list[bool] = []

        def expire() -> None:
            expired.append(True)
            work.cancel()

        timer = self.reactor.callLater(self.timeout if seconds is None else seconds, expire)
        try:
            return await work
        except Exception:
            if expired:
                raise _Expired() from None
            raise
        finally:
            if timer.active():
                timer.cancel()

    def _late(self, operation: str) -> str:
        return (
            f"the API server at {self._base} did not answer {operation} within {self.timeout:g} s "
            f"({setting(self.config, 'api_timeout_seconds')})"
        )

    async def _call(
        self, method: str, path: str, query: dict[str, Any] | None, body: Any, content_type: str, limit: int, raw: bool
    ) -> Any:
        for retry in (True, False):
            producer = None
            headers = self._headers()
            if body is not None:
                producer = _Bytes(json.dumps(body).encode())
                headers.setRawHeaders(b"content-type", [content_type.encode("ascii")])
            response = await self.agent.request(method.encode("ascii"), self._url(path, query), headers, producer)
            data = await read_body(response, limit)
            if response.code == 401 and retry and self.tokens is not None and await self.tokens.refresh():
                continue  # the token file holds a new token (the old one expired): once more with it
            break
        if response.code >= 300:
            raise self.status_error(response.code, data)
        if raw:
            return data
        try:
            return json.loads(data)
        except ValueError:
            raise KubeUnavailable(f"the API server at {self._base} answered {path} with something not JSON") from None

    async def open_stream(self, path: str, query: dict[str, Any], on_data: Callable[[bytes], None]) -> BodyStream:
        """A streamed answer (a watch): its headers within the deadline, then its bytes to
        ``on_data`` as they come, for as long as the server sends them."""
        try:
            response = await self._within(self.agent.request(b"GET", self._url(path, query), self._headers(), None))
            if response.code >= 300:
                if response.code == 401 and self.tokens is not None:
                    self.tokens.refresh()  # the watch's next connection uses a rotated token
                raise self.status_error(response.code, await self._within(read_body(response, 65536)))
        except _Expired:
            raise KubeUnavailable(self._late("a streamed request")) from None
        except KubeUnavailable:
            raise
        except Exception as e:
            raise KubeUnavailable(self.describe(e)) from None
        stream = BodyStream(on_data, "application/json")
        response.deliverBody(stream)
        return stream

    async def read_stream(
        self, operation: str, path: str, query: dict[str, Any], on_data: Callable[[bytes], None]
    ) -> None:
        """A whole streamed answer (a pod's log) to ``on_data``, within the call's deadline."""
        started = self.reactor.seconds()
        failure: str | None = "error"
        try:
            stream = await self.open_stream(path, query, on_data)
            remaining = max(0.001, started + self.timeout - self.reactor.seconds())
            timer = self.reactor.callLater(remaining, stream.close)
            clean = await stream.ended
            if not timer.active():
                failure = "timeout"
                raise KubeUnavailable(
                    f"the API server at {self._base} did not send the whole {operation} within {self.timeout:g} s "
                    f"({setting(self.config, 'api_timeout_seconds')})"
                )
            timer.cancel()
            if not clean:
                raise KubeUnavailable(f"the API server at {self._base} broke off {operation}")
            failure = None
        except KubeAPIError as e:
            failure = "refused" if e.status in (401, 403) else "status" if e.status >= 500 else None
            raise
        finally:
            if self.metrics is not None:
                self.metrics.kube_call(operation, self.config.name, self.reactor.seconds() - started, failure)

    async def close(self) -> None:
        """Close the persistent connections."""
        if self.pool is not None:
            await self.pool.closeCachedConnections()

    # --- pieces ------------------------------------------------------------------------

    def _url(self, path: str, query: dict[str, Any] | None) -> bytes:
        return (self._base + path + ("?" + urlencode(query) if query else "")).encode("ascii")

    def _headers(self) -> Headers:
        headers = Headers({b"accept": [b"application/json"], b"user-agent": [b"ccserver"]})
        if self.tokens is not None:
            self.tokens.refresh_if_due()
            headers.setRawHeaders(b"authorization", [b"Bearer " + self.tokens.token.encode("ascii")])
        return headers

    def status_error(self, code: int, body: bytes) -> KubeAPIError:
        """The exception of an error answer, from its Status object (kind Status)."""
        try:
            status = json.loads(body)
            message, reason = str(status.get("message", "")), str(status.get("reason", ""))
        except (ValueError, AttributeError):
            message, reason = body[:300].decode("utf-8", "replace"), ""
        if code == 401:
            part = "token" if self.credentials.token else "cert"
            what = "token" if part == "token" else "client certificate"
            return KubeAPIError(
                f"{self.credentials.where(part)}: the API server at {self._base} does not accept this {what} "
                "(401 Unauthorized)",
                code,
                reason,
            )
        if code == 403:
            return KubeAPIError(f"kubernetes.clusters.{self.config.name}: {forbidden_text(message)}", code, reason)
        return KubeAPIError(f"the API server at {self._base} answered {code} {reason}: {message}".strip(), code, reason)

    def describe(self, error: BaseException) -> str:
        """What went wrong before any answer, naming the setting to look at."""
        text = _failure_text(error)
        if "certificate verify failed" in text or "CERTIFICATE_VERIFY_FAILED" in text:
            return (
                f"{self.credentials.where('ca')}: the API server's certificate is not signed by this CA "
                f"(server {self._base}: certificate verify failed)"
            )
        if "VerificationError" in text or "doesn't match" in text or "Certificate does not match" in text:
            host = urlsplit(self._base).hostname
            return (
                f"{self.credentials.where('server')}: the API server's certificate is not valid for {host} "
                "(neither a DNS name nor an IP address in its subject alternative names)"
            )
        if any(s in text for s in ("BAD_CERTIFICATE", "CERTIFICATE_REQUIRED", "UNKNOWN_CA", "bad certificate")):
            return f"{self.credentials.where('cert')}: the API server at {self._base} refused our client certificate"
        if "WRONG_VERSION_NUMBER" in text or "record layer failure" in text or "RECORD_LAYER_FAILURE" in text:
            return f"{self.credentials.where('server')}: {self._base} does not speak TLS"
        if "ConnectionRefused" in text or "Connection refused" in text:
            return f"{self.credentials.where('server')}: nothing listens at {self._base} (connection refused)"
        if "DNSLookupError" in text:
            return f"{self.credentials.where('server')}: the host of {self._base} is not known (DNS lookup failed)"
        if "TimeoutError" in text or "timed out" in text.lower():
            return f"the API server at {self._base} did not answer within {self.timeout:g} s"
        return f"the API server at {self._base} does not answer: {text[:300]}"


def read_body(response: IResponse, limit: int) -> Deferred[bytes]:
    return read_bounded(response, limit, lambda text: KubeUnavailable(f"the API server's {text}"))


def _failure_text(error: BaseException) -> str:
    """The class names and messages of ``error``, its causes and (for the Agent's
    ``ResponseNeverReceived`` and friends) the failures it carries."""
    parts: list[str] = []
    todo: list[BaseException] = [error]
    while todo and len(parts) < 20:
        current = todo.pop()
        parts.append(f"{current.__class__.__name__}: {current}")
        for reason in getattr(current, "reasons", None) or ():
            if isinstance(reason, Failure) and isinstance(reason.value, BaseException):
                todo.append(reason.value)
        nested = current.__cause__ or current.__context__
        if nested is not None:
            todo.append(nested)
    return " <- ".join(parts)
