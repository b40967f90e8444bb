"""Reading ``config.toml`` into immutable settings.

The file is read once, before the reactor runs, validated against
:data:`ccserver.config_schema.SCHEMA`, completed with the documented defaults and turned into
frozen dataclasses that are passed down the service tree.  Errors are :class:`ConfigError`
with a one-line message naming the file, the key and what was expected.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast, overload
from urllib.parse import quote_plus

import jsonschema

from ccserver.config_schema import SCHEMA
from ccserver.keypaths import path_text

DEFAULT_PORT = 5000
DEFAULT_TLS_PORT = 8443
DEFAULT_DATA_IMAGE = "docker.io/curiouscontainers/cc-image-ubuntu:0.10"
DEFAULT_ENTRY_POINT = "python3 /opt/container_worker"
LOCAL_DOCKER_URL = "unix:///var/run/docker.sock"


class ConfigError(Exception):
    """A configuration file is missing, unreadable or invalid; the message is one line."""


@dataclass(frozen=True)
class TLSListener:
    port: int
    interface: str
    certificate: str
    private_key: str
    chain: str | None


@dataclass(frozen=True)
class ServerConfig:
    host: str | None
    internal_port: int | None
    internal_interface: str
    scheduling_interval_seconds: float
    log_dir: str | None
    suppress_stdout: bool
    log_format: str
    log_rotate_bytes: int
    log_max_rotated_files: int
    listen: tuple[str, ...]
    data_dir: str
    max_body_bytes: int
    shutdown_timeout_seconds: float
    idle_timeout_seconds: float
    header_timeout_seconds: float
    body_timeout_seconds: float
    max_connections: int
    max_connections_per_client: int
    max_header_bytes: int
    tls: TLSListener | None
    trusted_proxies: tuple[str, ...]
    cors_origins: tuple[str, ...]
    static_dir: str | None
    api_prefix: str
    query_max_documents: int
    query_timeout_seconds: float
    query_cache_seconds: float
    auth_cache_seconds: float
    password_hash_threads: int
    #: the daemon's secret key (derives callback and input-file keys; see ccserver.vault)
    secret_key_file: str
    #: request bodies larger than this are parsed, validated and answered in the body pool
    inline_body_bytes: int = 65536
    body_threads: int = 1
    #: the oldest waiting tasks one scheduling round considers
    scheduling_round_tasks: int = 10000


@dataclass(frozen=True)
class MongoConfig:
    uri: str
    db: str
    timeout_seconds: float


@dataclass(frozen=True)
class EmbeddedConfig:
    path: str
    synchronous: str
    #: processes that evaluate the pipelines of the query endpoints (killed at the deadline)
    query_workers: int = 2
    #: address space a query worker may use beyond its start-up size, and largest answer
    query_memory_mb: int = 256


@dataclass(frozen=True)
class NodeTLS:
    verify: bool | str
    client_cert: tuple[str, str] | None
    assert_hostname: bool | str | None
    ca_cert: str | None


@dataclass(frozen=True)
class NodeConfig:
    name: str
    base_url: str
    tls: NodeTLS | None


@dataclass(frozen=True)
class DockerConfig:
    thread_limit: int
    api_timeout: float
    net: str | None
    pull_policy: str
    nodes: tuple[NodeConfig, ...]
    heartbeat_seconds: float
    #: launches (create, start) in flight per node; image pulls are apart from them
    launches_per_node: int = 4
    #: threads for image pulls, all nodes together (one pull per node and image)
    pull_threads: int = 4


@dataclass(frozen=True)
class RegistryAuth:
    username: str
    password: str


def auth_config(auth: RegistryAuth | None) -> dict[str, str] | None:
    """``auth`` as the Docker SDK's ``auth_config`` for a pull (the same ``{"username",
    "password"}`` shape as a task's ``registry_auth``), or None without credentials."""
    return {"username": auth.username, "password": auth.password} if auth else None


@dataclass(frozen=True)
class DataContainerDefaults:
    image: str
    entry_point: str
    container_ram: int
    registry_auth: RegistryAuth | None


@dataclass(frozen=True)
class HTTPAuth:
    auth_type: str
    username: str
    password: str


@dataclass(frozen=True)
class DeadNodeNotification:
    url: str
    auth: HTTPAuth | None
    ssl_verify: bool


