"""A 300 MB input streams through the daemon in bounded memory, in and out again."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.tes.staging.conftest import HttpServer, Task

SIZE_MB = 300
#: the peak RSS may grow by this much while 300 MB pass (chunks of 1 MiB, buffers, a tar header)
GROWTH_LIMIT_KB = 64 * 1024
REPO = Path(__file__).resolve().parents[3]


def test_300_mb_input_and_output_stream_with_bounded_memory(
    task: Task, http_server: HttpServer, file_root: Path
) -> None:
    digest = hashlib.sha256()
    block = os.urandom(1024 * 1024)
    with open(http_server.root / "big.bin", "wb") as f:
        for i in range(SIZE_MB):
            chunk = i.to_bytes(4, "big") + block[4:]
            digest.update(chunk)
            f.write(chunk)
    (http_server.root / "small.bin").write_bytes(b"warm-up")
    result = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).with_name("stage_large.py")),
            task.container,
            f"{http_server.url}/big.bin",
            "/data/big/big.bin",
            f"file://{file_root}/big.bin",
            str(file_root),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # the bytes arrived whole in the volume, and came back out whole
    assert task.run("busybox sha256sum /data/big/big.bin").split()[0].decode() == digest.hexdigest()
    assert report["logs"] == [
        {"url": f"file://{file_root}/big.bin", "path": "/data/big/big.bin", "size_bytes": str(SIZE_MB * 1024 * 1024)}
    ]
    out = hashlib.sha256()
    with open(file_root / "big.bin", "rb") as f:
        while chunk := f.read(1024 * 1024):
            out.update(chunk)
    assert out.hexdigest() == digest.hexdigest()
    assert report["in_kb"] - report["before_kb"] < GROWTH_LIMIT_KB, report
    assert report["out_kb"] - report["before_kb"] < GROWTH_LIMIT_KB, report
