"""The real daemon: `twistd -n ccserver` as a process, over plain TCP and TLS."""

from __future__ import annotations

import json
import signal
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import trustme

from ccserver import __version__
from ccserver.testing import daemon as daemons
from ccserver.testing.daemon import Daemon

LOOPBACK = "tcp:0:interface=127.0.0.1"
REPO = Path(__file__).resolve().parent.parent


def env_for(home: Path) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "CCSERVER_CONFIG"))}
    env["HOME"] = str(home)
    # the checkout's twisted/plugins drop-in, whatever the current directory (an editable
    # install does not put it into site-packages; tests/test_packaging.py checks a real install)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def get(
    url: str, context: ssl.SSLContext | None = None, data: bytes | None = None, method: str | None = None
) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_runs_with_no_configuration_and_stops_cleanly(tmp_path: Path) -> None:
    with Daemon(["--listen", LOOPBACK], env=env_for(tmp_path), cwd=str(tmp_path)) as d:
        url = d.url()
        assert get(url + "/") == (200, {"version": __version__})
        # the embedded store lives under HOME when nothing is configured
        d.wait_for("store: embedded")
        assert (tmp_path / ".local/share/curious-containers/ccserver.sqlite3").exists()
        d.wait_for(r"GET / 200 user=- client=127\.0\.0\.1 [0-9.]+ms")
        started = time.monotonic()
        assert d.stop(signal.SIGTERM) == 0
        assert time.monotonic() - started < 10
        assert "Traceback" not in d.output


def test_sigint_exits_zero_too(tmp_path: Path) -> None:
    with Daemon(["--listen", LOOPBACK], env=env_for(tmp_path), cwd=str(tmp_path)) as d:
        d.url()
        assert d.stop(signal.SIGINT) == 0


def test_bad_config_stops_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[docker]\nthread_limit = 'eight'\n")
    result = daemons.run(["--config", str(path)], env=env_for(tmp_path))
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [f"ccserver: config error: {path}: docker.thread_limit: expected integer, got 'eight'"]
    assert "Traceback" not in result.stdout + result.stderr


def test_port_in_use_is_a_clear_failure(tmp_path: Path) -> None:
    with Daemon(["--listen", LOOPBACK], env=env_for(tmp_path / "a"), cwd=str(tmp_path)) as first:
        port = first.listening()[0][2]
        (tmp_path / "b").mkdir()
        result = daemons.run(["--listen", f"tcp:{port}:interface=127.0.0.1"], env=env_for(tmp_path / "b"))
        assert result.returncode == 1
        assert "cannot start" in result.stdout and "Address already in use" in result.stdout
        assert first.stop() == 0


def test_errors_are_json(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(f"[server]\nlisten = ['{LOOPBACK}']\nmax_body_bytes = 1000\n")
    with Daemon(["--config", str(cfg)], env=env_for(tmp_path), cwd=str(tmp_path)) as d:
        url = d.url()
        status, body = get(url + "/no/such/thing")
        assert status == 404 and "no such endpoint" in body["error"]
        status, body = get(url + "/", data=b"{}", method="POST")
        assert status == 405 and "error" in body
        status, body = get(url + "/", data=b"x" * 5000, method="POST")
        assert status == 413 and "max_body_bytes" in body["error"]
        assert d.stop() == 0


def test_ipc_is_ignored_and_logged_and_log_dir_gets_the_lines(tmp_path: Path) -> None:
    log_dir = tmp_path / "logs"
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f"[server]\nlisten = ['{LOOPBACK}']\nlog_dir = '{log_dir}'\nsuppress_stdout = true\n"
        "[ipc]\ntee_port = 14736\nworker_port = 14737\nsecret = 'SECRET-IPC-VALUE'\n"
    )
    with Daemon(["--config", str(cfg)], env=env_for(tmp_path), cwd=str(tmp_path)) as d:
        logfile = log_dir / "ccserver.log"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "listening on" not in (logfile.read_text() if logfile.exists() else ""):
            time.sleep(0.1)
        text = logfile.read_text()
        port = int(text.split("listening on tcp:127.0.0.1:")[1].split()[0])
        assert get(f"http://127.0.0.1:{port}/")[0] == 200
        assert d.stop() == 0
    text = logfile.read_text()
    assert "[ipc] is ignored" in text
    assert "GET / 200" in text
    assert "SECRET-IPC-VALUE" not in text
    # suppress_stdout: twistd's own start-up lines aside, nothing of ours on stdout
    assert "GET / 200" not in d.output and "[ipc] is ignored" not in d.output