@dataclass(frozen=True)
class Defaults:
    application_entry_point: str
    data_container: DataContainerDefaults
    container_allocation: str
    max_task_trials: int
    dead_node_invalidation: bool
    dead_node_notification: DeadNodeNotification | None
    num_login_attempts: int
    block_for_seconds: float
    tokens_valid_for_seconds: float


@dataclass(frozen=True)
class NotificationsConfig:
    """``[notifications]``: where notifications may go; both empty: anywhere (as 0.10)."""

    allowed_networks: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()


@dataclass(frozen=True)
class S3Config:
    """``[tes.storage.s3]``: the S3-compatible endpoint TES ``s3://`` inputs and outputs use."""

    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class StorageConfig:
    """``[tes.storage]``: where TES inputs may come from and outputs may go."""

    #: host directories ``file://`` inputs and outputs may use (normalized absolute paths)
    file_roots: tuple[str, ...] = ()
    #: inputs (outputs) of one task transferred at once
    transfer_threads: int = 4
    #: None: ``s3://`` URLs are refused
    s3: S3Config | None = None


@dataclass(frozen=True)
class TesConfig:
    """``[tes]``: the GA4GH TES API and its tasks."""

    #: serve the TES routes (``<prefix>/ga4gh/tes/v1`` and the legacy ``<prefix>/v1``)
    enabled: bool = True
    #: requests without credentials on the TES routes act as this user; ``None``: refused
    anonymous_user: str | None = None
    #: RAM reserved (and the memory limit) of a task that gives no ``resources.ram_gb``
    default_ram_gb: float = 1.0
    #: CPU cores reserved (and the ``NanoCpus`` limit) of a task without ``resources.cpu_cores``
    default_cpu_cores: float = 1.0
    #: an attempt still INITIALIZING (images, volumes, staging in) after this long fails; 0: never
    initializing_timeout_seconds: float = 3600.0
    #: an attempt still RUNNING after this long fails (SYSTEM_ERROR, retried); 0: never
    running_timeout_seconds: float = 0.0
    #: the bytes of each executor's stdout and stderr kept in its ExecutorLog
    log_tail_bytes: int = 65536
    #: CPUs a 0.10 application container counts as in the CPU placement of TES tasks
    legacy_container_cpus: float = 1.0
    #: 0.10 tasks are placed by CPUs too, each needing legacy_container_cpus (False: RAM only, as 0.10)
    legacy_cpu_placement: bool = False
    storage: StorageConfig = field(default=StorageConfig())


@dataclass(frozen=True)
class MetricsConfig:
    """``[metrics]``: the Prometheus endpoint (docs/operations.rst)."""

    enabled: bool = True
    #: "admin": an admin user's password or token is needed; "open": anyone may read
    access: str = "admin"
    #: endpoint strings of listeners of its own; None: ``<api prefix>/metrics`` on the API's
    listen: tuple[str, ...] | None = None
    #: how often the gauges of documents by state and node reservations are read from the store
    refresh_seconds: float = 15.0


@dataclass(frozen=True)
class LogsConfig:
    """``[logs]``: the output of running application containers, followed from the engines
    (see :mod:`ccserver.livelogs`)."""

    #: follow running containers at all
    follow: bool = True
    #: bytes of output kept per container (the last ones)
    tail_bytes: int = 65536
    #: containers followed at once; kept tails of ended ones are bounded by it too
    max_followed: int = 500


@dataclass(frozen=True)
class KubeClusterConfig:
    """One Kubernetes cluster used as one node (``[kubernetes.clusters.NAME]``, see
    docs/kubernetes.rst).  Files named here are read by the client at start-up."""

    name: str
    callback_url: str
    server: str | None = None
    ca_file: str | None = None
    client_cert_file: str | None = None
    client_key_file: str | None = None
    token_file: str | None = None
    kubeconfig: str | None = None
    context: str | None = None
    namespace: str = "default"
    service_account: str | None = None
    node_selector: tuple[tuple[str, str], ...] = ()
    tolerations: tuple[dict[str, Any], ...] = ()
    api_timeout_seconds: float = 10.0
    pending_timeout_seconds: float = 120.0
    job_ttl_seconds: int = 600
    #: the image of the pods' staging steps of TES tasks (it needs ``python3``); None: the
    #: cluster runs no TES tasks
    staging_image: str | None = None


