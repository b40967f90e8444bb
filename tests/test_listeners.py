"""Listener planning: pure functions from configuration to endpoint strings and host."""

from __future__ import annotations

from pathlib import Path

from ccserver import config, listeners


def load(tmp_path: Path, text: str | None) -> config.Config:
    if text is None:
        return config.load(None, {"HOME": str(tmp_path)})
    path = tmp_path / "c.toml"
    path.write_text(text)
    return config.load(str(path), {"HOME": str(tmp_path)})


def test_no_config_listens_on_loopback_and_gateway(tmp_path: Path) -> None:
    plan = listeners.plan(load(tmp_path, None), [])
    assert plan.needs_gateway
    endpoints = listeners.complete(plan, "172.17.0.1", None)
    assert endpoints == ("tcp:5000:interface=127.0.0.1", "tcp:5000:interface=172.17.0.1")
    bound = [("tcp", 5000), ("tcp", 5000)]
    assert listeners.callback_host(plan, "172.17.0.1", bound) == "http://172.17.0.1:5000"
    assert listeners.complete(plan, None, None) == ("tcp:5000:interface=127.0.0.1",)
    assert listeners.callback_host(plan, None, bound[:1]) == "http://127.0.0.1:5000"


def test_internal_port_and_tls_from_file(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        "[server]\nhost = 'https://cc.example.org/cc'\ninternal_port = 5001\n"
        "[server.tls]\nport = 443\ncertificate = '/c/cert:1.pem'\nprivate_key = '/c/key.pem'\nchain = '/c/chain.pem'\n",
    )
    plan = listeners.plan(cfg, [])
    assert not plan.needs_gateway
    assert plan.endpoints == (
        "tcp:5001:interface=0.0.0.0",
        "ssl:443:interface=0.0.0.0:privateKey=/c/key.pem:certKey=/c/cert\\:1.pem:extraCertChain=/c/chain.pem",
    )
    assert listeners.callback_host(plan, None, [("tcp", 5001)]) == "https://cc.example.org/cc"


def test_tls_only_and_cli_override(tmp_path: Path) -> None:
    cfg = load(tmp_path, "[server.tls]\ncertificate = 'c.pem'\nprivate_key = 'k.pem'\n")
    assert listeners.plan(cfg, []).endpoints == ("ssl:8443:interface=0.0.0.0:privateKey=k.pem:certKey=c.pem",)
    plan = listeners.plan(cfg, ["tcp:6000:interface=127.0.0.1"])
    assert plan.endpoints == ("tcp:6000:interface=127.0.0.1",)
    assert plan.needs_gateway
    assert listeners.complete(plan, "172.17.0.1", cfg.source) == plan.endpoints
    # the port actually bound wins (port 0 in tests)
    assert listeners.callback_host(plan, "172.17.0.1", [("tcp", 6001)]) == "http://172.17.0.1:6001"
    tls_only = listeners.plan(cfg, [])
    assert listeners.callback_host(tls_only, None, [("ssl", 8443)]) == "https://127.0.0.1:8443"


def test_the_daemon_listens_where_its_given_plan_says(tmp_path: Path) -> None:
    """``makeService`` plans once (and checks the endpoints of that plan); the service tree
    takes the plan itself instead of planning again from the command line."""
    from twisted.internet import reactor

    from ccserver.service import CCServer

    cfg = config.from_dict({"server": {"data_dir": str(tmp_path)}}, "<test>", {"HOME": str(tmp_path)})
    plan = listeners.plan(cfg, ["tcp:6000:interface=127.0.0.1"])
    root = CCServer(cfg, reactor, plan)  # not started
    assert root.plan is plan
    assert root.host == plan.host
    # without a plan: the configuration's own listeners, as planned without a command line
    assert CCServer(cfg, reactor).plan == listeners.plan(cfg, [])