def test_json_log_format(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(f"[server]\nlisten = ['{LOOPBACK}']\nlog_format = 'json'\n")
    with Daemon(["--config", str(cfg)], env=env_for(tmp_path), cwd=str(tmp_path)) as d:
        listening = json.loads(d.wait_for(r'"log_format": "listening on ').string.strip("\x1e"))
        assert get(f"http://127.0.0.1:{listening['port']}/")[0] == 200
        event = json.loads(d.wait_for(r'"method": "GET"').string.strip("\x1e"))
        assert event["status"] == 200 and event["path"] == "/" and event["client"] == "127.0.0.1"
        assert d.stop() == 0


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, Path]:
    ca = trustme.CA()
    intermediate = ca.create_child_ca()
    leaf = intermediate.issue_cert("localhost", "127.0.0.1")
    d = tmp_path_factory.mktemp("tls")
    leaf.private_key_pem.write_to_path(str(d / "key.pem"))
    leaf.cert_chain_pems[0].write_to_path(str(d / "cert.pem"))
    with open(d / "chain.pem", "wb") as f:
        for pem in leaf.cert_chain_pems[1:]:
            f.write(pem.bytes())
    return ca, d


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def test_tls_listen_string(tmp_path: Path, certificates: tuple[trustme.CA, Path]) -> None:
    ca, d = certificates
    listen = f"ssl:0:interface=127.0.0.1:privateKey={d}/key.pem:certKey={d}/cert.pem:extraCertChain={d}/chain.pem"
    with Daemon(["--listen", listen], env=env_for(tmp_path), cwd=str(tmp_path)) as daemon:
        port = daemon.listening()[0][2]
        assert get(f"https://localhost:{port}/", client_context(ca)) == (200, {"version": __version__})
        # a client that does not trust the CA is refused by its own verification
        with pytest.raises(urllib.error.URLError):
            get(f"https://localhost:{port}/", ssl.create_default_context())
        assert daemon.stop() == 0


def test_tls_from_config_file_sends_the_chain(tmp_path: Path, certificates: tuple[trustme.CA, Path]) -> None:
    ca, d = certificates
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        "[server]\nlisten = []\n"
        f"[server.tls]\nport = 0\ninterface = '127.0.0.1'\ncertificate = '{d}/cert.pem'\n"
        f"private_key = '{d}/key.pem'\nchain = '{d}/chain.pem'\n"
    )
    with Daemon(["--config", str(cfg)], env=env_for(tmp_path), cwd=str(tmp_path)) as daemon:
        kind, _, port = daemon.listening()[0]
        assert kind == "ssl"
        # only the root CA is trusted: the handshake succeeds only if the server sends the
        # intermediate from `chain`
        assert get(f"https://localhost:{port}/", client_context(ca))[0] == 200
        assert daemon.stop() == 0


def test_unreadable_certificate_is_a_clear_failure(tmp_path: Path) -> None:
    result = daemons.run(
        ["--listen", f"ssl:0:privateKey={tmp_path}/missing.pem:certKey={tmp_path}/missing.pem"],
        env=env_for(tmp_path),
    )
    assert result.returncode == 1
    assert result.stderr.startswith("ccserver: cannot listen on")
    assert "Traceback" not in result.stderr
