"""Configuration: lookup, validation messages, defaults, 0.10 sample files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ccserver import config
from ccserver.config import ConfigError

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "conf" / "sample_local_docker_config.toml"


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_no_file_anywhere_gives_defaults_under_home(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path)}
    cfg = config.load(None, env)
    assert cfg.source is None
    assert cfg.mongo is None
    assert cfg.embedded.path == str(tmp_path / ".local/share/curious-containers/ccserver.sqlite3")
    assert [n.base_url for n in cfg.docker.nodes] == ["unix:///var/run/docker.sock"]
    assert cfg.docker.thread_limit == 8
    assert cfg.docker.pull_policy == "if-not-present"
    assert cfg.defaults.max_task_trials == 3
    assert cfg.defaults.container_allocation == "spread"
    assert cfg.defaults.tokens_valid_for_seconds == 172800


def test_xdg_variables_and_docker_host_are_honoured(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data"), "DOCKER_HOST": "tcp://10.0.0.1:2375"}
    cfg = config.load(None, env)
    assert cfg.embedded.path == str(tmp_path / "data/curious-containers/ccserver.sqlite3")
    assert cfg.docker.nodes[0].base_url == "tcp://10.0.0.1:2375"


def test_lookup_order(tmp_path: Path) -> None:
    home_cfg = tmp_path / ".config/curious-containers/config.toml"
    home_cfg.parent.mkdir(parents=True)
    home_cfg.write_text("[docker]\nthread_limit = 3\n")
    env = {"HOME": str(tmp_path)}
    assert config.load(None, env).docker.thread_limit == 3
    named = write(tmp_path, "[docker]\nthread_limit = 4\n", "named.toml")
    assert config.load(None, {**env, "CCSERVER_CONFIG": str(named)}).docker.thread_limit == 4
    explicit = write(tmp_path, "[docker]\nthread_limit = 5\n", "explicit.toml")
    assert config.load(str(explicit), {**env, "CCSERVER_CONFIG": str(named)}).docker.thread_limit == 5


def test_explicit_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.toml: configuration file not found"):
        config.load(str(tmp_path / "nope.toml"), {"HOME": str(tmp_path)})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[docker]\nthread_limit = 'eight'\n", "docker.thread_limit: expected integer, got 'eight'"),
        ("[server]\nhots = 'x'\n", "server.hots: unknown key"),
        (
            "[defaults.scheduling_strategies]\ncontainer_allocation = 'random'\n",
            "defaults.scheduling_strategies.container_allocation: expected one of 'spread', 'binpack'",
        ),
        ("[docker.nodes.n1]\ntls = {verify = true}\n", "docker.nodes.n1.base_url: required key is missing"),
        ("[server]\ninternal_port = 70000\n", "server.internal_port: 70000 is greater than the maximum"),
        ("[server\n", "not valid TOML"),
        # list indexes in brackets, as in request-body errors (ccserver.keypaths)
        ("[server]\nlisten = ['tcp:1', 2]\n", "server.listen[1]: expected string, got 2"),
        ("[mongo]\nuri = 'mongodb://h:1/'\n", "mongo.db: required when mongo.uri names no database"),
    ],
)
def test_errors_name_file_key_and_expectation(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        config.load(str(path), {"HOME": str(tmp_path)})
    message = str(info.value)
    assert message.startswith(str(path) + ": ")
    assert expected in message
    assert "\n" not in message


def test_admin_docs_local_sample_is_accepted_unchanged() -> None:
    cfg = config.load(str(SAMPLE), {"HOME": "/home/someone"})
    assert cfg.ignored_sections == ("ipc",)
    assert cfg.server.host == "http://172.17.0.1:5000"
    assert cfg.server.internal_port == 5000
    assert cfg.server.log_dir == "/home/someone/.cc_server/"
    assert cfg.mongo is not None and cfg.mongo.db == "ccdb"
    assert cfg.mongo.uri == "mongodb://ccdbAdmin:PASSWORD@localhost:27017/ccdb?authSource=ccdb"
    # the 0.10 spelling of the local socket is read as the absolute path it meant
    assert [(n.name, n.base_url) for n in cfg.docker.nodes] == [("local", "unix:///var/run/docker.sock")]
    # the pull credentials of data and inspection containers, as the Docker SDK takes them
    assert config.auth_config(cfg.defaults.data_container.registry_auth) == {
        "username": "REGISTRY_USER",
        "password": "PASSWORD",
    }
    assert config.auth_config(None) is None
    assert cfg.defaults.dead_node_notification is not None
    assert cfg.defaults.dead_node_notification.auth is not None
    assert cfg.defaults.num_login_attempts == 3


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "conf").glob("*.toml")))
def test_every_sample_in_conf_validates(name: str) -> None:
    raw = config.read_file(REPO / "conf" / name)
    config.validate(raw, name)


def test_cluster_nodes_with_tls(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[docker]
net = 'cc-overlay-network'
[docker.nodes.cc-node1]
base_url = '192.168.99.101:2376'
[docker.nodes.cc-node1.tls]
verify = '~/ca.pem'
client_cert = ['~/cert.pem', '~/key.pem']
assert_hostname = false
""",
    )
    cfg = config.load(str(path), {"HOME": "/h"})
    (node,) = cfg.docker.nodes
    assert node.base_url == "tcp://192.168.99.101:2376"
    assert node.tls is not None
    assert node.tls.verify == "/h/ca.pem"
    assert node.tls.client_cert == ("/h/cert.pem", "/h/key.pem")
    assert node.tls.assert_hostname is False
    assert cfg.docker.net == "cc-overlay-network"


