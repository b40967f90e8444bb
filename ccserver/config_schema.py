"""JSON Schema of ``config.toml``.

Every section and key of the CC-Server 0.10 admin documentation is here, plus the keys a
single Twisted daemon needs (listeners, native TLS, data directory, pull policy, limits).
The schema is strict (``additionalProperties: false``) so that a typo is an error that names
the key instead of a silently ignored setting.  ``docs/configuration.rst`` documents each key;
keep the two in step.
"""

from __future__ import annotations

from typing import Any

_STR = {"type": "string", "minLength": 1}
_BOOL = {"type": "boolean"}
_PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
#: a port this daemon listens on; 0 asks the kernel for a free one (handy in tests)
_LISTEN_PORT = {"type": "integer", "minimum": 0, "maximum": 65535}
_POS_INT = {"type": "integer", "minimum": 1}
_POS_NUM = {"type": "number", "exclusiveMinimum": 0}

_AUTH = {
    "type": "object",
    "additionalProperties": False,
    "required": ["auth_type", "username", "password"],
    "properties": {
        "auth_type": {"enum": ["basic", "digest"]},
        "username": {"type": "string"},
        "password": {"type": "string"},
    },
}

_REGISTRY_AUTH = {
    "type": "object",
    "additionalProperties": False,
    "required": ["username", "password"],
    "properties": {"username": {"type": "string"}, "password": {"type": "string"}},
}

_NODE_TLS = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        # docker-py's TLSConfig: ``verify`` is a CA file or a boolean.
        "verify": {"anyOf": [_BOOL, _STR]},
        "client_cert": {"type": "array", "items": _STR, "minItems": 2, "maxItems": 2},
        "assert_hostname": {"anyOf": [_BOOL, _STR]},
        "ca_cert": _STR,
    },
}

#: ``[tes]`` keys of the TES runner (ram and cpu defaults, time limits, log tails)
_TES_RUNNER = {
    "default_ram_gb": _POS_NUM,
    "default_cpu_cores": _POS_NUM,
    "initializing_timeout_seconds": {"type": "number", "minimum": 0},
    "running_timeout_seconds": {"type": "number", "minimum": 0},
    "log_tail_bytes": {"type": "integer", "minimum": 0},
    "legacy_container_cpus": {"type": "number", "minimum": 0},
    "legacy_cpu_placement": {"type": "boolean"},
}

_NODE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["base_url"],
    "properties": {"base_url": _STR, "tls": _NODE_TLS},
}


def _tes_api_keys() -> dict[str, Any]:
    """``[tes]`` keys of the TES REST API (the runner adds its own beside them)."""
    return {
        "enabled": _BOOL,
        # requests without credentials on the TES routes act as this user (absent: refused)
        "anonymous_user": _STR,
    }


#: ``[tes.storage]``: where TES inputs come from and outputs go (ccserver.tes.staging)
_TES_STORAGE = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "file_roots": {"type": "array", "items": _STR},
        "transfer_threads": {"type": "integer", "minimum": 1, "maximum": 64},
        "s3": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "endpoint_url": {"type": "string", "pattern": "^https?://[^/]+"},
                "region": _STR,
                "access_key_id": _STR,
                "secret_access_key": _STR,
            },
        },
    },
}

#: ``[tes]``: each part of the TES service adds its keys here
_TES = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        **_tes_api_keys(),
        **_TES_RUNNER,
        "storage": _TES_STORAGE,
    },
}

#: ``[metrics]``: the Prometheus endpoint
_METRICS = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "enabled": _BOOL,
        "access": {"enum": ["open", "admin"]},
        "listen": {"type": "array", "items": _STR, "minItems": 1},
        "refresh_seconds": _POS_NUM,
    },
}

#: ``[logs]``: following the output of running containers (ccserver.livelogs)
_LOGS = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "follow": _BOOL,
        "tail_bytes": {"type": "integer", "minimum": 1024, "maximum": 16 * 1024 * 1024},
        "max_followed": _POS_INT,
    },
}

#: one toleration of the pods of a cluster's Jobs (core/v1 Toleration)
_TOLERATION = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "key": _STR,
        "operator": {"enum": ["Exists", "Equal"]},
        "value": {"type": "string"},
        "effect": {"enum": ["NoSchedule", "PreferNoSchedule", "NoExecute"]},
        "tolerationSeconds": {"type": "integer", "minimum": 0},
    },
}

#: ``[kubernetes.clusters.NAME]``: one Kubernetes cluster used as one node (ccserver.kubernetes);
#: which credentials go together (server or kubeconfig, certificate or token) is checked in
#: ccserver.config, whose messages say what to give instead
_KUBE_CLUSTER = {
    "type": "object",
    "additionalProperties": False,
    "required": ["callback_url"],
    "properties": {
        "server": {"type": "string", "pattern": "^https://[^/]+"},
        "ca_file": _STR,
        "client_cert_file": _STR,
        "client_key_file": _STR,
        "token_file": _STR,
        "kubeconfig": _STR,
        "context": _STR,
        # a DNS label, as Kubernetes requires of namespace names
        "namespace": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"},
        "service_account": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"},
        "node_selector": {"type": "object", "additionalProperties": {"type": "string"}},
        "tolerations": {"type": "array", "items": _TOLERATION},
        "callback_url": {"type": "string", "pattern": "^https?://[^/]+"},
        "api_timeout_seconds": _POS_NUM,
        "pending_timeout_seconds": _POS_NUM,
        "job_ttl_seconds": {"type": "integer", "minimum": 0},
        "staging_image": {"type": "string", "minLength": 1},
    },
}

