"""Connection limits and request hygiene against the real daemon (``twistd -n ccserver``),
over real sockets, with the daemon's open-file limit set to 128 (``RLIMIT_NOFILE``)."""

from __future__ import annotations

import base64
import json
import os
import resource
import select
import socket
import ssl
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from ccserver.testing.daemon import Daemon, daemon_env

REPO = Path(__file__).resolve().parents[2]
OPEN_FILES = 128
IDLE = 2.0
HEAD = 2.0


def limit_open_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES, OPEN_FILES))


@dataclass
class Running:
    daemon: Daemon
    host: str
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def open_files(self) -> int:
        assert self.daemon.process
        return len(os.listdir(f"/proc/{self.daemon.process.pid}/fd"))


@contextmanager
def start(tmp: Path, **server: object) -> Iterator[Running]:
    settings = {
        "host": "http://127.0.0.1:1",
        "listen": ["tcp:0:interface=127.0.0.1"],
        "log_dir": str(tmp / "log"),
        "idle_timeout_seconds": IDLE,
        "header_timeout_seconds": HEAD,
        "body_timeout_seconds": HEAD,
        **server,
    }
    lines = ["[server]"] + [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
    config = tmp / "config.toml"
    config.write_text("\n".join(lines) + "\n")
    daemon = Daemon(["--config", str(config)], env=daemon_env(tmp, REPO), cwd=str(tmp), preexec_fn=limit_open_files)
    with daemon:
        _, host, port = daemon.listening()[0]
        yield Running(daemon, host, port, tmp / "log" / "ccserver.log")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with start(tmp_path_factory.mktemp("daemon"), max_body_bytes=4096) as running:
        yield running


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    closed: bool  # the server closed the connection after the answer

    @property
    def json(self) -> object:
        assert self.headers.get("content-type") == "application/json", self
        return json.loads(self.body)


#: the longest an answer may take to arrive (a loaded machine is slow, not wrong)
ANSWER_TIMEOUT = 30.0


def read_reply(sock: socket.socket, timeout: float) -> Reply:
    """One answer, read until its body is complete (within ``ANSWER_TIMEOUT``); then whether
    the server closes (EOF within ``timeout``)."""
    sock.settimeout(ANSWER_TIMEOUT)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed without an answer after {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in header_lines)}
    if headers.get("transfer-encoding") == "chunked":
        while not body.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        body, length = _unchunk(body), None
    else:
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    closed = False
    sock.settimeout(timeout)
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                closed = True
                break
    except (TimeoutError, ConnectionResetError):
        pass
    return Reply(int(status_line.split()[1]), headers, body[:length], closed)


def _unchunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2 :]
    return out


