"""Snakemake 9 drives ccserver through its TES executor plugin, end to end.

The plugin (snakemake-executor-plugin-tes, which pins py-tes 0.4) speaks the legacy ``/v1``
dialect.  Each rule becomes one TES task: one executor in ``ccserver-test/snakemake:1`` running
the job script that arrives as a ``content`` input; the data moves inside the container through
Snakemake's S3 storage provider, against a local S3 server (moto) on the Docker bridge, which
both this process and the containers reach.  The final output is read back from S3.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from ccserver.testing.ferretdb import free_port
from tests.resilience.harness import PASSWORD, USER, Cluster

pytestmark = pytest.mark.timeout(600)

SNAKEFILE = """\
rule all:
    input: "result.txt"

rule numbers:
    output: "numbers.txt"
    shell: "seq 1 10 > {output}"

rule total:
    input: "numbers.txt"
    output: "result.txt"
    shell: "python3 -c 'import sys; print(sum(int(n) for n in open(sys.argv[1])))' {input} > {output}"
"""

BUCKET = "workflow"
KEY, SECRET = "testing-key", "testing-secret-0123"


def snakemake_venv() -> Path:
    path = os.environ.get("CCSERVER_SNAKEMAKE_VENV")
    assert path, "CCSERVER_SNAKEMAKE_VENV is not set: scripts/test makes it (lib.sh lock_venv snakemake)"
    return Path(path)


@pytest.fixture
def s3(gateway: str) -> Iterator[str]:
    port = free_port(gateway)
    server = ThreadedMotoServer(ip_address=gateway, port=port, verbose=False)
    server.start()
    url = f"http://{gateway}:{port}"
    client = boto3.client(
        "s3", endpoint_url=url, aws_access_key_id=KEY, aws_secret_access_key=SECRET, region_name="us-east-1"
    )
    client.create_bucket(Bucket=BUCKET)
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture
def cluster(tmp_path: Path, gateway: str) -> Iterator[Cluster]:
    c = Cluster(tmp_path, gateway, interval=1)
    c.start()
    try:
        yield c
    finally:
        c.close()


def test_a_two_rule_workflow_runs_through_the_legacy_dialect(tmp_path: Path, cluster: Cluster, s3: str) -> None:
    work = tmp_path / "workflow"
    work.mkdir()
    (work / "Snakefile").write_text(SNAKEFILE)
    workspace = tmp_path / "workspace"  # the plugin prints $GITHUB_WORKSPACE/funnel.log when a job fails
    workspace.mkdir()
    (workspace / "funnel.log").write_text("(see the ccserver log in the test output)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SNAKEMAKE_"))}
    env.update(
        HOME=str(tmp_path / "home"),
        GITHUB_WORKSPACE=str(workspace),
        SNAKEMAKE_TES_USER=USER,
        SNAKEMAKE_TES_PASSWORD=PASSWORD,
    )
    venv = snakemake_venv()
    command = [
        str(venv / "bin" / "snakemake"),
        "--executor", "tes",
        "--tes-url", cluster.url,
        "--container-image", "ccserver-test/snakemake:1",
        "--default-storage-provider", "s3",
        "--default-storage-prefix", f"s3://{BUCKET}/run",
        "--storage-s3-endpoint-url", s3,
        "--storage-s3-access-key", KEY,
        "--storage-s3-secret-key", SECRET,
        "--jobs", "2",
        "--seconds-between-status-checks", "2",
        "--latency-wait", "5",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, (
        f"snakemake exited {done.returncode}\n--- stdout\n{done.stdout[-4000:]}\n--- stderr\n"
        f"{done.stderr[-6000:]}\n--- ccserver\n{cluster.output()[-6000:]}"
    )
    client = boto3.client(
        "s3", endpoint_url=s3, aws_access_key_id=KEY, aws_secret_access_key=SECRET, region_name="us-east-1"
    )
    result = client.get_object(Bucket=BUCKET, Key="run/result.txt")["Body"].read()
    assert result == b"55\n"
    # both rules ran as TES tasks of this user, through /v1, and completed
    code, listing = cluster.call("GET", "/v1/tasks?view=BASIC")
    assert code == 200, listing
    tasks = listing["tasks"]
    assert len(tasks) == 2 and {t["state"] for t in tasks} == {"COMPLETE"}, tasks
    images = {e["image"] for t in tasks for e in t["executors"]}
    assert images == {"ccserver-test/snakemake:1"}
