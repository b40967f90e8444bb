"""A long-lived test cluster for development, shared by several people's test runs.

    python -m tests.kube.devcluster start STATE_DIR   # starts it, writes STATE_DIR/READY, returns
    python -m tests.kube.devcluster stop STATE_DIR    # stops it and cleans up (logs stay)

READY holds ``key=value`` lines (server, ca_file, client_cert_file, client_key_file, token_file,
kubeconfig, namespace, callback_host); with ``CCSERVER_KUBE_DEV=STATE_DIR`` the ``kube_cluster``
fixture uses this cluster instead of starting its own, and never stops it.  The binaries come
from ``$CCSERVER_KUBE_BIN`` or ``scripts/lib.sh kube_binaries``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tests.kube.cluster import KubeCluster, KubeClusterError
from tests.kube.locate import kube_bin_dir

READY_KEYS = (
    "server",
    "ca_file",
    "client_cert_file",
    "client_key_file",
    "token_file",
    "kubeconfig",
    "namespace",
    "callback_host",
)


def write_ready(cluster: KubeCluster) -> Path:
    ready = cluster.state / "READY"
    tmp = ready.with_suffix(".tmp")
    tmp.write_text("".join(f"{key}={getattr(cluster, key)}\n" for key in READY_KEYS))
    tmp.rename(ready)
    return ready


def read_ready(state_dir: str | Path) -> dict[str, str]:
    path = Path(state_dir) / "READY"
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise KubeClusterError(f"{path}: no running dev cluster there ({e})") from e
    return dict(line.split("=", 1) for line in lines if "=" in line)


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("start", "stop"):
        print(__doc__, file=sys.stderr)
        return 2
    state = Path(argv[2])
    if argv[1] == "start":
        if (state / "READY").exists():
            print(f"{state / 'READY'} exists: a cluster runs there (stop it first)", file=sys.stderr)
            return 1
        began = time.monotonic()
        cluster = KubeCluster(kube_bin_dir(), state)
        cluster.start()
        ready = write_ready(cluster)
        print(f"started in {time.monotonic() - began:.1f} s ({cluster.timings}); {ready}:")
        print(ready.read_text(), end="")
        return 0
    (state / "READY").unlink(missing_ok=True)
    KubeCluster.attach(state).stop()
    print(f"stopped the cluster of {state}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
