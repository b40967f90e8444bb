"""``[kubernetes.clusters.NAME]``: validation messages, parsing, and ``check-config`` reading the
cluster's files (CA, client certificate and key, token, kubeconfig)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import trustme
import yaml

from ccserver import admin, config
from ccserver.config import ConfigError, KubeClusterConfig
from ccserver.kubernetes.credentials import CredentialsError, read_credentials


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    ca = trustme.CA()
    client = ca.issue_cert("ccserver")
    paths = {
        "ca": tmp_path / "ca.pem",
        "cert": tmp_path / "client.pem",
        "key": tmp_path / "client-key.pem",
        "token": tmp_path / "token",
    }
    ca.cert_pem.write_to_path(str(paths["ca"]))
    client.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    client.private_key_pem.write_to_path(str(paths["key"]))
    paths["token"].write_text("s3cr3t-token-value\n")
    return paths


def test_a_full_section_is_read_into_the_dataclass(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[kubernetes.clusters.k1]
server = "https://127.0.0.1:6443/"
ca_file = "~/ca.pem"
client_cert_file = "~/client.pem"
client_key_file = "~/client-key.pem"
namespace = "jobs"
service_account = "ccserver-jobs"
node_selector = { disk = "ssd", zone = "a" }
tolerations = [ { key = "k", operator = "Exists", effect = "NoSchedule" } ]
callback_url = "http://10.0.0.1:5000/"
api_timeout_seconds = 4
pending_timeout_seconds = 30
job_ttl_seconds = 60
""",
    )
    cfg = config.load(str(path), {"HOME": "/h"})
    (k1,) = cfg.kubernetes.clusters
    assert k1 == KubeClusterConfig(
        name="k1",
        server="https://127.0.0.1:6443",
        ca_file="/h/ca.pem",
        client_cert_file="/h/client.pem",
        client_key_file="/h/client-key.pem",
        namespace="jobs",
        service_account="ccserver-jobs",
        node_selector=(("disk", "ssd"), ("zone", "a")),
        tolerations=({"key": "k", "operator": "Exists", "effect": "NoSchedule"},),
        callback_url="http://10.0.0.1:5000",
        api_timeout_seconds=4.0,
        pending_timeout_seconds=30.0,
        job_ttl_seconds=60,
    )


def test_defaults_and_no_clusters(tmp_path: Path) -> None:
    assert config.load(None, {"HOME": str(tmp_path)}).kubernetes.clusters == ()
    path = write(
        tmp_path, '[kubernetes.clusters.k]\nkubeconfig = "/k/config"\ncallback_url = "https://cc.example:5000"\n'
    )
    (k,) = config.load(str(path), {"HOME": "/h"}).kubernetes.clusters
    assert (k.kubeconfig, k.context, k.namespace) == ("/k/config", None, "default")
    assert (k.api_timeout_seconds, k.pending_timeout_seconds, k.job_ttl_seconds) == (10.0, 120.0, 600)
    assert k.node_selector == () and k.tolerations == () and k.service_account is None


