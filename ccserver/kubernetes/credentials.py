"""The files of a ``[kubernetes.clusters.NAME]`` section, read and checked once.

Blocking (small file reads): :class:`ccserver.kubernetes.node.KubeNode` reads them when it is
built, ``ccserver-admin check-config`` to report them.  Every problem is a
:class:`CredentialsError` whose message starts with the setting to fix
(``kubernetes.clusters.NAME.ca_file: ...``); a token's text never appears in one.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ccserver.config import KubeClusterConfig


class CredentialsError(Exception):
    """A file named by a cluster's settings is unreadable or malformed."""


@dataclass(frozen=True)
class Credentials:
    """What the API client needs, and which setting each part came from (for messages)."""

    server: str
    ca_pem: bytes
    cert_pem: bytes | None = None
    key_pem: bytes | None = None
    token: str | None = field(default=None, repr=False)
    #: the file the token was read from, read again as it rotates (None: given inline)
    token_file: str | None = None
    #: the setting each part came from: "server", "ca", "cert", "token"
    origin: dict[str, str] = field(default_factory=dict)

    def where(self, part: str) -> str:
        return self.origin.get(part, "")


def setting(config: KubeClusterConfig, key: str) -> str:
    return f"kubernetes.clusters.{config.name}.{key}"


def read_credentials(config: KubeClusterConfig) -> Credentials:
    """The server, CA, client certificate and token of ``config`` (blocking)."""
    if config.kubeconfig:
        return _from_kubeconfig(config)
    assert config.server is not None and config.ca_file is not None  # config.py checked it
    ca = _read(config.ca_file, setting(config, "ca_file"))
    _check_ca(ca, setting(config, "ca_file"))
    origin = {
        "server": setting(config, "server"),
        "ca": setting(config, "ca_file"),
        "cert": setting(config, "client_cert_file"),
        "token": setting(config, "token_file"),
    }
    if config.client_cert_file and config.client_key_file:
        cert = _read(config.client_cert_file, setting(config, "client_cert_file"))
        key = _read(config.client_key_file, setting(config, "client_key_file"))
        _check_pair(cert, key, setting(config, "client_cert_file"), setting(config, "client_key_file"))
        return Credentials(config.server, ca, cert, key, origin=origin)
    assert config.token_file is not None
    token = token_text(_read(config.token_file, setting(config, "token_file")), setting(config, "token_file"))
    return Credentials(config.server, ca, token=token, token_file=config.token_file, origin=origin)


def _from_kubeconfig(config: KubeClusterConfig) -> Credentials:
    from lightkube.config.kubeconfig import KubeConfig
    from lightkube.core.exceptions import ConfigError as LightkubeConfigError

    where = setting(config, "kubeconfig")
    path = config.kubeconfig or ""
    try:
        single = KubeConfig.from_file(path).get(config.context)
    except OSError as e:
        raise CredentialsError(f"{where}: cannot read {path}: {e.strerror or e}") from None
    except LightkubeConfigError as e:
        raise CredentialsError(f"{where}: {path}: {e}") from None
    except Exception as e:  # YAML and structure errors: msgspec, yaml
        raise CredentialsError(f"{where}: {path} is not a valid kubeconfig: {_first_line(e)}") from None
    if single is None:
        raise CredentialsError(f"{where}: {path} has no current-context; set {setting(config, 'context')}")
    context = f"{where} (context {single.context_name}"
    cluster, user = single.cluster, single.user
    server = (cluster.server or "").rstrip("/")
    if not server.startswith("https://"):
        raise CredentialsError(f"{context}): expected an https:// server, got {server!r}")
    if cluster.insecure:
        raise CredentialsError(f"{context}): insecure-skip-tls-verify is not supported; give the CA")
    ca = _part(single, cluster.certificate_auth, cluster.certificate_auth_data, f"{context}, certificate-authority)")
    if ca is None:
        raise CredentialsError(f"{context}): no certificate-authority or certificate-authority-data")
    _check_ca(ca, f"{context}, certificate-authority)")
    origin = {"server": f"{context}, server)", "ca": f"{context}, certificate-authority)"}
    if user is None:
        raise CredentialsError(f"{context}): no user")
    if user.exec or user.auth_provider or user.username:
        raise CredentialsError(
            f"{context}): only client certificates and tokens are supported (not exec, auth-provider or basic auth)"
        )
    cert = _part(single, user.client_cert, user.client_cert_data, f"{context}, client-certificate)")
    key = _part(single, user.client_key, user.client_key_data, f"{context}, client-key)")
    if cert is not None or key is not None:
        if cert is None or key is None:
            raise CredentialsError(f"{context}): client-certificate and client-key go together")
        _check_pair(cert, key, f"{context}, client-certificate)", f"{context}, client-key)")
        origin["cert"] = f"{context}, client-certificate)"
        return Credentials(server, ca, cert, key, origin=origin)
    token, token_file = user.token, None
    if token is None and user.token_file:
        token_file = str(single.abs_file(user.token_file))
        token = token_text(_read(token_file, f"{context}, tokenFile)"), f"{context}, tokenFile)")
    if not token:
        raise CredentialsError(f"{context}): the user has no client certificate and no token")
    origin["token"] = f"{context}, {'tokenFile' if token_file else 'token'})"
    return Credentials(server, ca, token=token.strip(), token_file=token_file, origin=origin)


def _part(single: object, path: str | None, data: str | None, where: str) -> bytes | None:
    if data:
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise CredentialsError(f"{where}: the -data value is not base64") from None
    if path:
        return _read(str(single.abs_file(path)), where)  # type: ignore[attr-defined]
    return None


def _read(path: str, where: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise CredentialsError(f"{where}: cannot read {path}: {e.strerror or e}") from None


def _check_ca(pem: bytes, where: str) -> None:
    try:
        x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise CredentialsError(f"{where}: expected a PEM certificate (the CA of the API server)") from None


def _check_pair(cert: bytes, key: bytes, cert_where: str, key_where: str) -> None:
    try:
        certificate = x509.load_pem_x509_certificate(cert)
    except ValueError:
        raise CredentialsError(f"{cert_where}: expected a PEM certificate") from None
    try:
        private = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError):
        raise CredentialsError(f"{key_where}: expected a PEM private key (without a passphrase)") from None
    raw = serialization.PublicFormat.SubjectPublicKeyInfo
    if certificate.public_key().public_bytes(serialization.Encoding.DER, raw) != private.public_key().public_bytes(
        serialization.Encoding.DER, raw
    ):
        raise CredentialsError(f"{key_where}: the key does not belong to the certificate ({cert_where})")


def token_text(raw: bytes, where: str) -> str:
    """The one token a token file holds, or :class:`CredentialsError` naming ``where``."""
    try:
        token = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise CredentialsError(f"{where}: expected a token (ASCII text)") from None
    if not token or any(ch.isspace() for ch in token):
        raise CredentialsError(f"{where}: expected one token on one line")
    return token


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else error.__class__.__name__)[:300]
