"""A refused connection on a TLS listener: the site answers "refuse" (``None``), which
Twisted's TLS wrapper cannot take; ``WebService`` puts the site behind ``RefusingFactory``.
In-process (a real TLS listener on a real socket, a real TLS client in a thread), because
refusal needs a connection that is busy for as long as the test wants."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import pytest
import pytest_twisted
import trustme
from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from ccserver.web.connections import Budget
from ccserver.web.service import WebService
from ccserver.web.site import CCSite, Limits


class Hanging(Resource):
    """Never answers: the connection stays busy (a request being processed)."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0
        self.waiting: list = []

    def render_GET(self, request):  # type: ignore[no-untyped-def]
        self.seen += 1
        self.waiting.append(request)
        request.notifyFinish().addErrback(lambda _: self.waiting.remove(request))
        return NOT_DONE_YET


def client_side(port: int, context: ssl.SSLContext) -> tuple[bytes, str]:
    """A busy connection, then a second one from the same address: what the second saw."""
    busy = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5), server_hostname="localhost")
    try:
        busy.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        busy.settimeout(0.5)
        with pytest.raises(TimeoutError):
            busy.recv(1)  # no answer: it is being processed
        try:
            # the refusal (a reset) may come before connect() returns, when this thread is
            # scheduled late: a refusal all the same
            raw = socket.create_connection(("127.0.0.1", port), timeout=5)
            second = context.wrap_socket(raw, server_hostname="localhost")
        except (ssl.SSLError, ConnectionResetError, OSError) as e:
            return b"", type(e).__name__  # refused during the TCP or the TLS handshake
        with second:
            try:
                return second.recv(1), "connected"
            except (ssl.SSLError, ConnectionResetError) as e:
                return b"", type(e).__name__
    finally:
        busy.close()


@pytest_twisted.ensureDeferred
async def test_a_refused_tls_connection_is_closed_and_the_listener_keeps_working(tmp_path: Path) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost")
    leaf.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    hanging = Hanging()
    site = CCSite(
        hanging,
        max_body_bytes=1000,
        limits=Limits(budget=Budget(10, 20, 10), max_connections_per_client=1),
        reactor=reactor,
    )
    web = WebService(reactor, site, 1.0)
    await web.listen((f"ssl:0:interface=127.0.0.1:privateKey={tmp_path}/key.pem:certKey={tmp_path}/cert.pem",))
    port = web.bound()[0][1]
    try:
        data, how = await deferToThread(client_side, port, context)
        assert data == b"", how  # closed, without an answer, during or right after the handshake
        assert site.connections.live() <= 1
        assert hanging.seen == 1  # only the busy connection got through
    finally:
        for request in hanging.waiting:
            request.finish()
        await web.stopService()