TOKEN = 'server = "https://k:6443"\nca_file = "/ca"\ntoken_file = "/t"\n'
CB = 'callback_url = "http://h:5000"\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"[kubernetes.clusters.k1]\n{TOKEN}", "kubernetes.clusters.k1.callback_url: required key is missing"),
        (
            f"[kubernetes.clusters.k1]\n{TOKEN}callback_url = 'ftp://h'\n",
            "kubernetes.clusters.k1.callback_url: 'ftp://h' does not match",
        ),
        (f"[kubernetes.clusters.k1]\n{TOKEN}{CB}serverr = 'x'\n", "kubernetes.clusters.k1.serverr: unknown key"),
        ("[kubernetes]\ncluster = 1\n", "kubernetes.cluster: unknown key"),
        (
            f"[kubernetes.clusters.k1]\n{TOKEN}{CB}api_timeout_seconds = 'ten'\n",
            "kubernetes.clusters.k1.api_timeout_seconds: expected number, got 'ten'",
        ),
        (
            f"[kubernetes.clusters.k1]\n{TOKEN}{CB}job_ttl_seconds = 1.5\n",
            "kubernetes.clusters.k1.job_ttl_seconds: expected integer, got 1.5",
        ),
        (
            f"[kubernetes.clusters.k1]\n{TOKEN}{CB}node_selector = {{ disk = 1 }}\n",
            "kubernetes.clusters.k1.node_selector.disk: expected string, got 1",
        ),
        (
            f"[kubernetes.clusters.k1]\n{TOKEN}{CB}tolerations = [ {{ key = 'k', operator = 'Maybe' }} ]\n",
            "kubernetes.clusters.k1.tolerations[0].operator: expected one of 'Exists', 'Equal'",
        ),
        (
            f"[kubernetes.clusters.k1]\n{TOKEN}{CB}namespace = 'Not_A_Label'\n",
            "kubernetes.clusters.k1.namespace: 'Not_A_Label' does not match",
        ),
        (
            f"[kubernetes.clusters.k1]\nserver = 'http://k:8080'\nca_file = '/ca'\ntoken_file = '/t'\n{CB}",
            "kubernetes.clusters.k1.server: 'http://k:8080' does not match",
        ),
        (f"[kubernetes.clusters.k1]\n{CB}", "kubernetes.clusters.k1: expected server (with ca_file"),
        (
            f"[kubernetes.clusters.k1]\nserver = 'https://k'\ntoken_file = '/t'\n{CB}",
            "kubernetes.clusters.k1.ca_file: required with server",
        ),
        (
            f"[kubernetes.clusters.k1]\nserver = 'https://k'\nca_file = '/ca'\n{CB}",
            "kubernetes.clusters.k1: expected credentials: client_cert_file + client_key_file, or token_file",
        ),
        (
            f"[kubernetes.clusters.k1]\nserver = 'https://k'\nca_file = '/ca'\nclient_cert_file = '/c'\n{CB}",
            "kubernetes.clusters.k1.client_key_file: required with the other",
        ),
        (
            f"[kubernetes.clusters.k1]\n{TOKEN}client_cert_file = '/c'\nclient_key_file = '/k'\n{CB}",
            "kubernetes.clusters.k1.token_file: give either client_cert_file + client_key_file or token_file",
        ),
        (
            f"[kubernetes.clusters.k1]\nkubeconfig = '/kc'\nca_file = '/ca'\n{CB}",
            "kubernetes.clusters.k1.ca_file: not with kubeconfig",
        ),
        (
            f"[kubernetes.clusters.k1]\n{TOKEN}context = 'c'\n{CB}",
            "kubernetes.clusters.k1.context: only with kubeconfig",
        ),
        (
            f"[docker.nodes.n1]\nbase_url = 'unix:///d.sock'\n[kubernetes.clusters.n1]\n{TOKEN}{CB}",
            "kubernetes.clusters.n1: the name is also docker.nodes.n1",
        ),
        # without [docker.nodes], the default Docker node is "local"
        (f"[kubernetes.clusters.local]\n{TOKEN}{CB}", "kubernetes.clusters.local: the name is also docker.nodes.local"),
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


def cluster(**keys: str) -> KubeClusterConfig:
    return KubeClusterConfig(name="k1", callback_url="http://h:5000", **keys)


def test_credentials_of_a_certificate_and_of_a_token(files: dict[str, Path]) -> None:
    ca, cert, key, token = (str(files[k]) for k in ("ca", "cert", "key", "token"))
    creds = read_credentials(cluster(server="https://k:6443", ca_file=ca, client_cert_file=cert, client_key_file=key))
    assert creds.server == "https://k:6443" and creds.ca_pem == files["ca"].read_bytes()
    assert creds.cert_pem == files["cert"].read_bytes() and creds.token is None
    creds = read_credentials(cluster(server="https://k:6443", ca_file=ca, token_file=token))
    assert creds.token == "s3cr3t-token-value" and creds.cert_pem is None
    assert "s3cr3t" not in repr(creds)


