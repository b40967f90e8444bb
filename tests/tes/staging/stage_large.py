"""Run by test_large.py in a fresh interpreter: stage one input and report the peak RSS
before and after (``ru_maxrss`` only grows, so the test process itself cannot measure it)."""

from __future__ import annotations

import json
import resource
import sys
import time

import docker

from ccserver.config import StorageConfig
from ccserver.tes.staging import stage_in, stage_out


def main() -> None:
    container, url, path, out_url = sys.argv[1:5]
    roots = tuple(sys.argv[5:])
    client = docker.from_env(timeout=120)
    storage = StorageConfig(file_roots=roots)
    deadline = time.monotonic() + 600
    # warm up every code path once, so that imports and connection pools count in the baseline
    stage_in(
        client, container, [{"url": url.replace("big.bin", "small.bin"), "path": "/data/small.bin"}], storage, deadline
    )
    stage_out(
        client,
        container,
        [{"url": out_url.replace("big.bin", "small.bin"), "path": "/data/small.bin"}],
        storage,
        deadline,
    )
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    stage_in(client, container, [{"url": url, "path": path}], storage, deadline)
    staged_in = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    in_seconds = time.monotonic() - started
    logs, _ = stage_out(client, container, [{"url": out_url, "path": path}], storage, deadline)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps({"before_kb": before, "in_kb": staged_in, "out_kb": after, "in_seconds": in_seconds, "logs": logs})
    )


if __name__ == "__main__":
    main()
