"""Outputs made by running a container on the task's volume, then read with the engine's
archive API from the created container and uploaded; compared byte for byte."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from ccserver.config import StorageConfig
from ccserver.tes.staging import StagingError, stage_in, stage_out
from tests.tes.staging.conftest import FTP_PASSWORD, FtpServer, HttpServer, S3Server, Task

#: what the "executor" leaves in the volume
SCRIPT = r"""
set -e
mkdir -p /data/out/tree/sub/deeper /data/out/tree/empty /data/out/wild/a /data/out/wild/b
printf 'result\n' > /data/out/result.txt
printf 'top\n' > /data/out/tree/top.txt
busybox seq 1 20000 > /data/out/tree/sub/numbers.txt
printf '\001\002\377' > /data/out/tree/sub/deeper/bytes.bin
ln -s top.txt /data/out/tree/link.txt
printf 'a1' > /data/out/wild/a/1.txt
printf 'a2' > /data/out/wild/a/2.log
printf 'b1' > /data/out/wild/b/1.txt
printf 'c' > /data/out/wild/c.txt
mkdir -p /data/out/wild/d.txt && printf 'in d' > /data/out/wild/d.txt/inner
mkdir -p /data/out/wild/a/deep && printf 'deep' > /data/out/wild/a/deep/3.txt  # * stops at /
"""
NUMBERS = "".join(f"{i}\n" for i in range(1, 20001)).encode()
TREE = {"top.txt": b"top\n", "sub/numbers.txt": NUMBERS, "sub/deeper/bytes.bin": b"\1\2\377"}


@pytest.fixture
def produced(task: Task) -> Task:
    task.run(SCRIPT)
    return task


def sizes(logs: list[dict[str, str]]) -> dict[str, str]:
    return {log["path"]: log["size_bytes"] for log in logs}


def test_file_and_directory_to_file_roots(
    produced: Task, storage: StorageConfig, file_root: Path, deadline: float
) -> None:
    outputs = [
        {"url": f"file://{file_root}/results/result.txt", "path": "/data/out/result.txt", "type": "FILE"},
        {"url": f"file://{file_root}/results/tree", "path": "/data/out/tree", "type": "DIRECTORY"},
    ]
    logs, lines = stage_out(produced.client, produced.container, outputs, storage, deadline)
    assert (file_root / "results/result.txt").read_bytes() == b"result\n"
    for rel, data in TREE.items():
        assert (file_root / "results/tree" / rel).read_bytes() == data
    assert (file_root / "results/tree/empty").is_dir()  # a directory stays a directory
    assert not (file_root / "results/tree/link.txt").exists()  # links are not uploaded
    assert logs[0] == {
        "url": f"file://{file_root}/results/result.txt",
        "path": "/data/out/result.txt",
        "size_bytes": "7",
    }
    assert sizes(logs[1:]) == {f"/data/out/tree/{rel}": str(len(data)) for rel, data in TREE.items()}
    assert {log["url"] for log in logs[1:]} == {f"file://{file_root}/results/tree/{rel}" for rel in TREE}
    assert "link.txt" in lines[1] and lines[1].startswith("outputs[1] /data/out/tree -> ")


def test_directory_to_s3_is_one_object_per_file(
    produced: Task, storage: StorageConfig, s3_server: S3Server, deadline: float
) -> None:
    outputs = [
        {"url": f"s3://{s3_server.bucket}/run1/tree/", "path": "/data/out/tree", "type": "DIRECTORY"},
        {"url": f"s3://{s3_server.bucket}/run1/result.txt", "path": "/data/out/result.txt"},
    ]
    logs, _ = stage_out(produced.client, produced.container, outputs, storage, deadline)
    s3 = s3_server.client()
    keys = {o["Key"]: o["Size"] for o in s3.list_objects_v2(Bucket=s3_server.bucket)["Contents"]}
    assert keys == {
        "run1/result.txt": 7,
        **{f"run1/tree/{rel}": len(data) for rel, data in TREE.items()},
    }
    for rel, data in TREE.items():
        assert s3.get_object(Bucket=s3_server.bucket, Key=f"run1/tree/{rel}")["Body"].read() == data
    assert len(logs) == 4


def test_http_put_file_and_directory(
    produced: Task, storage: StorageConfig, http_server: HttpServer, deadline: float
) -> None:
    outputs = [
        {"url": f"{http_server.url}/up/result.txt", "path": "/data/out/result.txt"},
        {"url": f"{http_server.url}/up/tree", "path": "/data/out/tree", "type": "DIRECTORY"},
    ]
    logs, _ = stage_out(produced.client, produced.container, outputs, storage, deadline)
    assert (http_server.uploads / "up/result.txt").read_bytes() == b"result\n"
    for rel, data in TREE.items():
        assert (http_server.uploads / "up/tree" / rel).read_bytes() == data
    assert len(logs) == 4


def test_ftp_stor_file_and_directory(
    produced: Task, storage: StorageConfig, ftp_server: FtpServer, deadline: float
) -> None:
    outputs = [
        {"url": f"{ftp_server.url}/new/dir/result.txt", "path": "/data/out/result.txt"},
        {"url": f"{ftp_server.url}/tree", "path": "/data/out/tree", "type": "DIRECTORY"},
    ]
    logs, lines = stage_out(produced.client, produced.container, outputs, storage, deadline)
    assert (ftp_server.root / "new/dir/result.txt").read_bytes() == b"result\n"
    for rel, data in TREE.items():
        assert (ftp_server.root / "tree" / rel).read_bytes() == data
    assert (ftp_server.root / "tree/empty").is_dir()
    assert FTP_PASSWORD not in repr(lines)
    # the OutputFileLog URLs are the task's own (with what it gave), as TES has them
    assert logs[0]["url"] == f"{ftp_server.url}/new/dir/result.txt"


def test_wildcards_with_path_prefix(
    produced: Task, storage: StorageConfig, file_root: Path, s3_server: S3Server, deadline: float
) -> None:
    outputs = [
        {"url": f"file://{file_root}/w", "path": "/data/out/wild/*/*.txt", "path_prefix": "/data/out/wild/"},
        {"url": f"s3://{s3_server.bucket}/w/", "path": "/data/out/wild/?.txt", "path_prefix": "/data/out"},
        {"url": f"file://{file_root}/none", "path": "/data/out/wild/*.csv", "path_prefix": "/data/out/wild"},
    ]
    logs, lines = stage_out(produced.client, produced.container, outputs, storage, deadline)
    assert sorted(p.relative_to(file_root).as_posix() for p in (file_root / "w").rglob("*") if p.is_file()) == [
        "w/a/1.txt",
        "w/b/1.txt",
    ]
    assert (file_root / "w/a/1.txt").read_bytes() == b"a1"
    s3 = s3_server.client()
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=s3_server.bucket)["Contents"])
    # c.txt matches; d.txt is a matching directory, uploaded as its tree
    assert keys == ["w/wild/c.txt", "w/wild/d.txt/inner"]
    assert s3.get_object(Bucket=s3_server.bucket, Key="w/wild/d.txt/inner")["Body"].read() == b"in d"
    assert sizes(logs) == {
        "/data/out/wild/a/1.txt": "2",
        "/data/out/wild/b/1.txt": "2",
        "/data/out/wild/c.txt": "1",
        "/data/out/wild/d.txt/inner": "4",
    }
    assert lines[2].endswith("(nothing matched)")


def test_missing_file_output_is_named(produced: Task, storage: StorageConfig, file_root: Path, deadline: float) -> None:
    outputs = [
        {"url": f"file://{file_root}/ok.txt", "path": "/data/out/result.txt"},
        {"url": f"file://{file_root}/missing.txt", "path": "/data/out/missing.txt"},
    ]
    with pytest.raises(StagingError) as caught:
        stage_out(produced.client, produced.container, outputs, storage, deadline)
    assert str(caught.value) == (
        f"outputs[1] (file://{file_root}/missing.txt): /data/out/missing.txt does not exist in the container"
    )


def test_wrong_types_are_named(produced: Task, storage: StorageConfig, file_root: Path, deadline: float) -> None:
    with pytest.raises(StagingError, match=r"^outputs\[0\] .*: /data/out/tree is a directory, not a FILE"):
        stage_out(
            produced.client,
            produced.container,
            [{"url": f"file://{file_root}/t", "path": "/data/out/tree"}],
            storage,
            deadline,
        )
    with pytest.raises(StagingError, match=r"^outputs\[0\] .*: /data/out/result.txt is not a directory"):
        stage_out(
            produced.client,
            produced.container,
            [{"url": f"file://{file_root}/r", "path": "/data/out/result.txt", "type": "DIRECTORY"}],
            storage,
            deadline,
        )


def test_file_output_outside_the_roots_is_refused(
    produced: Task, storage: StorageConfig, file_root: Path, tmp_path: Path, deadline: float
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (file_root / "escape").symlink_to(outside)
    (file_root / "planted.txt").symlink_to(outside / "planted.txt")  # a link where the file goes
    cases = [
        (f"file://{outside}/r.txt", "outside the allowed directories ([tes.storage] file_roots)"),
        (f"file://{file_root}/escape/r.txt", "resolves to"),
        (f"file://{file_root}/planted.txt", "Too many levels of symbolic links"),
    ]
    for url, reason in cases:
        with pytest.raises(StagingError) as caught:
            stage_out(
                produced.client, produced.container, [{"url": url, "path": "/data/out/result.txt"}], storage, deadline
            )
        assert str(caught.value).startswith(f"outputs[0] ({url}): ") and reason in str(caught.value)
    assert list(outside.iterdir()) == []


def test_symlinked_file_output_is_followed(
    produced: Task, storage: StorageConfig, file_root: Path, deadline: float
) -> None:
    logs, _ = stage_out(
        produced.client,
        produced.container,
        [{"url": f"file://{file_root}/l.txt", "path": "/data/out/tree/link.txt"}],
        storage,
        deadline,
    )
    assert (file_root / "l.txt").read_bytes() == b"top\n"
    assert logs == [{"url": f"file://{file_root}/l.txt", "path": "/data/out/tree/link.txt", "size_bytes": "4"}]


def test_round_trip_of_a_staged_input(task: Task, storage: StorageConfig, file_root: Path, deadline: float) -> None:
    data = bytes(range(256)) * 4096
    (file_root / "in.bin").write_bytes(data)
    stage_in(
        task.client,
        task.container,
        [{"url": f"file://{file_root}/in.bin", "path": "/data/x/in.bin"}],
        storage,
        deadline,
    )
    stage_out(
        task.client,
        task.container,
        [{"url": f"file://{file_root}/out.bin", "path": "/data/x/in.bin"}],
        storage,
        deadline,
    )
    assert (file_root / "out.bin").read_bytes() == data


def test_hard_links_and_a_multipart_s3_upload(
    task: Task, storage: StorageConfig, s3_server: S3Server, file_root: Path, deadline: float
) -> None:
    task.run(
        "set -e; mkdir -p /data/h; busybox dd if=/dev/urandom of=/data/h/big.bin bs=1048576 count=20 2>/dev/null;"
        " printf 'shared' > /data/h/one.txt; ln /data/h/one.txt /data/h/two.txt"
    )
    digest = task.run("busybox sha256sum /data/h/big.bin").split()[0].decode()
    outputs = [
        {"url": f"s3://{s3_server.bucket}/h", "path": "/data/h", "type": "DIRECTORY"},
        {"url": f"file://{file_root}/h", "path": "/data/h", "type": "DIRECTORY"},
    ]
    logs, _ = stage_out(task.client, task.container, outputs, storage, deadline)
    s3 = s3_server.client()
    body = s3.get_object(Bucket=s3_server.bucket, Key="h/big.bin")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == digest and len(body) == 20 * 1024 * 1024
    for name in ("one.txt", "two.txt"):  # the second name of a hard link has no bytes in the tar
        assert s3.get_object(Bucket=s3_server.bucket, Key=f"h/{name}")["Body"].read() == b"shared"
        assert (file_root / "h" / name).read_bytes() == b"shared"
    assert hashlib.sha256((file_root / "h/big.bin").read_bytes()).hexdigest() == digest
    assert sorted(log["url"] for log in logs if log["url"].startswith("s3://")) == [
        f"s3://{s3_server.bucket}/h/{name}" for name in ("big.bin", "one.txt", "two.txt")
    ]
