"""Fixtures of the TES end-to-end tests: a real ``twistd -n ccserver`` (the resilience tests'
restartable :class:`Cluster`) on the real Docker engine, on both stores, driven by the real
py-tes 1.1 client (``pytes_driver.py`` in its own virtualenv) through ``/ga4gh/tes/v1``; inputs
from a local HTTP and FTP server on the bridge gateway, outputs to ``file://`` below
``[tes.storage] file_roots`` and by HTTP PUT."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import docker
import pytest
from moto.server import ThreadedMotoServer

from ccserver.tes.docker_tes import TASK_LABEL
from ccserver.testing.ferretdb import free_port
from tests.resilience.conftest import gateway  # noqa: F401  (the Docker bridge gateway)
from tests.resilience.harness import PASSWORD, USER, Cluster
from tests.tes.api.conftest import py_tes_1_1  # noqa: F401  (the py-tes 1.1 interpreter)
from tests.tes.e2e.servers import FtpFiles, HttpFiles

IMAGE = "ccserver-test/busybox:1"
DRIVER = Path(__file__).with_name("pytes_driver.py")
TES = "/ga4gh/tes/v1"
#: a task of a few small containers ends well within this, even on a loaded machine
TASK_SECONDS = 120.0


S3_KEY, S3_SECRET, BUCKET = "e2e-key", "e2e-secret-0123", "tes-e2e"


def tes_config(file_root: Path, s3_url: str | None = None) -> str:
    text = (
        "[tes]\ndefault_ram_gb = 0.125\ndefault_cpu_cores = 0.5\ninitializing_timeout_seconds = 120\n"
        f"[tes.storage]\nfile_roots = ['{file_root}']\n"
    )
    if s3_url:
        text += (
            f"[tes.storage.s3]\nendpoint_url = '{s3_url}'\naccess_key_id = '{S3_KEY}'\n"
            f"secret_access_key = '{S3_SECRET}'\n"
        )
    return text


def s3_client(url: str) -> Any:
    return boto3.client(
        "s3", endpoint_url=url, aws_access_key_id=S3_KEY, aws_secret_access_key=S3_SECRET, region_name="us-east-1"
    )


class PyTes:
    """The real py-tes 1.1 client, one operation per process."""

    def __init__(self, python: Path, url: str) -> None:
        self.python = python
        self.url = url

    def _run(self, *args: str, stdin: str | None = None, timeout: float = 60, ok: tuple[int, ...] = (0,)) -> Any:
        done = subprocess.run(
            [str(self.python), str(DRIVER), self.url, USER, PASSWORD, *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={"PATH": "/usr/bin:/bin"},
        )
        assert done.returncode in ok, f"py-tes {args[0]} exited {done.returncode}: {done.stderr[-3000:]}"
        return done.returncode, json.loads(done.stdout)

    def create(self, task: dict[str, Any]) -> str:
        return str(self._run("create", stdin=json.dumps(task))[1]["id"])

    def get(self, task_id: str, view: str = "FULL") -> dict[str, Any]:
        return dict(self._run("get", task_id, view)[1])

    def cancel(self, task_id: str) -> None:
        assert self._run("cancel", task_id)[1] == {}

    def wait(self, task_id: str, states: str, seconds: float = TASK_SECONDS) -> dict[str, Any]:
        code, task = self._run("wait", task_id, states, str(seconds), timeout=seconds + 60, ok=(0, 3))
        assert code == 0, f"task {task_id} not {states} within {seconds} s: {task}"
        return dict(task)

    def run(self, task: dict[str, Any], states: str = "COMPLETE,EXECUTOR_ERROR,SYSTEM_ERROR,CANCELED") -> dict:
        return self.wait(self.create(task), states)


@dataclass
class Tes:
    """One daemon with its storage servers and a client."""

    cluster: Cluster
    client: PyTes
    http: HttpFiles
    ftp: FtpFiles
    s3: Any  # a boto3 client of the S3 server (moto) the daemon is configured with
    served: Path  # what the HTTP and FTP servers serve
    file_root: Path  # [tes.storage] file_roots

    def leftovers(self, task_id: str) -> dict[str, list[str]]:
        """The containers and volumes of the task still on the engine."""
        label = {"label": [f"{TASK_LABEL}={task_id}"]}
        engine = self.cluster.engine
        containers = [c["Names"][0] for c in engine.api.containers(all=True, filters=label)]
        volumes = [v["Name"] for v in engine.api.volumes(filters=label).get("Volumes") or []]
        return {"containers": containers, "volumes": volumes}


@pytest.fixture(scope="module", params=["embedded", "ferretdb"])
def tes(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    gateway: str,  # noqa: F811
    py_tes_1_1: Path,  # noqa: F811
) -> Iterator[Tes]:
    client = docker.from_env(timeout=30)
    try:
        client.images.get(IMAGE)  # built by scripts/build-test-images; never pulled
    finally:
        client.close()
    tmp = tmp_path_factory.mktemp(f"tes-e2e-{request.param}")
    served, file_root = tmp / "served", tmp / "files"
    served.mkdir()
    file_root.mkdir()
    uri = request.getfixturevalue("ferretdb").uri if request.param == "ferretdb" else None
    port = free_port(gateway)
    moto = ThreadedMotoServer(ip_address=gateway, port=port, verbose=False)
    moto.start()
    s3_url = f"http://{gateway}:{port}"
    s3 = s3_client(s3_url)
    s3.create_bucket(Bucket=BUCKET)
    cluster = Cluster(tmp, gateway, uri, interval=1, extra=tes_config(file_root, s3_url))
    http, ftp = HttpFiles(gateway, served), FtpFiles(gateway, served)
    try:
        cluster.start()
        yield Tes(cluster, PyTes(py_tes_1_1, cluster.url), http, ftp, s3, served, file_root)
    finally:
        print(cluster.output()[-20000:])  # shown when a test of the module failed
        cluster.close()
        http.close()
        ftp.close()
        moto.stop()