def test_machines_dir_is_read(tmp_path: Path) -> None:
    for name, ip in (("cc-node1", "192.168.99.101"), ("cc-node2", "192.168.99.102")):
        d = tmp_path / "machines" / name
        d.mkdir(parents=True)
        (d / "config.json").write_text(json.dumps({"Driver": {"IPAddress": ip}}))
    path = write(tmp_path, f"[docker]\nmachines_dir = '{tmp_path / 'machines'}'\n")
    cfg = config.load(str(path), {"HOME": "/h"})
    assert [(n.name, n.base_url) for n in cfg.docker.nodes] == [
        ("cc-node1", "tcp://192.168.99.101:2376"),
        ("cc-node2", "tcp://192.168.99.102:2376"),
    ]
    assert cfg.docker.nodes[0].tls is not None
    assert cfg.docker.nodes[0].tls.verify == str(tmp_path / "machines/cc-node1/ca.pem")


def test_mongo_uri_and_alias(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "[mongo]\nuri = 'mongodb://h1,h2/ccdb?replicaSet=rs0&tls=true'\n"
        "[defaults.authorization]\nnumber_login_attempts = 7\n",
    )
    cfg = config.load(str(path), {"HOME": "/h"})
    assert cfg.mongo is not None and cfg.mongo.db == "ccdb"
    assert cfg.mongo.uri.startswith("mongodb://h1,h2/ccdb")
    assert cfg.defaults.num_login_attempts == 7


def test_config_is_immutable(tmp_path: Path) -> None:
    cfg = config.load(None, {"HOME": str(tmp_path)})
    with pytest.raises(AttributeError):
        cfg.server.host = "x"  # type: ignore[misc]


CREDENTIALS = {"auth_type", "username", "password"}


def _schema_keys(schema: dict[str, Any], path: str = "") -> list[str]:
    """``[section]`` for each table of the schema, ``key`` for each of its keys."""
    keys = []
    for name, sub in schema.get("properties", {}).items():
        dotted = f"{path}.{name}" if path else name
        if isinstance(sub, dict) and "properties" in sub and not set(sub["properties"]) <= CREDENTIALS:
            keys.append(f"[{dotted}]")
            keys.extend(_schema_keys(sub, dotted))
        else:
            keys.append(name)
    return keys


def test_every_key_the_daemon_accepts_is_documented() -> None:
    from pathlib import Path

    from ccserver.config_schema import SCHEMA

    text = (Path(__file__).parent.parent / "docs" / "configuration.rst").read_text()
    missing = [key for key in _schema_keys(SCHEMA) if f"``{key}``" not in text]
    assert not missing, f"keys missing from docs/configuration.rst: {missing}"