@dataclass(frozen=True)
class KubernetesConfig:
    clusters: tuple[KubeClusterConfig, ...] = ()


@dataclass(frozen=True)
class Config:
    """Everything the daemon was configured with; ``source`` is the file or ``None``."""

    source: str | None
    server: ServerConfig
    mongo: MongoConfig | None
    embedded: EmbeddedConfig
    docker: DockerConfig
    defaults: Defaults
    ignored_sections: tuple[str, ...] = field(default=())
    notifications: NotificationsConfig = field(default=NotificationsConfig())
    tes: TesConfig = field(default=TesConfig())
    metrics: MetricsConfig = field(default=MetricsConfig())
    logs: LogsConfig = field(default=LogsConfig())
    kubernetes: KubernetesConfig = field(default=KubernetesConfig())


# --- where things live --------------------------------------------------------------------


def _xdg(env: Mapping[str, str], var: str, fallback: str) -> Path:
    value = env.get(var)
    if value and os.path.isabs(value):
        return Path(value)
    return Path(env.get("HOME") or os.path.expanduser("~")) / fallback


def config_search_path(env: Mapping[str, str] | None = None) -> list[Path]:
    """The files tried, in order, when ``--config`` is not given."""
    env = os.environ if env is None else env
    paths = []
    if env.get("CCSERVER_CONFIG"):
        paths.append(Path(env["CCSERVER_CONFIG"]))
    paths.append(_xdg(env, "XDG_CONFIG_HOME", ".config") / "curious-containers" / "config.toml")
    paths.append(Path("/etc/curious-containers/config.toml"))
    return paths


def default_data_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return _xdg(env, "XDG_DATA_HOME", ".local/share") / "curious-containers"


def find_config(explicit: str | None, env: Mapping[str, str] | None = None) -> Path | None:
    """The configuration file to read, or ``None`` to run on built-in defaults."""
    env = os.environ if env is None else env
    named = explicit or env.get("CCSERVER_CONFIG")
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            how = "--config" if explicit else "CCSERVER_CONFIG"
            raise ConfigError(f"{path}: configuration file not found (given by {how})")
        return path
    for path in config_search_path(env):
        if path.is_file():
            return path
    return None


# --- loading ---------------------------------------------------------------------------


def _describe(error: jsonschema.ValidationError) -> str:
    where = path_text(error.absolute_path)
    if error.validator == "additionalProperties":
        # an object and its schema: mappings
        instance, schema = cast(Mapping[str, Any], error.instance), cast(Mapping[str, Any], error.schema)
        extra = sorted(set(instance) - set(schema.get("properties", {})))
        keys = ", ".join(f"{where}.{k}" if where else k for k in extra)
        return f"{keys}: unknown key"
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return f"{where + '.' if where else ''}{missing}: required key is missing"
    if error.validator == "type":
        return f"{where}: expected {error.validator_value}, got {error.instance!r}"
    if error.validator == "enum":
        options = ", ".join(repr(v) for v in cast(list[Any], error.validator_value))
        return f"{where}: expected one of {options}, got {error.instance!r}"
    return f"{where or '(top level)'}: {error.message}"


def validate(raw: Mapping[str, Any], source: str) -> None:
    """Raise :class:`ConfigError` naming the first problem of ``raw``."""
    validator = jsonschema.Draft202012Validator(SCHEMA)
    errors = sorted(validator.iter_errors(raw), key=lambda e: (len(e.absolute_path), e.path))
    if errors:
        # deepest-first within the most relevant branch reads best for anyOf
        error = jsonschema.exceptions.best_match(errors)
        raise ConfigError(f"{source}: {_describe(error)}")


