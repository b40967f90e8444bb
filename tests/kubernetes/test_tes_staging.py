"""The daemon's side of staging TES tasks on a cluster (ccserver.tes.kube_staging) with the
real staging code and ``file://`` storage, and the pod's Job (ccserver.kubernetes.tes_jobs).
The pods' own steps run on the real cluster in tests/kube/test_kube_tes.py."""

from __future__ import annotations

import io
import tarfile
import time
from pathlib import Path

import pytest

from ccserver.config import KubeClusterConfig, StorageConfig
from ccserver.errors import Invalid, NotFound
from ccserver.kubernetes import staging_step, tes_jobs
from ccserver.kubernetes.jobs import APP, pod_waiting
from ccserver.tes import staging
from ccserver.tes.kube_staging import Spool, SpoolClient, piece_bytes
from ccserver.tes.output_archive import archive_path


def unpack(spool: Spool, root: Path) -> None:
    """What the pod's staging-in step does, into ``root`` instead of ``/``."""
    for index, entry in enumerate(spool.manifest()):
        data = b""
        while len(data) < entry["size"]:
            data += spool.input_piece(index, len(data), 1000)
        with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tar:
            tar.extractall(root / entry["dir"].lstrip("/"), filter="fully_trusted")


def packed(path: Path, name: str) -> bytes:
    """What the pod's staging-out step sends for ``path``."""
    buf = io.BytesIO()
    with staging_step.Files.open(fileobj=buf, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        tar.add(path, arcname=name)
    return buf.getvalue()


def test_inputs_go_through_the_spool_in_pieces(tmp_path: Path) -> None:
    source = tmp_path / "store"
    (source / "dir" / "sub").mkdir(parents=True)
    (source / "one.txt").write_bytes(b"first input\n" * 500)
    (source / "dir" / "sub" / "two.bin").write_bytes(bytes(range(256)) * 40)
    spool = Spool(tmp_path / "spool", [])
    spool.root.mkdir()
    storage = StorageConfig(file_roots=(str(source),))
    inputs = [
        {"path": "/data/one.txt", "url": f"file://{source}/one.txt", "type": "FILE"},
        {"path": "/data/tree", "url": f"file://{source}/dir", "type": "DIRECTORY"},
        {"path": "/etc/inline.cfg", "content": "a = 1\n"},
    ]
    lines = staging.stage_in(SpoolClient(spool), "", inputs, storage, time.monotonic() + 60)  # type: ignore[arg-type]  # the spool stands for the engine
    assert len(lines) == 3 and len(spool.manifest()) == 3
    pod = tmp_path / "pod"
    unpack(spool, pod)
    assert (pod / "data/one.txt").read_bytes() == b"first input\n" * 500
    assert (pod / "data/tree/sub/two.bin").read_bytes() == bytes(range(256)) * 40
    assert (pod / "etc/inline.cfg").read_text() == "a = 1\n"
    with pytest.raises(NotFound):
        spool.input_piece(7, 0, 10)
    with pytest.raises(Invalid):
        spool.input_piece(0, 10**9, 10)


def test_outputs_sent_in_pieces_are_uploaded_by_the_real_staging(tmp_path: Path) -> None:
    pod = tmp_path / "pod"
    (pod / "out" / "deep").mkdir(parents=True)
    (pod / "out" / "result.txt").write_text("the result\n")
    (pod / "out" / "deep" / "a.csv").write_text("x,y\n1,2\n")
    (pod / "out" / "b.csv").write_text("3,4\n")
    target = tmp_path / "results"
    target.mkdir()
    outputs = [
        {"path": "/out/result.txt", "url": f"file://{target}/result.txt", "type": "FILE"},
        {"path": "/out/deep", "url": f"file://{target}/deep", "type": "DIRECTORY"},
        {"path": "/out/*.csv", "url": f"file://{target}/csv", "type": "FILE", "path_prefix": "/out"},
        {"path": "/out/missing.txt", "url": f"file://{target}/missing.txt", "type": "FILE"},
    ]
    paths = [archive_path(o["path"]) for o in outputs]
    assert paths == ["/out/result.txt", "/out/deep", "/out", "/out/missing.txt"]
    spool = Spool(tmp_path / "spool", paths)
    spool.root.mkdir()
    for index, path in enumerate(paths[:3]):
        data = packed(pod / path.lstrip("/"), Path(path).name)
        offset = 0
        for start in range(0, len(data), 700):  # pieces, one of them sent twice
            piece = data[start : start + 700]
            offset = spool.output_piece(index, start, piece, 700, False, False, "", False)
            assert spool.output_piece(index, start, piece, 700, False, False, "", False) == offset
        with pytest.raises(Invalid, match="bytes have come"):
            spool.output_piece(index, offset + 5, b"gap", 700, False, False, "", False)
        is_dir = (pod / path.lstrip("/")).is_dir()
        assert spool.output_piece(index, offset, b"", 700, True, is_dir, Path(path).name, False) == len(data)
        assert spool.output_piece(index, 0, b"again", 700, False, False, "", False) == len(data)  # complete: kept
    with pytest.raises(NotFound):
        spool.output_piece(99, 0, b"", 700, True, False, "", False)
    assert not spool.complete()
    spool.output_piece(3, 0, b"", 700, True, False, "", True)
    assert spool.complete()
    with pytest.raises(Invalid):
        spool.output_piece(0, 0, b"x" * 701, 700, False, False, "", False)
    storage = StorageConfig(file_roots=(str(target),))
    with pytest.raises(staging.StagingError, match=r"outputs\[3\].*missing.txt"):
        staging.stage_out(SpoolClient(spool), "", outputs, storage, time.monotonic() + 60)  # type: ignore[arg-type]  # the spool stands for the engine
    logs, lines = staging.stage_out(SpoolClient(spool), "", outputs[:3], storage, time.monotonic() + 60)  # type: ignore[arg-type]  # the spool stands for the engine
    assert (target / "result.txt").read_text() == "the result\n"
    assert (target / "deep" / "a.csv").read_text() == "x,y\n1,2\n"
    assert (target / "csv" / "b.csv").read_text() == "3,4\n"
    assert sorted(log["path"] for log in logs) == ["/out/b.csv", "/out/deep/a.csv", "/out/result.txt"]
    assert len(lines) == 3


def test_the_pod_runs_the_steps_and_executors_in_order_with_the_tasks_resources() -> None:
    config = KubeClusterConfig(name="k", callback_url="http://10.0.0.1:5000", staging_image="stager:1")
    executors = [
        {"image": "a:1", "command": ["sh", "-c", "echo one > /data/x"], "env": {"K": "v"}, "workdir": "/data"},
        {"image": "b:1", "command": ["cat", "/data/x"]},
    ]
    labels = {"io.curious-containers.daemon": "d"}

    def job(inputs: bool, outputs: list[str]) -> dict:
        return tes_jobs.build_tes_job(
            config,
            name="ccserver-tes-abc-1",
            labels=labels,
            executors=executors,
            mounts=["/data"],
            ram_mb=300,
            cpus=0.5,
            pull_policy="never",
            staging_url="http://10.0.0.1:5000/tes-staging/T" if inputs or outputs else None,
            has_inputs=inputs,
            output_paths=outputs,
            piece_bytes=piece_bytes(8 * 1024 * 1024),
        )

    body = job(True, ["/data/x"])
    pod = body["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["stage-in", "executor-0", "executor-1"]
    assert [c["name"] for c in pod["containers"]] == [APP]
    assert pod["initContainers"][1]["command"] == ["sh", "-c", "echo one > /data/x"]
    assert pod["initContainers"][1]["workingDir"] == "/data"
    assert pod["initContainers"][1]["env"] == [{"name": "K", "value": "v"}]
    assert pod["containers"][0]["image"] == "stager:1" and pod["containers"][0]["command"][-1] == "out"
    for container in pod["initContainers"] + pod["containers"]:
        assert container["resources"] == {
            "limits": {"cpu": "500m", "memory": "300Mi"},
            "requests": {"cpu": "500m", "memory": "300Mi"},
        }
        assert container["volumeMounts"] == [{"mountPath": "/data", "name": "v0"}]
        assert container["imagePullPolicy"] == "Never"
    assert body["spec"]["backoffLimit"] == 0 and "suspend" not in body["spec"]
    assert body["metadata"]["labels"]["io.curious-containers.container"] == "ccserver-tes-abc-1"
    # no inputs or outputs: ordinary images only, the last executor is the pod's container
    plain = job(False, [])["spec"]["template"]["spec"]
    assert [c["name"] for c in plain["initContainers"]] == ["executor-0"]
    assert [(c["name"], c["image"]) for c in plain["containers"]] == [(APP, "b:1")]


def test_a_pod_running_its_init_containers_is_not_pending_but_a_missing_image_is_hopeless() -> None:
    def pod(*init: dict) -> dict:
        return {"status": {"phase": "Pending", "initContainerStatuses": list(init)}}

    running = pod(
        {"name": "stage-in", "state": {"terminated": {"exitCode": 0}}}, {"name": "executor-0", "state": {"running": {}}}
    )
    assert pod_waiting(running) is None
    missing = pod(
        {"name": "stage-in", "state": {"terminated": {"exitCode": 0}}},
        {"name": "executor-0", "state": {"waiting": {"reason": "ErrImageNeverPull", "message": "no image"}}},
    )
    waiting = pod_waiting(missing)
    assert waiting is not None and waiting.hopeless and "executor-0" in waiting.reason
    assert pod_waiting(pod({"name": "stage-in", "state": {"waiting": {"reason": "PodInitializing"}}})) is not None
