"""The test engines themselves: a crashed engine with a running container is cleaned up
without a trace (processes, cgroups, mounts, bridge, FORWARD rule, directory)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from tests.cluster.engines import RULE_COMMENT, Engine, save_images

BUSYBOX = "ccserver-test/busybox:1"


def processes_naming(marker: str) -> list[str]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline:
                found.append(f"{entry}: {cmdline}")
    return found


def test_a_crashed_engine_is_destroyed_without_a_trace(engine: Any) -> None:
    engine.images.get(BUSYBOX)  # built by scripts/build-test-images
    root = Path(tempfile.mkdtemp(prefix="ccengine-t-", dir="/tmp"))
    e = Engine("crash", root / "engine")
    try:
        try:
            e.start()
            e.load_images(save_images([BUSYBOX], root / "busybox.tar"), [BUSYBOX])
            client = e.client()
            try:
                container_id = client.containers.run(BUSYBOX, ["sleep", "300"], detach=True).id
            finally:
                client.close()
            bridge = e.bridge
            assert bridge and os.path.exists(f"/sys/class/net/{bridge}")
            e.kill()
            # the crash leaves the container running (its shim outlives dockerd)
            assert processes_naming(str(e.root)), "expected the container's shim to survive the crash"
        finally:
            e.destroy()
        assert not e.root.exists()
        assert processes_naming(str(e.root)) == []
        assert not os.path.exists(f"/sys/class/net/{bridge}")
        with open("/proc/mounts") as f:
            assert str(e.root) not in f.read()
        assert not list(Path("/sys/fs/cgroup").glob(f"*/docker/{container_id}"))
        rules = subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True, timeout=30).stdout
        assert not [r for r in rules.splitlines() if f"-i {bridge} " in r and RULE_COMMENT in r]
        e.destroy()  # twice is fine
    finally:
        shutil.rmtree(root, ignore_errors=True)