def read_file(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None


def load(explicit: str | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Find, read, validate and complete the configuration (see :func:`find_config`)."""
    path = find_config(explicit, env)
    raw = read_file(path) if path else {}
    return from_dict(raw, str(path) if path else None, env)


def from_dict(raw: Mapping[str, Any], source: str | None, env: Mapping[str, str] | None = None) -> Config:
    env = os.environ if env is None else env
    label = source or "<built-in defaults>"
    validate(raw, label)
    server = raw.get("server", {})
    data_dir = _expand(server.get("data_dir"), env) or str(default_data_dir(env))
    auth = raw.get("defaults", {}).get("authorization", {})
    if "num_login_attempts" in auth and "number_login_attempts" in auth:
        raise ConfigError(f"{label}: defaults.authorization.number_login_attempts: give only num_login_attempts")
    docker = _docker(raw.get("docker", {}), label, env)
    kubernetes = _kubernetes(raw.get("kubernetes", {}), label, env, docker)
    return Config(
        source=source,
        server=_server(server, data_dir, env),
        mongo=_mongo(raw["mongo"], label) if "mongo" in raw else None,
        embedded=_embedded(raw.get("embedded", {}), data_dir, env),
        docker=docker,
        defaults=_defaults(raw.get("defaults", {})),
        ignored_sections=("ipc",) if "ipc" in raw else (),
        notifications=_notifications(raw.get("notifications", {}), label),
        tes=_tes(raw.get("tes", {}), label, env),
        metrics=_metrics(raw.get("metrics", {})),
        logs=_logs(raw.get("logs", {})),
        kubernetes=kubernetes,
    )


_KUBE_FILES = ("ca_file", "client_cert_file", "client_key_file", "token_file", "kubeconfig")


def _kubernetes(k: Mapping[str, Any], label: str, env: Mapping[str, str], docker: DockerConfig) -> KubernetesConfig:
    docker_names = {n.name for n in docker.nodes}
    clusters = []
    for name, c in k.get("clusters", {}).items():
        key = f"kubernetes.clusters.{name}"
        if name in docker_names:
            raise ConfigError(
                f"{label}: {key}: the name is also docker.nodes.{name}; Docker nodes and clusters "
                "share one name space (rename one of them)"
            )
        _check_kube_credentials(c, label, key)
        defaults = KubeClusterConfig(name=name, callback_url="")
        files = {f: _expand(c.get(f), env) for f in _KUBE_FILES}
        clusters.append(
            KubeClusterConfig(
                name=name,
                callback_url=c["callback_url"].rstrip("/"),
                server=c["server"].rstrip("/") if "server" in c else None,
                context=c.get("context"),
                namespace=c.get("namespace", defaults.namespace),
                service_account=c.get("service_account"),
                node_selector=tuple(sorted(c.get("node_selector", {}).items())),
                tolerations=tuple(dict(t) for t in c.get("tolerations", ())),
                api_timeout_seconds=float(c.get("api_timeout_seconds", defaults.api_timeout_seconds)),
                pending_timeout_seconds=float(c.get("pending_timeout_seconds", defaults.pending_timeout_seconds)),
                job_ttl_seconds=int(c.get("job_ttl_seconds", defaults.job_ttl_seconds)),
                staging_image=c.get("staging_image"),
                **files,
            )
        )
    return KubernetesConfig(clusters=tuple(clusters))


def _check_kube_credentials(c: Mapping[str, Any], label: str, key: str) -> None:
    """Either ``server`` with ``ca_file`` and one way to authenticate (a client certificate
    and its key, or ``token_file``), or a ``kubeconfig`` (and optionally its ``context``)."""
    direct = ("server", "ca_file", "client_cert_file", "client_key_file", "token_file")
    if "kubeconfig" in c:
        given = [k for k in direct if k in c]
        if given:
            raise ConfigError(f"{label}: {key}.{given[0]}: not with kubeconfig (the kubeconfig's context gives it)")
        return
    if "context" in c:
        raise ConfigError(f"{label}: {key}.context: only with kubeconfig (the context is one of the kubeconfig's)")
    if "server" not in c:
        raise ConfigError(
            f"{label}: {key}: expected server (with ca_file, and client_cert_file + client_key_file "
            "or token_file) or kubeconfig"
        )
    if "ca_file" not in c:
        raise ConfigError(
            f"{label}: {key}.ca_file: required with server (the CA that signed the API server's certificate)"
        )
    if ("client_cert_file" in c) != ("client_key_file" in c):
        missing = "client_key_file" if "client_cert_file" in c else "client_cert_file"
        raise ConfigError(f"{label}: {key}.{missing}: required with the other of client_cert_file and client_key_file")
    if "client_cert_file" in c and "token_file" in c:
        raise ConfigError(f"{label}: {key}.token_file: give either client_cert_file + client_key_file or token_file")
    if "client_cert_file" not in c and "token_file" not in c:
        raise ConfigError(f"{label}: {key}: expected credentials: client_cert_file + client_key_file, or token_file")


def _logs(section: Mapping[str, Any]) -> LogsConfig:
    defaults = LogsConfig()
    return LogsConfig(
        follow=section.get("follow", defaults.follow),
        tail_bytes=section.get("tail_bytes", defaults.tail_bytes),
        max_followed=section.get("max_followed", defaults.max_followed),
    )


def _metrics(m: Mapping[str, Any]) -> MetricsConfig:
    default = MetricsConfig()
    listen = m.get("listen")
    return MetricsConfig(
        enabled=m.get("enabled", default.enabled),
        access=m.get("access", default.access),
        listen=tuple(listen) if listen is not None else None,
        refresh_seconds=float(m.get("refresh_seconds", default.refresh_seconds)),
    )


def _tes(t: Mapping[str, Any], label: str, env: Mapping[str, str]) -> TesConfig:
    return TesConfig(
        enabled=t.get("enabled", True),
        anonymous_user=t.get("anonymous_user"),
        default_ram_gb=float(t.get("default_ram_gb", 1.0)),
        default_cpu_cores=float(t.get("default_cpu_cores", 1.0)),
        initializing_timeout_seconds=float(t.get("initializing_timeout_seconds", 3600.0)),
        running_timeout_seconds=float(t.get("running_timeout_seconds", 0.0)),
        log_tail_bytes=int(t.get("log_tail_bytes", 65536)),
        legacy_container_cpus=float(t.get("legacy_container_cpus", 1.0)),
        legacy_cpu_placement=bool(t.get("legacy_cpu_placement", False)),
        storage=_tes_storage(t.get("storage", {}), label, env),
    )


def _tes_storage(s: Mapping[str, Any], label: str, env: Mapping[str, str]) -> StorageConfig:
    roots = []
    for index, entry in enumerate(s.get("file_roots", ())):
        path = _expand(entry, env)
        if not os.path.isabs(path):
            raise ConfigError(
                f"{label}: tes.storage.file_roots[{index}]: expected an absolute directory, got {entry!r}"
            )
        roots.append(os.path.normpath(path))
    s3 = None
    if "s3" in s:
        c = s["s3"]
        if ("access_key_id" in c) != ("secret_access_key" in c):
            raise ConfigError(f"{label}: tes.storage.s3: give both access_key_id and secret_access_key, or neither")
        s3 = S3Config(
            endpoint_url=c.get("endpoint_url"),
            region=c.get("region", "us-east-1"),
            access_key_id=c.get("access_key_id"),
            secret_access_key=c.get("secret_access_key"),
        )
    return StorageConfig(file_roots=tuple(roots), transfer_threads=s.get("transfer_threads", 4), s3=s3)


_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"(?:\*\.)?{_LABEL}(?:\.{_LABEL})*\.?")


def _notifications(n: Mapping[str, Any], label: str) -> NotificationsConfig:
    networks = tuple(entry.strip() for entry in n.get("allowed_networks", ()))
    for index, entry in enumerate(networks):
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ConfigError(
                f"{label}: notifications.allowed_networks[{index}]: expected an IP network "
                f"such as '10.0.0.0/8' or an address, got {entry!r}"
            ) from None
    hosts = tuple(entry.strip() for entry in n.get("allowed_hosts", ()))
    for index, entry in enumerate(hosts):
        if not _HOST_NAME.fullmatch(entry):
            raise ConfigError(
                f"{label}: notifications.allowed_hosts[{index}]: expected a host name such as "
                f"'hooks.example.org' or '*.example.org', got {entry!r}"
            )
    return NotificationsConfig(allowed_networks=networks, allowed_hosts=hosts)


@overload
def _expand(value: str, env: Mapping[str, str]) -> str: ...
@overload
def _expand(value: str | None, env: Mapping[str, str]) -> str | None: ...
def _expand(value: str | None, env: Mapping[str, str]) -> str | None:
    if value is None:
        return None
    if value.startswith("~"):
        home = env.get("HOME") or os.path.expanduser("~")
        value = home + value[1:]
    return value


def _server(s: Mapping[str, Any], data_dir: str, env: Mapping[str, str]) -> ServerConfig:
    tls = None
    if "tls" in s:
        t = s["tls"]
        tls = TLSListener(
            port=t.get("port", DEFAULT_TLS_PORT),
            interface=t.get("interface", "0.0.0.0"),
            certificate=_expand(t["certificate"], env) or "",
            private_key=_expand(t["private_key"], env) or "",
            chain=_expand(t.get("chain"), env),
        )
    return ServerConfig(
        host=s["host"].rstrip("/") if "host" in s else None,
        internal_port=s.get("internal_port"),
        internal_interface=s.get("internal_interface", "0.0.0.0"),
        scheduling_interval_seconds=float(s.get("scheduling_interval_seconds", 60)),
        log_dir=_expand(s.get("log_dir"), env),
        suppress_stdout=s.get("suppress_stdout", False),
        log_format=s.get("log_format", "text"),
        log_rotate_bytes=s.get("log_rotate_bytes", 10 * 1024 * 1024),
        log_max_rotated_files=s.get("log_max_rotated_files", 10),
        listen=tuple(s.get("listen", ())),
        data_dir=data_dir,
        max_body_bytes=s.get("max_body_bytes", 8 * 1024 * 1024),
        shutdown_timeout_seconds=float(s.get("shutdown_timeout_seconds", 10)),
        idle_timeout_seconds=float(s.get("idle_timeout_seconds", 60)),
        header_timeout_seconds=float(s.get("header_timeout_seconds", 20)),
        body_timeout_seconds=float(s.get("body_timeout_seconds", 60)),
        max_connections=s.get("max_connections", 1024),
        max_connections_per_client=s.get("max_connections_per_client", 256),
        max_header_bytes=s.get("max_header_bytes", 32768),
        tls=tls,
        trusted_proxies=tuple(s.get("trusted_proxies", ())),
        cors_origins=tuple(s.get("cors_origins", ())),
        static_dir=_expand(s.get("static_dir"), env),
        # with a CC-UI build served at /, the API moves under /cc (where CC-UI looks for it)
        api_prefix=s.get("api_prefix", "/cc" if "static_dir" in s else ""),
        query_max_documents=s.get("query_max_documents", 10000),
        query_timeout_seconds=float(s.get("query_timeout_seconds", 10)),
        query_cache_seconds=float(s.get("query_cache_seconds", 1)),
        auth_cache_seconds=float(s.get("auth_cache_seconds", 60)),
        password_hash_threads=s.get("password_hash_threads", 2),
        secret_key_file=_expand(s.get("secret_key_file"), env) or os.path.join(data_dir, "server-secret.key"),
        inline_body_bytes=s.get("inline_body_bytes", 65536),
        body_threads=s.get("body_threads", 1),
        scheduling_round_tasks=s.get("scheduling_round_tasks", 10000),
    )


def _mongo(m: Mapping[str, Any], label: str) -> MongoConfig:
    db = m.get("db")
    if "uri" in m:
        if any(k in m for k in ("host", "port", "username", "password")):
            raise ConfigError(f"{label}: mongo.uri: give either uri or host/port/username/password")
        uri = m["uri"]
        if db is None:
            # mongodb://host/dbname?opts names the database in its path
            tail = uri.split("://", 1)[1].split("?", 1)[0]
            db = tail.split("/", 1)[1] if "/" in tail and tail.split("/", 1)[1] else None
        if not db:
            raise ConfigError(f"{label}: mongo.db: required when mongo.uri names no database")
    else:
        db = db or "ccdb"
        host = m.get("host", "localhost")
        port = m.get("port", 27017)
        creds = ""
        if m.get("username"):
            creds = f"{quote_plus(m['username'])}:{quote_plus(m.get('password', ''))}@"
        uri = f"mongodb://{creds}{host}:{port}/{db}"
        if creds:
            uri += f"?authSource={quote_plus(m.get('auth_source', db))}"
    return MongoConfig(uri=uri, db=db, timeout_seconds=float(m.get("timeout_seconds", 10)))


def _embedded(e: Mapping[str, Any], data_dir: str, env: Mapping[str, str]) -> EmbeddedConfig:
    path = _expand(e.get("path"), env) or os.path.join(data_dir, "ccserver.sqlite3")
    return EmbeddedConfig(
        path=path,
        synchronous=e.get("synchronous", "normal"),
        query_workers=e.get("query_workers", 2),
        query_memory_mb=e.get("query_memory_mb", 256),
    )


def normalize_base_url(url: str) -> str:
    """Accept the 0.10 spelling ``unix://var/run/docker.sock`` (relative) and bare ``IP:PORT``."""
    if url.startswith("unix://") and not url.startswith("unix:///"):
        return "unix:///" + url[len("unix://") :]
    if "://" not in url:
        return "tcp://" + url
    return url


def _docker(d: Mapping[str, Any], label: str, env: Mapping[str, str]) -> DockerConfig:
    nodes = []
    for name, node in d.get("nodes", {}).items():
        tls = None
        if "tls" in node:
            t = node["tls"]
            cert = t.get("client_cert")
            tls = NodeTLS(
                verify=_expand(t["verify"], env) if isinstance(t.get("verify"), str) else t.get("verify", True),
                client_cert=(_expand(cert[0], env), _expand(cert[1], env)) if cert else None,
                assert_hostname=t.get("assert_hostname"),
                ca_cert=_expand(t.get("ca_cert"), env),
            )
        nodes.append(NodeConfig(name=name, base_url=normalize_base_url(node["base_url"]), tls=tls))
    if "machines_dir" in d:
        nodes.extend(read_machines_dir(_expand(d["machines_dir"], env) or "", label))
    if not nodes:
        nodes.append(NodeConfig(name="local", base_url=env.get("DOCKER_HOST") or LOCAL_DOCKER_URL, tls=None))
    names = [n.name for n in nodes]
    for n in names:
        if names.count(n) > 1:
            raise ConfigError(f"{label}: docker.nodes.{n}: node name given twice")
    return DockerConfig(
        thread_limit=d.get("thread_limit", 8),
        api_timeout=float(d.get("api_timeout", 30)),
        net=d.get("net"),
        pull_policy=d.get("pull_policy", "if-not-present"),
        nodes=tuple(nodes),
        heartbeat_seconds=float(d.get("heartbeat_seconds", 15)),
        launches_per_node=d.get("launches_per_node", 4),
        pull_threads=d.get("pull_threads", 4),
    )


def read_machines_dir(directory: str, label: str) -> list[NodeConfig]:
    """Nodes from a docker-machine ``machines`` directory (one sub-directory per node)."""
    root = Path(directory)
    if not root.is_dir():
        raise ConfigError(f"{label}: docker.machines_dir: {directory} is not a directory")
    nodes = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        try:
            info = json.loads((sub / "config.json").read_text())
            ip = info["Driver"]["IPAddress"]
        except (OSError, ValueError, KeyError, TypeError):
            raise ConfigError(f"{label}: docker.machines_dir: {sub}/config.json has no Driver.IPAddress") from None
        nodes.append(
            NodeConfig(
                name=sub.name,
                base_url=f"tcp://{ip}:2376",
                tls=NodeTLS(
                    verify=str(sub / "ca.pem"),
                    client_cert=(str(sub / "cert.pem"), str(sub / "key.pem")),
                    assert_hostname=False,
                    ca_cert=None,
                ),
            )
        )
    return nodes


def _defaults(d: Mapping[str, Any]) -> Defaults:
    app = d.get("application_container_description", {})
    data = d.get("data_container_description", {})
    errors = d.get("error_handling", {})
    auth = d.get("authorization", {})
    notification = None
    if "dead_node_notification" in errors:
        n = errors["dead_node_notification"]
        notification = DeadNodeNotification(
            url=n["url"],
            auth=HTTPAuth(**n["auth"]) if "auth" in n else None,
            ssl_verify=n.get("ssl_verify", True),
        )
    registry = data.get("registry_auth")
    return Defaults(
        application_entry_point=app.get("entry_point", DEFAULT_ENTRY_POINT),
        data_container=DataContainerDefaults(
            image=data.get("image", DEFAULT_DATA_IMAGE),
            entry_point=data.get("entry_point", DEFAULT_ENTRY_POINT),
            container_ram=data.get("container_ram", 512),
            registry_auth=RegistryAuth(**registry) if registry else None,
        ),
        container_allocation=d.get("scheduling_strategies", {}).get("container_allocation", "spread"),
        max_task_trials=errors.get("max_task_trials", 3),
        dead_node_invalidation=errors.get("dead_node_invalidation", True),
        dead_node_notification=notification,
        num_login_attempts=auth.get("num_login_attempts", auth.get("number_login_attempts", 3)),
        block_for_seconds=float(auth.get("block_for_seconds", 120)),
        tokens_valid_for_seconds=float(auth.get("tokens_valid_for_seconds", 172800)),
    )
