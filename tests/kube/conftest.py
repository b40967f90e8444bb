"""The ``kube_cluster`` session fixture: one real single-node Kubernetes per test session.

Fields (tests/kube/cluster.py has the details): ``server`` (https URL), ``ca_file``,
``client_cert_file`` / ``client_key_file`` (admin, system:masters), ``token_file`` (a bearer
token of ``token_user``, limited by RBAC to jobs, pods, pods/log and events of ``namespace``
and to reading nodes), ``kubeconfig`` (context ``ccserver-test``: the admin certificate;
``ccserver-test-token``: the token), ``namespace`` (``ccserver-test``), ``node_name``,
``callback_host`` (the CNI bridge's address on the host: pods reach a server bound there),
``import_image(tag)``, ``api(method, path, json=None) -> (status, body)``,
``stop_apiserver()`` / ``start_apiserver()``.

The binaries: ``$CCSERVER_KUBE_BIN`` (scripts/test exports it), else scripts/lib.sh
``kube_binaries``.  ``CCSERVER_KUBE_DEV=STATE_DIR`` uses a running dev cluster
(tests/kube/devcluster.py) instead, and never stops it.  The suite runs in one process (no
xdist), so a session fixture is one cluster per run, like the FerretDB of tests/conftest.py;
several runs at once each get their own cluster (a free slot: bridge, subnet, cgroup root).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
import requests

from tests.kube.cluster import KubeCluster, KubeClusterError
from tests.kube.locate import kube_bin_dir

DEV_ENV = "CCSERVER_KUBE_DEV"
# the first start after a build reads ~400 MB of binaries from a cold disk cache; later ones take ~10 s
START_TIMEOUT = 240.0


@pytest.fixture(scope="session")
def kube_cluster() -> Iterator[KubeCluster]:
    dev = os.environ.get(DEV_ENV)
    if dev:
        try:
            cluster = KubeCluster.attach(dev)
        except KubeClusterError as e:
            pytest.fail(f"{DEV_ENV}={dev}: {e}", pytrace=False)
        if not (cluster.state / "READY").exists():
            pytest.fail(
                f"{DEV_ENV}={dev}: no READY file (start it with `python -m tests.kube.devcluster start {dev}`)",
                pytrace=False,
            )
        try:
            status, answer = cluster.api("GET", "/readyz", timeout=10)
        except requests.RequestException as e:
            status, answer = 0, str(e)
        if status != 200:
            pytest.fail(
                f"{DEV_ENV}={dev}: the API server at {cluster.server} is not ready: {status} {answer}", pytrace=False
            )
        yield cluster
        return
    try:
        cluster = KubeCluster(kube_bin_dir(), start_timeout=START_TIMEOUT)
        began = time.monotonic()
        cluster.start()
    except KubeClusterError as e:
        pytest.fail(f"cannot start the test cluster: {e}", pytrace=False)
    print(f"\nkube_cluster: started in {time.monotonic() - began:.1f} s {cluster.timings} under {cluster.state}")
    yield cluster
    cluster.stop()
