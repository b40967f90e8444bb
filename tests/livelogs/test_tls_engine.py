"""The follower's HTTP client over mutual TLS, as a TLS node is configured: the real engine
behind a real TLS listener (a relay to the local Docker socket that demands a client
certificate from the test CA), its answers and a container's log stream read through it,
and wrong settings refused.  No store is touched: embedded backend not needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import docker
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.ssl import Certificate, PrivateCertificate
from twisted.internet.threads import deferToThread
from twisted.protocols import portforward

from ccserver.config import NodeConfig, NodeTLS
from ccserver.livelogs.engine_http import EngineHTTP, container_path, read_tls_material
from ccserver.livelogs.stream import LogStreamParser
from tests.cluster.engines import TLSFiles, make_other_ca, make_tls_files

SOCKET = "/var/run/docker.sock"
IMAGE = "ccserver-test/busybox:1"


class _Relay(portforward.ProxyServer):
    """A TLS connection relayed to the Docker socket."""

    def connectionMade(self) -> None:  # noqa: N802 (Twisted's name)
        self.transport.pauseProducing()
        client = self.clientProtocolFactory()
        client.setServer(self)
        reactor.connectUNIX(SOCKET, client)


@pytest.fixture
def tls_engine(tmp_path: Path) -> Any:
    files = make_tls_files(tmp_path / "tls")
    server = PrivateCertificate.loadPEM(Path(files.server_cert).read_bytes() + Path(files.server_key).read_bytes())
    options = server.options(Certificate.loadPEM(Path(files.ca).read_bytes()))  # client certificates required
    factory = portforward.ProxyFactory("unused", 0)
    factory.protocol = _Relay
    port = reactor.listenSSL(0, factory, options, interface="127.0.0.1")
    yield files, port.getHost().port
    port.stopListening()


def node(port: int, files: TLSFiles, **tls: Any) -> NodeConfig:
    settings: dict[str, Any] = {
        "verify": files.ca,
        "client_cert": (files.client_cert, files.client_key),
        "assert_hostname": None,
        "ca_cert": None,
    }
    settings.update(tls)
    return NodeConfig(name="tls", base_url=f"tcp://127.0.0.1:{port}", tls=NodeTLS(**settings))


def client_for(n: NodeConfig) -> EngineHTTP:
    return EngineHTTP(reactor, n, read_tls_material(n), 10)


@pytest_twisted.ensureDeferred
async def test_engine_answers_and_streams_over_mutual_tls(tls_engine: Any, tmp_path: Path) -> None:
    files, port = tls_engine
    for settings in ({}, {"assert_hostname": False}, {"assert_hostname": "127.0.0.1"}):
        version = await client_for(node(port, files, **settings)).get_json("/version")
        assert "ApiVersion" in version, settings

    engine = docker.from_env(timeout=60)
    container = await deferToThread(
        engine.containers.run, IMAGE, ["sh", "-c", "echo one; echo two >&2; echo three"], detach=True
    )
    try:
        await deferToThread(container.wait, timeout=60)
        parser = LogStreamParser()
        seen: list[Any] = []
        http = client_for(node(port, files))
        query = {"follow": 1, "stdout": 1, "stderr": 1, "timestamps": 1}
        stream = await http.stream(container_path(container.id, "logs"), query, lambda d: seen.extend(parser.feed(d)))
        assert await stream.ended is True  # the container had ended: the engine ends the stream
        seen.extend(parser.end())
        assert sorted((line.stream, line.text) for line in seen) == [
            ("stderr", "two"),
            ("stdout", "one"),
            ("stdout", "three"),
        ]
        assert all(line.time_ns > 0 for line in seen)
    finally:
        await deferToThread(container.remove, force=True)
        engine.close()

    # wrong settings are refused: another name, another CA, no client certificate
    other_ca = make_other_ca(tmp_path / "other" / "ca.pem")
    wrong = [
        node(port, files, assert_hostname="somebody-else.test"),
        node(port, files, verify=other_ca),
        node(port, files, client_cert=None),
    ]
    for n in wrong:
        with pytest.raises(Exception):  # noqa: B017, PT011 (the TLS failure's kind varies)
            await client_for(n).get_json("/version")