def test_credentials_of_a_kubeconfig_with_files_and_with_data(tmp_path: Path, files: dict[str, Path]) -> None:
    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "files",
        "clusters": [
            {"name": "c1", "cluster": {"server": "https://10.0.0.1:6443", "certificate-authority": "ca.pem"}},
            {
                "name": "c2",
                "cluster": {"server": "https://10.0.0.2:6443", "certificate-authority-data": b64(files["ca"])},
            },
        ],
        "users": [
            {"name": "u1", "user": {"client-certificate": "client.pem", "client-key": str(files["key"])}},
            {"name": "u2", "user": {"token": "tok-123"}},
        ],
        "contexts": [
            {"name": "files", "context": {"cluster": "c1", "user": "u1"}},
            {"name": "data", "context": {"cluster": "c2", "user": "u2", "namespace": "x"}},
        ],
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig))
    creds = read_credentials(cluster(kubeconfig=str(path)))  # current-context, relative files
    assert creds.server == "https://10.0.0.1:6443" and creds.cert_pem == files["cert"].read_bytes()
    creds = read_credentials(cluster(kubeconfig=str(path), context="data"))
    assert creds.server == "https://10.0.0.2:6443" and creds.ca_pem == files["ca"].read_bytes()
    assert creds.token == "tok-123"
    with pytest.raises(CredentialsError, match=r"^kubernetes\.clusters\.k1\.kubeconfig: .*nope"):
        read_credentials(cluster(kubeconfig=str(path), context="nope"))


@pytest.mark.parametrize(
    ("which", "content", "expected"),
    [
        ("ca", None, r"kubernetes\.clusters\.k1\.ca_file: cannot read .*ca\.pem: No such file"),
        ("ca", b"not a certificate", r"kubernetes\.clusters\.k1\.ca_file: expected a PEM certificate"),
        ("cert", b"garbage", r"kubernetes\.clusters\.k1\.client_cert_file: expected a PEM certificate"),
        ("key", b"garbage", r"kubernetes\.clusters\.k1\.client_key_file: expected a PEM private key"),
        ("key", "other", r"kubernetes\.clusters\.k1\.client_key_file: the key does not belong to the certificate"),
    ],
)
def test_unreadable_or_malformed_files_name_their_key(
    files: dict[str, Path], which: str, content: bytes | str | None, expected: str
) -> None:
    if content is None:
        files[which].unlink()
    elif content == "other":
        trustme.CA().issue_cert("x").private_key_pem.write_to_path(str(files[which]))
    else:
        assert isinstance(content, bytes)
        files[which].write_bytes(content)
    c = cluster(
        server="https://k",
        ca_file=str(files["ca"]),
        client_cert_file=str(files["cert"]),
        client_key_file=str(files["key"]),
    )
    with pytest.raises(CredentialsError, match=expected):
        read_credentials(c)


def test_a_token_file_with_two_words_is_refused_without_showing_it(files: dict[str, Path]) -> None:
    files["token"].write_text("secret-one secret-two\n")
    with pytest.raises(CredentialsError) as info:
        read_credentials(cluster(server="https://k", ca_file=str(files["ca"]), token_file=str(files["token"])))
    assert str(info.value).startswith("kubernetes.clusters.k1.token_file: expected one token")
    assert "secret" not in str(info.value)


def test_check_config_reads_the_cluster_files(
    tmp_path: Path, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    text = (
        f'[kubernetes.clusters.k1]\nserver = "https://127.0.0.1:6443"\nca_file = "{files["ca"]}"\n'
        f'token_file = "{files["token"]}"\ncallback_url = "http://10.0.0.1:5000"\n'
    )
    path = write(tmp_path, text)
    assert admin.main(["--config", str(path), "check-config"]) == 0
    assert "Kubernetes clusters: k1" in capsys.readouterr().out
    files["ca"].write_text("garbage")
    assert admin.main(["--config", str(path), "check-config"]) == 2
    err = capsys.readouterr().err
    assert f"{path}: kubernetes.clusters.k1.ca_file: expected a PEM certificate" in err