#: ``[kubernetes]``: clusters beside the Docker nodes (docs/kubernetes.rst)
_KUBERNETES = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "clusters": {
            "type": "object",
            # the name is a node name (metrics labels, documents' cluster_node)
            "propertyNames": {"pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"},
            "additionalProperties": _KUBE_CLUSTER,
        },
    },
}

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "server": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "host": {"type": "string", "pattern": "^https?://[^/]+"},
                "internal_port": _LISTEN_PORT,
                "internal_interface": _STR,
                "scheduling_interval_seconds": _POS_NUM,
                "log_dir": _STR,
                "suppress_stdout": _BOOL,
                "log_format": {"enum": ["text", "json"]},
                "log_rotate_bytes": _POS_INT,
                "log_max_rotated_files": _POS_INT,
                "listen": {"type": "array", "items": _STR},
                "data_dir": _STR,
                "max_body_bytes": _POS_INT,
                "shutdown_timeout_seconds": _POS_NUM,
                "idle_timeout_seconds": _POS_NUM,
                "header_timeout_seconds": _POS_NUM,
                "body_timeout_seconds": _POS_NUM,
                "max_connections": _POS_INT,
                "max_connections_per_client": _POS_INT,
                "max_header_bytes": {"type": "integer", "minimum": 1024},
                "trusted_proxies": {"type": "array", "items": _STR},
                "cors_origins": {"type": "array", "items": _STR},
                "static_dir": _STR,
                "api_prefix": {"type": "string", "pattern": "^(/[A-Za-z0-9._~-]+)*$"},
                "query_max_documents": _POS_INT,
                "query_timeout_seconds": _POS_NUM,
                "query_cache_seconds": {"type": "number", "minimum": 0},
                "auth_cache_seconds": {"type": "number", "minimum": 0},
                "password_hash_threads": _POS_INT,
                "secret_key_file": _STR,
                "inline_body_bytes": {"type": "integer", "minimum": 0},
                "body_threads": _POS_INT,
                "scheduling_round_tasks": _POS_INT,
                "tls": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["certificate", "private_key"],
                    "properties": {
                        "port": _LISTEN_PORT,
                        "interface": _STR,
                        "certificate": _STR,
                        "private_key": _STR,
                        "chain": _STR,
                    },
                },
            },
        },
        # CC-Server 0.10 ran two helper processes; one daemon has no use for them.
        "ipc": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"tee_port": _PORT, "worker_port": _PORT, "secret": {"type": "string"}},
        },
        "mongo": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "uri": {"type": "string", "pattern": "^mongodb(\\+srv)?://"},
                "username": {"type": "string"},
                "password": {"type": "string"},
                "host": _STR,
                "port": _PORT,
                "db": _STR,
                "auth_source": _STR,
                "timeout_seconds": _POS_NUM,
            },
        },
        "embedded": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "path": _STR,
                "synchronous": {"enum": ["normal", "full"]},
                "query_workers": {"type": "integer", "minimum": 1, "maximum": 64},
                "query_memory_mb": {"type": "integer", "minimum": 16, "maximum": 1048576},
            },
        },
        "docker": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "thread_limit": _POS_INT,
                "api_timeout": _POS_NUM,
                "net": _STR,
                "machines_dir": _STR,
                "pull_policy": {"enum": ["always", "if-not-present", "never"]},
                "heartbeat_seconds": _POS_NUM,
                "launches_per_node": _POS_INT,
                "pull_threads": _POS_INT,
                "nodes": {
                    "type": "object",
                    "additionalProperties": _NODE,
                },
            },
        },
        "metrics": _METRICS,
        "logs": _LOGS,
        "kubernetes": _KUBERNETES,
        # where task and dead-node notifications may be sent (unrestricted when both are empty)
        "notifications": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "allowed_networks": {"type": "array", "items": _STR},
                "allowed_hosts": {"type": "array", "items": _STR},
            },
        },
        "tes": _TES,
        "defaults": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "application_container_description": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"entry_point": _STR},
                },
                "data_container_description": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "image": _STR,
                        "entry_point": _STR,
                        "container_ram": _POS_INT,
                        "registry_auth": _REGISTRY_AUTH,
                    },
                },
                "scheduling_strategies": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"container_allocation": {"enum": ["spread", "binpack"]}},
                },
                "error_handling": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "max_task_trials": _POS_INT,
                        "dead_node_invalidation": _BOOL,
                        "dead_node_notification": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["url"],
                            "properties": {
                                "url": {"type": "string", "pattern": "^https?://"},
                                "auth": _AUTH,
                                "ssl_verify": _BOOL,
                            },
                        },
                    },
                },
                "authorization": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "num_login_attempts": _POS_INT,
                        # the 0.10 prose spells it this way; accepted as an alias
                        "number_login_attempts": _POS_INT,
                        "block_for_seconds": _POS_NUM,
                        "tokens_valid_for_seconds": _POS_NUM,
                    },
                },
            },
        },
    },
}