def connect(server: Running, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection((server.host, server.port), timeout=timeout)


def exchange(server: Running, data: bytes, timeout: float = 3.0) -> Reply:
    with connect(server) as sock:
        sock.sendall(data)
        return read_reply(sock, timeout)


def get_root(server: Running, timeout: float = 5.0) -> tuple[int, object]:
    with urllib.request.urlopen(server.url + "/", timeout=timeout) as answer:
        return answer.status, json.loads(answer.read())


# --- connection limits ---------------------------------------------------------------------


def test_500_idle_connections_do_not_lock_out_a_normal_client(server: Running) -> None:
    held: list[socket.socket] = []
    try:
        for i in range(500):
            sock = connect(server)
            if i % 2:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # a head that never ends (slowloris)
            held.append(sock)
        started = time.monotonic()
        status, body = get_root(server)
        took = time.monotonic() - started
        assert status == 200 and "version" in body  # type: ignore[operator]
        assert took < 5, f"the normal request took {took:.1f} s"
        # the daemon stayed inside its open-file limit: it closed connections to admit others
        assert server.open_files() < OPEN_FILES
        # at most the cap (below 128) is still open; the others were closed (some with a 408
        # for their unfinished head)
        still_open = 0
        for sock in held:
            sock.settimeout(0.01)
            try:
                sock.recv(1)
            except TimeoutError:
                still_open += 1
            except ConnectionResetError:
                pass
        assert still_open < OPEN_FILES, f"{still_open} of 500 held connections are still open"
    finally:
        for sock in held:
            sock.close()
    assert "EMFILE" not in server.daemon.output
    assert "Could not accept" not in server.daemon.output


def test_per_client_cap_closes_the_longest_idle_connection_of_that_client(tmp_path: Path) -> None:
    with start(tmp_path, max_connections_per_client=3) as running:
        idle = [connect(running), connect(running)]
        client = connect(running)
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_reply(client, 0.2).status == 200  # answered: now the last in line
        newcomer = connect(running)  # the fourth from 127.0.0.1: the oldest idle one gives way
        idle[0].settimeout(3)
        assert idle[0].recv(1) == b""
        for sock in (client, newcomer):
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_reply(sock, 0.2).status == 200
        for sock in [*idle, client, newcomer]:
            sock.close()


def test_idle_connections_are_closed_after_the_idle_timeout(server: Running) -> None:
    with connect(server) as quiet, connect(server) as after_answer:
        after_answer.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_reply(after_answer, 0.2).status == 200
        started = time.monotonic()
        for sock in (quiet, after_answer):
            sock.settimeout(IDLE + 5)
            assert sock.recv(1) == b""  # EOF: the daemon closed it
        took = time.monotonic() - started
        assert IDLE - 0.5 < took < IDLE + 5


def test_a_head_sent_slowly_is_answered_408(server: Running) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n")
        started = time.monotonic()
        # a header byte twice a second: the idle timeout alone would never fire
        while not select.select([sock], [], [], 0.5)[0]:
            assert time.monotonic() - started < HEAD + 5, "no answer to a head that never ends"
            sock.sendall(b"X")
        reply = read_reply(sock, 3)
        took = time.monotonic() - started
    assert reply.status == 408
    assert "header_timeout_seconds" in reply.json["error"]  # type: ignore[index]
    assert reply.closed
    assert HEAD - 0.5 < took < HEAD + 3


# --- request size -------------------------------------------------------------------------


def test_declared_terabyte_body_is_refused_at_once(server: Running) -> None:
    with connect(server) as sock:
        sock.sendall(
            b"POST /tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000000000000\r\n\r\n0123456789"
        )
        started = time.monotonic()
        reply = read_reply(sock, 1.5)
        took = time.monotonic() - started
    assert reply.status == 413
    assert "max_body_bytes" in reply.json["error"]  # type: ignore[index]
    assert reply.closed
    assert took < 2


def test_declared_large_body_with_expect_continue_gets_413_not_100(server: Running) -> None:
    reply = exchange(
        server,
        b"POST /tasks HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n",
    )
    assert reply.status == 413
    assert reply.closed


def test_chunked_body_over_the_limit_is_refused_without_reading_it_all(server: Running) -> None:
    with connect(server) as sock:
        sock.sendall(b"POST /tasks HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        sock.sendall(b"1000\r\n" + b"x" * 0x1000 + b"\r\n" + b"10\r\n" + b"y" * 16 + b"\r\n")
        reply = read_reply(sock, 1.5)
    assert reply.status == 413
    assert reply.closed


def test_100kb_header_is_431_json(server: Running) -> None:
    reply = exchange(server, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n")
    assert reply.status == 431
    assert "max_header_bytes" in reply.json["error"]  # type: ignore[index]
    assert reply.closed


def test_many_headers_adding_up_past_the_limit_are_431(server: Running) -> None:
    headers = b"".join(b"X-H%d: %s\r\n" % (i, b"b" * 1000) for i in range(40))
    reply = exchange(server, b"GET / HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert reply.status == 431


def test_100kb_request_line_is_414_json(server: Running) -> None:
    reply = exchange(server, b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.status == 414
    assert "max_header_bytes" in reply.json["error"]  # type: ignore[index]
    assert reply.closed


def test_normal_requests_still_pass_on_a_kept_alive_connection(server: Running) -> None:
    with connect(server) as sock:
        for _ in range(3):
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Fine: " + b"c" * 8000 + b"\r\n\r\n")
            reply = read_reply(sock, 0.2)
            assert reply.status == 200 and not reply.closed
        body = b'{"aggregate": []}'
        sock.sendall(
            b"POST /tasks/query HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        assert read_reply(sock, 0.2).status == 401  # the route is there; no credentials


# --- paths and logs ------------------------------------------------------------------------


@pytest.mark.parametrize("encoded", [b"%2F", b"%2f", b"%5C", b"%5c"])
def test_encoded_separator_in_path_is_404_json(server: Running, encoded: bytes) -> None:
    body = b'{"aggregate": []}'
    reply = exchange(
        server,
        b"POST /tasks%squery HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (encoded, len(body), body),
    )
    assert reply.status == 404
    assert "encoded slash" in reply.json["error"]  # type: ignore[index]


def test_control_characters_from_a_client_do_not_reach_the_log_raw(server: Running) -> None:
    # (no colon: the first one ends the user name)
    forged = "mallory\n2026-01-01T00.00.00+0000 [ccserver.auth#info] login for root\x1b[2J\r\x85\u2028"
    credentials = base64.b64encode(f"{forged}:wrong-password".encode())
    reply = exchange(server, b"GET /token HTTP/1.1\r\nHost: x\r\nAuthorization: Basic " + credentials + b"\r\n\r\n")
    assert reply.status == 401
    # raw control bytes in a request line are refused by Twisted's parser (400, not logged)
    reply = exchange(server, b"GET /tasks/\x9b31m\x1b[2J HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.status == 400
    deadline = time.monotonic() + 10
    while b"failed login for mallory" not in server.log.read_bytes():
        assert time.monotonic() < deadline, "no failed-login line in the log"
        time.sleep(0.1)
    log = server.log.read_bytes()
    for raw in (b"\x1b", b"\r", b"\x9b", b"\x85", "\x85".encode(), "\u2028".encode(), "\x9b".encode()):
        assert raw not in log
    assert b"\n2026-01-01T00.00.00+0000" not in log  # no forged line
    assert b"failed login for mallory\\n2026-01-01T00.00.00+0000 [ccserver.auth#info] login for root" in log
    assert b"\\x1b[2J\\r\\x85\\u2028 from 127.0.0.1" in log


# --- over TLS, and what the daemon said ------------------------------------------------------


def test_over_tls_idle_connections_give_way_and_a_large_body_gets_413(tmp_path: Path) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    leaf.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    listen = f"ssl:0:interface=127.0.0.1:privateKey={tmp_path}/key.pem:certKey={tmp_path}/cert.pem"
    with start(tmp_path, listen=[listen], max_connections_per_client=2) as running:

        def tls() -> ssl.SSLSocket:
            return context.wrap_socket(connect(running), server_hostname="localhost")

        idle = [tls(), tls()]  # handshaken, then silent
        with tls() as sock:  # the third from 127.0.0.1: the oldest idle one gives way
            sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert read_reply(sock, 0.2).status == 200
        idle[0].settimeout(3)
        try:
            assert idle[0].recv(1) == b""
        except (ssl.SSLError, ConnectionResetError):
            pass  # closed without a TLS close_notify: closed all the same
        with tls() as sock:
            sock.sendall(b"POST /tasks HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000000000000\r\n\r\n0123456789")
            reply = read_reply(sock, 1.5)
        assert reply.status == 413
        assert "max_body_bytes" in reply.json["error"]  # type: ignore[index]
        for sock in idle:
            sock.close()
        assert "Traceback" not in running.daemon.output


def test_the_cap_fits_the_open_file_limit_and_nothing_failed(server: Running) -> None:
    # 1024 connections do not fit 128 open files: the daemon said so and holds fewer
    match = server.daemon.wait_for(r"max_connections = 1024 does not fit .* holding at most (\d+) connections")
    assert int(match.group(1)) < OPEN_FILES - 40
    assert "Traceback" not in server.daemon.output
    assert "Unhandled" not in server.daemon.output
