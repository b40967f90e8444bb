"""HTTP notifications: a task ended (cc-protocol.md §8.7), a node died (§8.9).

A notification is a JSON ``POST`` to a URL the user (or the admin) gave, with optional basic or
digest authentication.  Delivery is best effort and must never disturb the scheduler, so
:meth:`Notifier.send` returns a Deferred that never fails: it fires with a :class:`Delivery`
saying what happened, and failures are logged (without the password or the ``Authorization``
header).

Retries: connection errors, timeouts and ``5xx`` answers are retried with exponential back-off
through the injected clock; ``4xx`` (and other non-2xx) answers and TLS certificate failures are
not, as sending the same request again would get the same answer.  Each try is bounded by
``timeout`` (connecting, sending and reading the answer), so one ``send`` lasts at most
``(retries + 1) * timeout`` plus the back-off delays (1 + 2 + 4 s with the defaults).

Destinations: a notification URL is fetched from the daemon's network, so whoever submits a
task chooses where the daemon sends a request.  ``[notifications] allowed_networks`` and
``allowed_hosts`` restrict that (see :mod:`ccserver.destinations`); the same rule applies to
the admin's ``dead_node_notification``.  A refused notification is logged and not sent.

``ssl_verify=False`` (as in 0.10, for receivers with self-signed certificates) uses a client whose
TLS accepts ANY certificate: the notification is still encrypted, but anyone able to intercept
the connection can pose as the receiver and read it, credentials included.  Prefer giving the
receiver a certificate from a CA the server trusts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import unquote, urlsplit, urlunsplit

from OpenSSL import SSL
from service_identity import VerificationError
from treq.client import HTTPClient
from twisted.internet import error as net_error
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredList,
    ensureDeferred,
    gatherResults,
    succeed,
)
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IReactorTime
from twisted.internet.ssl import CertificateOptions
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    RequestTransmissionFailed,
    ResponseFailed,
)
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from ccserver.destinations import CheckedEndpointFactory, DestinationRefused, Destinations
from ccserver.documents import MASK
from ccserver.httpauth import DigestError, digest_authorization, find_digest_challenge
from ccserver.metrics import Metrics

log = Logger()

AUTH_TYPES = ("basic", "digest")


@dataclass(frozen=True)
class Delivery:
    """What became of one notification.

    ``url`` is shown without user info and query (they may hold secrets); ``status`` is the last
    HTTP status received (``None`` when none was); ``error`` says why it was not delivered.
    """

    url: str
    delivered: bool
    status: int | None
    attempts: int
    error: str | None = None


# --- TLS without verification -----------------------------------------------------------------


@implementer(IOpenSSLClientConnectionCreator)
class _UnverifiedConnectionCreator:
    """TLS that accepts any certificate, still sending SNI so that virtual hosts answer."""

    def __init__(self, hostname: bytes, context: SSL.Context) -> None:
        self._hostname = hostname
        self._context = context

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:  # noqa: N802 (interface name)
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tlsProtocol)
        if not _is_ip(self._hostname):
            connection.set_tlsext_host_name(self._hostname)
        connection.set_connect_state()
        return connection


def _is_ip(host: bytes) -> bool:
    text = host.decode("ascii", "replace")
    return isIPAddress(text) or isIPv6Address(text)


@implementer(IPolicyForHTTPS)
class InsecurePolicyForHTTPS:
    """An HTTPS policy that does NOT verify the server's certificate (``ssl_verify = false``).

    Dangerous by design (see the module docstring); used only when a notification asks for it.
    """

    def __init__(self) -> None:
        self._context = CertificateOptions(verify=False).getContext()

    def creatorForNetloc(self, hostname: bytes, port: int) -> _UnverifiedConnectionCreator:  # noqa: N802
        return _UnverifiedConnectionCreator(hostname, self._context)


# --- the notifier ------------------------------------------------------------------------------


class Notifier:
    """Sends notifications; one per server, shared by the scheduler and the dead-node checks.

    ``clock`` (default: the reactor) times the tries and the back-off; ``http_client`` replaces
    both real clients (a :class:`treq.testing.StubTreq` in unit tests); ``https_policy`` is the
    policy for verified HTTPS (default: the platform's trust store); ``destinations`` the
    rule of where notifications may go (default: anywhere, as 0.10).
    """

    def __init__(
        self,
        reactor: Any,
        clock: IReactorTime | None = None,
        http_client: Any = None,
        *,
        https_policy: IPolicyForHTTPS | None = None,
        backoff_seconds: float = 1.0,
        max_backoff_seconds: float = 30.0,
        make_cnonce: Callable[[], str] = lambda: os.urandom(16).hex(),
        destinations: Destinations = Destinations(),
        metrics: Metrics | None = None,
    ) -> None:
        #: counts notifications (delivered or not) and their tries
        self.metrics = metrics if metrics is not None else Metrics()
        self._clock: IReactorTime = clock if clock is not None else reactor
        if http_client is None:
            # not persistent: notifications are rare, and an idle pool would hold sockets open
            pool = HTTPConnectionPool(reactor, persistent=False)
            policy = https_policy if https_policy is not None else BrowserLikePolicyForHTTPS()

            def agent(tls: IPolicyForHTTPS) -> Agent:
                if not destinations.restricted:
                    return Agent(reactor, contextFactory=tls, pool=pool)
                return Agent.usingEndpointFactory(reactor, CheckedEndpointFactory(reactor, destinations, tls), pool)

            self._verified = HTTPClient(agent(policy))
            self._unverified = HTTPClient(agent(InsecurePolicyForHTTPS()))
        else:
            self._verified = self._unverified = http_client
        self._backoff = backoff_seconds
        self._max_backoff = max_backoff_seconds
        self._make_cnonce = make_cnonce
        self._in_flight: set[Deferred[Delivery]] = set()

    # public API

    def send(
        self,
        url: str | None,
        json_data: Any,
        auth: Any = None,
        ssl_verify: bool = True,
        timeout: float = 10.0,
        retries: int = 3,
    ) -> Deferred[Delivery]:
        """POST ``json_data`` to ``url``; the Deferred never fails (see the module docstring).

        ``auth`` is ``None``, a :class:`ccserver.config.HTTPAuth` or a mapping with ``auth_type``
        (``basic`` or ``digest``), ``username`` and ``password``.  ``json_data=None`` sends an
        empty body, as 0.10 did.
        """
        where = redact_url(url) if isinstance(url, str) else repr(url)
        d = ensureDeferred(self._send(url, where, json_data, auth, ssl_verify, timeout, max(0, retries)))
        d.addErrback(self._unexpected, where)
        self._in_flight.add(d)

        def done(result: Delivery) -> Delivery:
            self._in_flight.discard(d)
            self.metrics.notification(result.delivered, result.attempts)
            return result

        return d.addCallback(done)

    def notify_task(self, task: Mapping[str, Any]) -> Deferred[list[Delivery]]:
        """Send each of ``task["notifications"]``; fires when all are done (never fails).

        Pass the task document as it was before its secrets were masked (cc-protocol.md §3), or
        the receivers get ``**********`` as password.
        """
        sends = []
        for entry in task.get("notifications") or ():
            if not isinstance(entry, Mapping):
                continue
            access = entry.get("connector_access") or {}
            data = access.get("json_data")
            if entry.get("add_meta_data"):
                data = {**(data if isinstance(data, Mapping) else {}), "task_id": _hex(task.get("_id"))}
            sends.append(
                self.send(access.get("url"), data, auth=access.get("auth"), ssl_verify=access.get("ssl_verify", True))
            )
        return gatherResults(sends) if sends else succeed([])

    def notify_dead_node(self, notification: Any, node_name: str) -> Deferred[Delivery | None]:
        """POST ``{"name": node_name}`` to ``[defaults.error_handling.dead_node_notification]``, if set."""
        if notification is None:
            return succeed(None)
        sent = self.send(
            notification.url, {"name": node_name}, auth=notification.auth, ssl_verify=notification.ssl_verify
        )
        return cast("Deferred[Delivery | None]", sent)  # Deferred is invariant: a Delivery is a Delivery | None

    def stop(self) -> Deferred[Any]:
        """Cancel the notifications in flight (each then fires as not delivered); fires when they have."""
        pending = list(self._in_flight)
        for d in pending:
            d.cancel()
        return DeferredList(pending, consumeErrors=True)

    # the work

    async def _send(
        self, url: Any, where: str, json_data: Any, auth: Any, ssl_verify: bool, timeout: float, retries: int
    ) -> Delivery:
        try:
            target, credentials = _prepare(url, auth)
            body = b"" if json_data is None else json.dumps(json_data).encode("utf-8")
        except (ValueError, TypeError) as e:
            log.error("notification to {url} not sent: {reason}", url=where, reason=str(e))
            return Delivery(where, False, None, 0, str(e))
        password = credentials[2] if credentials else None
        client = self._verified if ssl_verify else self._unverified
        status: int | None = None
        reason = ""
        attempts = 0
        for attempt in range(retries + 1):
            if attempt:
                delay = min(self._backoff * 2 ** (attempt - 1), self._max_backoff)
                try:
                    await deferLater(self._clock, delay, lambda: None)
                except CancelledError:
                    return self._failed(where, status, attempts, "cancelled", password)
            attempts += 1
            timed_out = False
            d = ensureDeferred(self._exchange(client, target, body, credentials))

            def give_up(d: Deferred[int] = d) -> None:
                nonlocal timed_out
                timed_out = True
                d.cancel()

            timer = self._clock.callLater(timeout, give_up)
            try:
                status = await d
            except DigestError as e:
                return self._failed(where, 401, attempts, f"digest authentication: {e}", password)
            except DestinationRefused as e:
                log.warn("notification to {url} refused, not sent: {reason}", url=where, reason=str(e))
                return Delivery(where, False, None, attempts, str(e))
            except Exception as e:  # a notification must never fail its caller
                if timed_out:
                    reason, retry = f"no answer within {timeout:g} s", True
                elif _is_cancel(e):  # stop(): the Agent wraps the CancelledError it was given
                    return self._failed(where, status, attempts, "cancelled", password)
                else:
                    reason, retry = _describe(e), _retryable(e)
            else:
                if 200 <= status < 300:
                    log.info("notification to {url} delivered ({status})", url=where, status=status)
                    return Delivery(where, True, status, attempts)
                reason, retry = f"HTTP {status}", status >= 500
            finally:
                if timer.active():
                    timer.cancel()
            if not retry:
                break
            log.info(
                "notification to {url}: {reason}, try {n} of {m}",
                url=where,
                reason=_scrub(reason, password),
                n=attempts,
                m=retries + 1,
            )
        return self._failed(where, status, attempts, reason, password)

    async def _exchange(self, client: Any, url: str, body: bytes, credentials: tuple[str, str, str] | None) -> int:
        """One try: the request, and for digest the second request answering the challenge."""
        headers = {b"Content-Type": [b"application/json"]} if body else {}
        kwargs: dict[str, Any] = {"headers": headers, "allow_redirects": False}
        if credentials and credentials[0] == "basic":
            kwargs["auth"] = (credentials[1], credentials[2])
        response = await client.post(url, data=body, **kwargs)
        await response.content()  # read the answer, so the connection is done with
        if response.code == 401 and credentials and credentials[0] == "digest":
            challenge = find_digest_challenge(response.headers.getRawHeaders(b"www-authenticate", []))
            if challenge is None:
                return int(response.code)
            authorization = digest_authorization(
                challenge,
                "POST",
                _request_target(url),
                credentials[1],
                credentials[2],
                cnonce=self._make_cnonce(),
                body=body,
            )
            kwargs["headers"] = {**headers, b"Authorization": [authorization.encode("utf-8")]}
            response = await client.post(url, data=body, **kwargs)
            await response.content()
        return int(response.code)

    def _failed(self, where: str, status: int | None, attempts: int, reason: str, password: str | None) -> Delivery:
        reason = _scrub(reason, password)
        log.warn(
            "notification to {url} failed after {attempts} tries: {reason}", url=where, attempts=attempts, reason=reason
        )
        return Delivery(where, False, status, attempts, reason)

    def _unexpected(self, failure: Failure, where: str) -> Delivery:
        # only reached through a bug (or a cancel racing the start); still, never fail the caller
        if not failure.check(CancelledError):
            log.failure("notification to {url}: unexpected error", failure, url=where)
        return Delivery(where, False, None, 0, failure.getErrorMessage() or failure.type.__name__)


# --- helpers ---------------------------------------------------------------------------------


def redact_url(url: str) -> str:
    """``url`` without user info and query, for logs: both may carry secrets."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = host + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    except ValueError:
        return "<invalid url>"


def _prepare(url: Any, auth: Any) -> tuple[str, tuple[str, str, str] | None]:
    """The URL to request and (auth_type, username, password); credentials in the URL count as basic.

    ``requests`` (used by 0.10) took ``https://user:pass@host/`` as basic authentication, so
    receivers configured that way keep working; the user info is not sent in the URL.
    """
    if not isinstance(url, str) or not url:
        raise ValueError("no url")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an http(s) url")
    credentials = _credentials(auth)
    if parts.username is not None:
        netloc = parts.netloc.rsplit("@", 1)[1]
        url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
        if credentials is None:
            credentials = ("basic", unquote(parts.username), unquote(parts.password or ""))
    return url, credentials


def _credentials(auth: Any) -> tuple[str, str, str] | None:
    if auth is None:
        return None
    get = auth.get if isinstance(auth, Mapping) else lambda key: getattr(auth, key, None)
    auth_type = str(get("auth_type") or "").lower()
    if auth_type not in AUTH_TYPES:
        raise ValueError(f"auth_type must be one of {', '.join(AUTH_TYPES)}")
    username, password = get("username"), get("password")
    if not isinstance(username, str) or not isinstance(password, str):
        raise ValueError("auth needs a username and a password")
    return auth_type, username, password


def _request_target(url: str) -> str:
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def _hex(value: Any) -> str | None:
    return None if value is None else str(value)  # an ObjectId's str() is its hex form


def _scrub(text: str, password: str | None) -> str:
    return text.replace(password, MASK) if password else text


# errors worth another try: the network or the receiver may be back in a moment
_TRANSIENT = (
    net_error.ConnectError,  # refused, unreachable, DNS lookup failed, connect timed out
    net_error.ConnectionClosed,  # and ConnectionLost, ConnectionDone
    ResponseFailed,  # and ResponseNeverReceived: the connection broke before or during the answer
    RequestTransmissionFailed,
)


def _retryable(e: BaseException) -> bool:
    if _is_tls_failure(e):
        return False  # a certificate that failed verification fails again
    return isinstance(e, _TRANSIENT)


def _is_cancel(e: BaseException) -> bool:
    if isinstance(e, CancelledError):
        return True
    return any(isinstance(r, Failure) and _is_cancel(r.value) for r in getattr(e, "reasons", None) or ())


def _is_tls_failure(e: BaseException) -> bool:
    if isinstance(e, SSL.Error | VerificationError):
        return True
    for reason in getattr(e, "reasons", None) or ():
        if isinstance(reason, Failure) and _is_tls_failure(reason.value):
            return True
    return False


def _describe(e: BaseException) -> str:
    reasons = getattr(e, "reasons", None)
    if reasons:
        inner = "; ".join(_describe(r.value) if isinstance(r, Failure) else str(r) for r in reasons)
        return f"{type(e).__name__}: {inner}"
    message = str(e)
    return f"{type(e).__name__}: {message}" if message else type(e).__name__


class DeadNodeAnnouncer:
    """Posts ``[defaults.error_handling.dead_node_notification]`` when the cluster finds a node
    dead (a :class:`ccserver.wiring.ClusterListener`)."""

    def __init__(self, notifier: Notifier, notification: Any) -> None:
        self.notifier = notifier
        self.notification = notification

    def node_dead(self, node: str) -> None:
        self.notifier.notify_dead_node(self.notification, node)

    def node_healthy(self, node: str) -> None:
        pass

    def container_died(self, node: str, name: str, code: int, owner: str | None) -> None:
        pass

    def container_running(self, node: str, name: str) -> None:
        pass

    def container_stuck(self, node: str, name: str, reason: str) -> None:
        pass
