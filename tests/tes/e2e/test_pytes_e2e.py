"""TES tasks end to end: the real py-tes 1.1 client, a real daemon, the real Docker engine,
inputs from real HTTP and FTP servers, outputs to ``file://`` and by HTTP PUT, checked byte
for byte; on the embedded store and on FerretDB."""

from __future__ import annotations

import os
import time

import pytest

from tests.resilience.harness import wait_until
from tests.tes.e2e.conftest import BUCKET, IMAGE, Tes

pytestmark = pytest.mark.timeout(600)


def executor(script: str, **more: object) -> dict[str, object]:
    return {"image": IMAGE, "command": ["sh", "-c", script], **more}


def test_two_executors_share_a_file_and_one_writes_stdout_to_a_file(tes: Tes) -> None:
    a = os.urandom(3000) + b"\nend of a\n"
    b = b"b from ftp \xff\x00\n" * 200
    (tes.served / "a.bin").write_bytes(a)
    (tes.served / "b.bin").write_bytes(b)
    out = tes.file_root / "shared-out"
    task = {
        "name": "share",
        "inputs": [
            {"path": "/in/a.bin", "url": f"{tes.http.url}/a.bin"},
            {"path": "/in/b.bin", "url": f"{tes.ftp.url}/b.bin"},
            {"path": "/in/note.txt", "content": "inline note\n"},
        ],
        "outputs": [
            {"path": "/work/joined.bin", "url": f"file://{out}/joined.bin"},
            {"path": "/work/listing.txt", "url": f"{tes.http.url}/put/listing.txt"},
            {"path": "/work/joined.bin", "url": f"{tes.ftp.url}/up/joined.bin"},
        ],
        "executors": [
            executor("cat /in/a.bin /in/b.bin /in/note.txt > /work/joined.bin"),
            executor("wc -c < /work/joined.bin", stdout="/work/listing.txt", workdir="/work"),
        ],
        "volumes": ["/work"],
    }
    done = tes.client.run(task)
    assert done["state"] == "COMPLETE", done
    joined = a + b + b"inline note\n"
    assert (out / "joined.bin").read_bytes() == joined
    assert (tes.served / "up" / "joined.bin").read_bytes() == joined
    assert tes.http.uploaded("/put/listing.txt") == f"{len(joined)}\n".encode()
    (log,) = done["logs"]
    assert [e["exit_code"] for e in log["logs"]] == [0, 0]
    sizes = {(o["url"], o["path"]): int(o["size_bytes"]) for o in log["outputs"]}
    assert sizes[(f"file://{out}/joined.bin", "/work/joined.bin")] == len(joined)
    assert sizes[(f"{tes.http.url}/put/listing.txt", "/work/listing.txt")] == len(f"{len(joined)}\n")
    # the FTP password is masked in every answer, the task log included
    assert "ftp-secret-pw-42" not in str(done)


def test_directories_in_and_out_and_wildcard_outputs(tes: Tes) -> None:
    tree = tes.file_root / "tree-in"
    (tree / "sub" / "deeper").mkdir(parents=True)
    (tree / "top.txt").write_bytes(b"top\n")
    (tree / "sub" / "mid.bin").write_bytes(os.urandom(5000))
    (tree / "sub" / "deeper" / "low.txt").write_bytes(b"low\n")
    ftp_tree = tes.served / "ftp-tree"
    (ftp_tree / "x").mkdir(parents=True)
    (ftp_tree / "x" / "y.txt").write_bytes(b"y over ftp\n")
    out_dir, wild = tes.file_root / "tree-out", tes.file_root / "wild-out"
    task = {
        "name": "directories",
        "inputs": [
            {"path": "/data/tree", "url": f"file://{tree}", "type": "DIRECTORY"},
            {"path": "/data/ftp", "url": f"{tes.ftp.url}/ftp-tree", "type": "DIRECTORY"},
        ],
        "outputs": [
            {"path": "/data/tree", "url": f"file://{out_dir}", "type": "DIRECTORY"},
            {"path": "/res/*.txt", "path_prefix": "/res/", "url": f"file://{wild}", "type": "FILE"},
            {"path": "/res/*.txt", "path_prefix": "/res/", "url": f"{tes.http.url}/wild", "type": "FILE"},
        ],
        "executors": [
            executor(
                "mkdir -p /res && cp /data/ftp/x/y.txt /data/tree/sub/from-ftp.txt"
                " && echo one > /res/1.txt && echo two > /res/2.txt && echo no > /res/3.log"
            )
        ],
    }
    done = tes.client.run(task)
    assert done["state"] == "COMPLETE", done
    expected = {
        "top.txt": b"top\n",
        "sub/mid.bin": (tree / "sub" / "mid.bin").read_bytes(),
        "sub/deeper/low.txt": b"low\n",
        "sub/from-ftp.txt": b"y over ftp\n",
    }
    found = {str(p.relative_to(out_dir)): p.read_bytes() for p in out_dir.rglob("*") if p.is_file()}
    assert found == expected
    assert {p.name: p.read_bytes() for p in wild.iterdir()} == {"1.txt": b"one\n", "2.txt": b"two\n"}
    assert tes.http.uploaded("/wild/1.txt") == b"one\n" and tes.http.uploaded("/wild/2.txt") == b"two\n"
    assert tes.http.uploaded("/wild/3.log") is None
    listed = {o["path"]: int(o["size_bytes"]) for o in done["logs"][0]["outputs"]}
    assert listed["/data/tree/sub/mid.bin"] == 5000 and listed["/res/1.txt"] == 4


