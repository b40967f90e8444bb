"""Certificates, keys and tokens of the test cluster (made with trustme, written once per state dir).

One CA signs everything: the API server's serving certificate (127.0.0.1, localhost), the
kubelet's serving certificate (its node IP), the client certificates (admin in system:masters,
the kubelet as system:node:NAME, the API server towards the kubelet) and nothing else.  The
service-account signing key is a leaf's ECDSA key (its certificate gives the API server the
public key).  A bearer token (``--token-auth-file``) names a second, RBAC-limited identity
(:data:`TOKEN_USER`).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

import trustme

TOKEN_USER = "ccserver-tester"


@dataclass(frozen=True)
class Pki:
    """Paths of the files under ``<state>/pki``."""

    dir: Path

    def path(self, name: str) -> Path:
        return self.dir / name

    @property
    def ca(self) -> Path:
        return self.path("ca.pem")

    def cert(self, who: str) -> Path:
        return self.path(f"{who}.pem")

    def key(self, who: str) -> Path:
        return self.path(f"{who}-key.pem")

    @property
    def sa_key(self) -> Path:
        return self.key("service-accounts")

    @property
    def sa_pub(self) -> Path:
        return self.cert("service-accounts")

    @property
    def token(self) -> Path:
        return self.path("token")

    @property
    def token_csv(self) -> Path:
        return self.path("tokens.csv")


def make_pki(directory: Path, node_name: str, node_ip: str) -> Pki:
    """Writes every certificate, key and token of a cluster into ``directory`` (made afresh)."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    pki = Pki(directory)
    ca = trustme.CA(organization_name="ccserver test cluster")
    ca.cert_pem.write_to_path(str(pki.ca))

    def issue(who: str, *identities: str, cn: str, org: str | None = None) -> None:
        leaf = ca.issue_cert(*identities, common_name=cn, organization_name=org)
        leaf.cert_chain_pems[0].write_to_path(str(pki.cert(who)))
        leaf.private_key_pem.write_to_path(str(pki.key(who)))

    issue("apiserver", "127.0.0.1", "localhost", "kubernetes", "kubernetes.default", cn="kube-apiserver")
    issue("admin", "ccserver-admin", cn="ccserver-admin", org="system:masters")
    issue("kubelet", node_ip, "127.0.0.1", "localhost", node_name, cn=node_name)
    issue("kubelet-client", node_name, cn=f"system:node:{node_name}", org="system:nodes")
    issue("apiserver-kubelet-client", "kube-apiserver", cn="kube-apiserver-kubelet-client", org="system:masters")

    # the service-account token signing key: a leaf's ECDSA key; the API server takes the public
    # key from its certificate (--service-account-key-file reads certificates too)
    issue("service-accounts", "service-accounts", cn="service-accounts")
    token = secrets.token_hex(24)
    pki.token.write_text(token + "\n")
    pki.token_csv.write_text(f"{token},{TOKEN_USER},{TOKEN_USER}-uid\n")
    for f in directory.iterdir():
        f.chmod(0o600)
    return pki
