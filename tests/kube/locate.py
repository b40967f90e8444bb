"""Where the Kubernetes binaries are: ``$CCSERVER_KUBE_BIN``, else ``scripts/lib.sh kube_binaries``
(which builds them once, ~10-20 min on 2 cores, and prints the cached directory)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.kube.cluster import KubeClusterError

BIN_ENV = "CCSERVER_KUBE_BIN"
REPO = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT = 3600


def kube_bin_dir() -> str:
    explicit = os.environ.get(BIN_ENV)
    if explicit:
        return explicit
    try:
        done = subprocess.run(
            ["bash", "-c", f". {REPO / 'scripts' / 'lib.sh'}; kube_binaries"],
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise KubeClusterError(f"kube_binaries (scripts/lib.sh) did not end within {BUILD_TIMEOUT} s") from e
    if done.returncode != 0:
        raise KubeClusterError(f"kube_binaries (scripts/lib.sh) exited with {done.returncode}: {done.stderr[-3000:]}")
    return done.stdout.strip().splitlines()[-1]