def test_a_failing_executor_ends_the_task_in_executor_error(tes: Tes) -> None:
    task = {
        "name": "fails",
        "executors": [executor("echo before; echo oops >&2; exit 3"), executor("echo never")],
    }
    done = tes.client.run(task)
    assert done["state"] == "EXECUTOR_ERROR", done
    (log,) = done["logs"]  # not retried: the user's command failed
    (only,) = log["logs"]  # the second executor never ran
    assert only["exit_code"] == 3
    assert only["stdout"] == "before\n" and only["stderr"] == "oops\n"


def test_ignore_error_runs_the_next_executor(tes: Tes) -> None:
    out = tes.file_root / "ignored"
    task = {
        "name": "ignores",
        "outputs": [{"path": "/work/after.txt", "url": f"file://{out}/after.txt"}],
        "executors": [
            executor("echo half > /work/after.txt; exit 7", ignore_error=True),
            executor("echo done >> /work/after.txt"),
        ],
        "volumes": ["/work"],
    }
    done = tes.client.run(task)
    assert done["state"] == "COMPLETE", done
    assert [e["exit_code"] for e in done["logs"][0]["logs"]] == [7, 0]
    assert (out / "after.txt").read_bytes() == b"half\ndone\n"


def test_cancel_of_a_sleeping_task_leaves_nothing_on_the_engine(tes: Tes) -> None:
    task = {
        "name": "sleeper",
        "inputs": [{"path": "/in/x.txt", "content": "x"}],
        "executors": [executor("echo started; sleep 300")],
        "volumes": ["/scratch"],
    }
    task_id = tes.client.create(task)
    tes.client.wait(task_id, "RUNNING")
    wait_until(
        lambda: tes.client.get(task_id)["logs"][0]["logs"],
        lambda logs: bool(logs) and "started" in (logs[0].get("stdout") or ""),
        60,
        "the executor's output while it runs",
        interval=1.0,
    )
    assert tes.leftovers(task_id)["containers"], "the running task has no container with its label"
    started = time.monotonic()
    tes.client.cancel(task_id)
    done = tes.client.wait(task_id, "CANCELED", 90)
    assert time.monotonic() - started < 90
    assert tes.leftovers(task_id) == {"containers": [], "volumes": []}
    assert done["state"] == "CANCELED"


def test_a_task_too_large_for_every_node_fails_at_once(tes: Tes) -> None:
    started = time.monotonic()
    done = tes.client.run({"name": "huge", "resources": {"ram_gb": 100000}, "executors": [executor("true")]})
    assert done["state"] == "SYSTEM_ERROR", done
    assert time.monotonic() - started < 60
    lines = " ".join(line for log in done.get("logs") or [] for line in log.get("system_logs") or [])
    assert "fits no node" in lines or "too large" in lines, done
    assert tes.leftovers(done["id"]) == {"containers": [], "volumes": []}


def test_s3_inputs_and_outputs_through_the_configured_endpoint(tes: Tes) -> None:
    body = os.urandom(70_000)
    tes.s3.put_object(Bucket=BUCKET, Key="in/data.bin", Body=body)
    tes.s3.put_object(Bucket=BUCKET, Key="in/tree/one.txt", Body=b"one\n")
    tes.s3.put_object(Bucket=BUCKET, Key="in/tree/sub/two.txt", Body=b"two\n")
    task = {
        "name": "s3",
        "inputs": [
            {"path": "/in/data.bin", "url": f"s3://{BUCKET}/in/data.bin"},
            {"path": "/in/tree", "url": f"s3://{BUCKET}/in/tree", "type": "DIRECTORY"},
        ],
        "outputs": [
            {"path": "/out/copy.bin", "url": f"s3://{BUCKET}/out/copy.bin"},
            {"path": "/out/tree", "url": f"s3://{BUCKET}/out/tree", "type": "DIRECTORY"},
        ],
        "executors": [
            executor("cat /in/data.bin > /out/copy.bin && cp -r /in/tree /out/ && echo new > /out/tree/new.txt")
        ],
        "volumes": ["/out"],
    }
    done = tes.client.run(task)
    assert done["state"] == "COMPLETE", done
    get = lambda key: tes.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()  # noqa: E731
    assert get("out/copy.bin") == body
    assert get("out/tree/one.txt") == b"one\n" and get("out/tree/sub/two.txt") == b"two\n"
    assert get("out/tree/new.txt") == b"new\n"
