"""Staging on a remote engine over mutual TLS: an extra ``dockerd`` (tests/cluster/engines.py)
listening on TCP with ``--tlsverify``, reached only through the TLS connection, as the
daemon reaches a node that is not its own host."""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from ccserver.cluster.engine import make_client
from ccserver.config import NodeConfig, NodeTLS, StorageConfig
from ccserver.tes.staging import stage_in, stage_out
from tests.cluster.engines import Engine, make_tls_files, save_images
from tests.tes.staging.conftest import IMAGE, LABEL, HttpServer, Task


@pytest.fixture(scope="module")
def tls_client(engine: docker.DockerClient) -> Iterator[docker.DockerClient]:
    root = Path(tempfile.mkdtemp(prefix="ccengine-staging-", dir="/tmp"))
    tls = make_tls_files(root / "tls")
    e = Engine("staging-tls", root / "engine", tls=tls, tcp_hosts=("127.0.0.1",))
    try:
        e.start()
        e.load_images(save_images([IMAGE], root / "busybox.tar"), [IMAGE])
        # the client the daemon makes for such a node
        node = NodeConfig(
            name="staging-tls",
            base_url=e.tcp_url("127.0.0.1"),
            tls=NodeTLS(
                verify=tls.ca, client_cert=(tls.client_cert, tls.client_key), assert_hostname=None, ca_cert=None
            ),
        )
        client = make_client(node, timeout=60)
        assert client.api.base_url.startswith("https://")
        yield client
        client.close()
    finally:
        e.destroy()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def remote_task(tls_client: docker.DockerClient) -> Iterator[Task]:
    volume = tls_client.volumes.create(name=f"tes-staging-{uuid.uuid4().hex[:12]}", labels=LABEL)
    container = tls_client.containers.create(
        IMAGE, ["true"], volumes={volume.name: {"bind": "/data", "mode": "rw"}}, labels=LABEL
    )
    yield Task(tls_client, container.id, volume.name)
    container.remove(force=True)
    volume.remove(force=True)


def test_inputs_and_outputs_through_a_tls_engine(remote_task: Task, http_server: HttpServer, file_root: Path) -> None:
    storage = StorageConfig(file_roots=(str(file_root),))
    data = bytes(range(256)) * 8192  # 2 MiB
    (http_server.root / "in.bin").write_bytes(data)
    deadline = time.monotonic() + 120
    stage_in(
        remote_task.client,
        remote_task.container,
        [{"url": f"{http_server.url}/in.bin", "path": "/data/in/in.bin"}, {"path": "/data/in/c.txt", "content": "c"}],
        storage,
        deadline,
    )
    assert remote_task.read("/data/in/in.bin") == data
    remote_task.run("mkdir -p /data/out/d && printf made > /data/out/d/made.txt")
    logs, _ = stage_out(
        remote_task.client,
        remote_task.container,
        [{"url": f"file://{file_root}/out", "path": "/data/out/d", "type": "DIRECTORY"}],
        storage,
        deadline,
    )
    assert (file_root / "out/made.txt").read_bytes() == b"made"
    assert logs == [{"url": f"file://{file_root}/out/made.txt", "path": "/data/out/d/made.txt", "size_bytes": "4"}]
