"""The configuration files and API objects of the test cluster, as pure functions of its layout."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

CLUSTER_ENTRY = "ccserver-test"


def kubeconfig(
    server: str,
    ca_file: str,
    users: dict[str, dict[str, Any]],
    contexts: Mapping[str, tuple[str, str | None]],
    current: str,
) -> str:
    """A kubeconfig: ``users`` name -> user entry; ``contexts`` name -> (user, namespace)."""
    context_entries = []
    for name, (user, namespace) in contexts.items():
        context: dict[str, Any] = {"cluster": CLUSTER_ENTRY, "user": user}
        if namespace:
            context["namespace"] = namespace
        context_entries.append({"name": name, "context": context})
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": CLUSTER_ENTRY, "cluster": {"server": server, "certificate-authority": ca_file}}],
            "users": [{"name": name, "user": user} for name, user in users.items()],
            "contexts": context_entries,
            "current-context": current,
        }
    )


def cert_user(cert: Path, key: Path) -> dict[str, str]:
    return {"client-certificate": str(cert), "client-key": str(key)}


def cni_conflist(bridge: str, subnet: str, gateway: str, ipam_dir: Path) -> str:
    """A bridge of its own with host-local addresses; no masquerading, so iptables stay untouched."""
    return json.dumps(
        {
            "cniVersion": "0.4.0",
            "name": "ccskube",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": bridge,
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": subnet, "gateway": gateway}]],
                        "dataDir": str(ipam_dir),
                    },
                }
            ],
        },
        indent=1,
    )


def containerd_toml(root: Path, state: Path, socket: str, opt: Path, sandbox_image: str, cni_conf_dir: Path) -> str:
    """containerd 1.6 (config version 2): own root, state, socket; restrict_oom_score_adj (no
    CAP_SYS_RESOURCE in these VMs); network namespaces under its state dir; Debian's CNI plugins."""
    return f"""version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "{socket}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni_conf_dir}"
"""


def kubelet_config(
    node_ip: str,
    port: int,
    healthz_port: int,
    cgroup_root: str,
    runtime_socket: str,
    tls_cert: Path,
    tls_key: Path,
    client_ca: Path,
    kubelet_dir: Path,
) -> str:
    """The KubeletConfiguration this machine needs (cgroup v1 hybrid, containerd 1.6, shared host)."""
    return yaml.safe_dump(
        {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": node_ip,
            "port": port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": healthz_port,
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",  # containerd 1.6 does not report its driver
            "cgroupRoot": "/" + cgroup_root,
            "cgroupsPerQOS": True,
            "containerRuntimeEndpoint": f"unix://{runtime_socket}",
            "tlsCertFile": str(tls_cert),
            "tlsPrivateKeyFile": str(tls_key),
            # only clients with a certificate of the cluster's CA (the API server, for logs)
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": False},
                "x509": {"clientCAFile": str(client_ca)},
            },
            "authorization": {"mode": "AlwaysAllow"},
            "registerNode": True,
            "makeIPTablesUtilChains": False,  # the host's iptables stay as they are
            "protectKernelDefaults": False,  # its /proc/sys files are ours (the mount namespace)
            "failSwapOn": False,
            "podLogsDir": str(kubelet_dir / "pod-logs"),
            "volumePluginDir": str(kubelet_dir / "volume-plugins"),
            "resolvConf": "/etc/resolv.conf",
            "serializeImagePulls": False,
            # a shared, loaded machine: evict only when it is really short, never collect images
            # (they are imported, never pulled)
            "evictionHard": {
                "memory.available": "50Mi",
                "nodefs.available": "1%",
                "nodefs.inodesFree": "1%",
                "imagefs.available": "1%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "rotateCertificates": False,
            "serverTLSBootstrap": False,
            "nodeStatusUpdateFrequency": "5s",
            "syncFrequency": "10s",
        }
    )


def _rbac(kind: str, name: str, namespace: str | None = None, **fields: Any) -> dict[str, Any]:
    metadata = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": metadata, **fields}


def setup_objects(namespace: str, user: str) -> list[tuple[str, dict[str, Any]]]:
    """(collection path, object) to create once the API is up: the namespace, and for ``user``
    (the token's identity) what ccserver needs: nodes read cluster-wide; jobs, pods, pods/log
    and events in the namespace."""
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    subject = [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]
    nodes_rule = {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}
    job_verbs = ["get", "list", "watch", "create", "patch", "update", "delete"]
    rules = [
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": job_verbs},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "patch", "delete"]},
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "list", "watch"]},
    ]

    def ref(kind: str, name: str) -> dict[str, str]:
        return {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name}

    return [
        ("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
        (f"{rbac}/clusterroles", _rbac("ClusterRole", "ccserver-test-nodes", rules=[nodes_rule])),
        (
            f"{rbac}/clusterrolebindings",
            _rbac(
                "ClusterRoleBinding",
                "ccserver-test-nodes",
                roleRef=ref("ClusterRole", "ccserver-test-nodes"),
                subjects=subject,
            ),
        ),
        (f"{rbac}/namespaces/{namespace}/roles", _rbac("Role", "ccserver", namespace, rules=rules)),
        (
            f"{rbac}/namespaces/{namespace}/rolebindings",
            _rbac("RoleBinding", "ccserver", namespace, roleRef=ref("Role", "ccserver"), subjects=subject),
        ),
    ]
