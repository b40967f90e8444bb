"""Helpers of the authentication tests: configuration, requests, a counting hash pool."""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.web.test.requesthelper import DummyRequest

from ccserver.auth.passwords import verify_password
from ccserver.config import Config, from_dict
from ccserver.threads import ThreadPoolService

T = TypeVar("T")
WAIT_SECONDS = 30.0


def make_config(*, server: dict[str, Any] | None = None, **authorization: Any) -> Config:
    raw = {"server": server or {}, "defaults": {"authorization": authorization}}
    return from_dict(raw, None, {"HOME": "/nonexistent"})


def basic(username: str, password: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{username}:{password}".encode())


def make_request(
    credentials: tuple[str, str] | bytes | None = None,
    ip: str = "192.0.2.10",
    headers: dict[bytes, list[bytes]] | None = None,
) -> DummyRequest:
    request = DummyRequest([b"tasks"])
    if isinstance(credentials, tuple):
        request.requestHeaders.setRawHeaders(b"authorization", [basic(*credentials)])
    elif credentials is not None:
        request.requestHeaders.setRawHeaders(b"authorization", [credentials])
    for name, values in (headers or {}).items():
        request.requestHeaders.setRawHeaders(name, values)
    request.client = (IPv6Address if ":" in ip else IPv4Address)("TCP", ip, 40000)
    return request


async def within(d: Deferred[T] | Coroutine[Any, Any, T], seconds: float = WAIT_SECONDS) -> T:
    """Wait for ``d`` (a Deferred or a coroutine) on the real reactor, failing the test after
    ``seconds``."""
    from twisted.internet import reactor

    return await ensureDeferred(d).addTimeout(seconds, reactor)


class CountingPool(ThreadPoolService):
    """The real hash pool, counting the PBKDF2 verifications it runs and on which thread."""

    def __init__(self, reactor: Any, size: int = 2) -> None:
        super().__init__(reactor, "password-hash-test", size)
        self.verifications = 0
        self.on_reactor_thread = 0

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        def counted(*a: Any, **k: Any) -> T:
            if threading.current_thread() is threading.main_thread():
                self.on_reactor_thread += 1
            return fn(*a, **k)

        if fn is verify_password:
            self.verifications += 1
        return super().run(counted, *args, **kwargs)
