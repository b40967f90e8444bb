"""Benchmark: what following the output of 50 running containers costs the daemon.

Run from the repository root:  .venv/bin/python bench/logs.py [--containers 50] [--seconds 60]

A real ``twistd -n ccserver`` on the local dockerd (the test harness of tests/livelogs: its
own configuration, embedded store, a user) runs 50 tasks whose application container
(``ccserver-test/busybox:1``) prints a line a second.  With ``[logs] follow = false`` the
daemon's CPU time (user + system, from ``/proc/<pid>/stat``) is measured over 60 s while the
containers run; then the daemon is restarted on the same store with ``follow = true``, finds
the 50 containers running, follows them all, and is measured again over 60 s.  Printed: both
figures as a share of one core, their difference and their ratio.

Target: following costs under 5 % of one core (the difference).  Exit status 0 when it is
met, 1 when not, 2 when the run broke.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ccserver.cluster.engine import bridge_gateway  # noqa: E402
from ccserver.config import NodeConfig  # noqa: E402
from tests.livelogs.harness import LogsCluster  # noqa: E402
from tests.resilience.harness import wait_until  # noqa: E402

TARGET_SHARE = 0.05
TICKS = 'i=0; while [ $i -lt {n} ]; do i=$((i+1)); echo "line $i of $HOSTNAME"; sleep 1; done'


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def measure(pid: int, seconds: float) -> float:
    """CPU seconds per wall second of ``pid`` over ``seconds``."""
    start_cpu, start = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - start_cpu) / (time.monotonic() - start)


def running(cluster: LogsCluster) -> int:
    assert cluster.identity
    labels = ["io.curious-containers.kind=application", f"io.curious-containers.daemon={cluster.identity}"]
    return len(cluster.engine.api.containers(filters={"label": labels, "status": "running"}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--containers", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    print(f"start: load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; CPUs {os.cpu_count()}")
    gateway = bridge_gateway(NodeConfig(name="local", base_url="unix:///var/run/docker.sock", tls=None), 10)
    with tempfile.TemporaryDirectory(prefix="ccserver-bench-logs-") as tmp:
        cluster = LogsCluster(Path(tmp), gateway, logs="follow = false\n", interval=30)
        try:
            daemon = cluster.start()
            lifetime = int(args.seconds * 2 + 240)  # both measurements, the restart, slack
            for _ in range(args.containers):
                cluster.submit(TICKS.format(n=lifetime), ram=16)
            wait_until(lambda: running(cluster), lambda n: n >= args.containers, 180, "every container to run")
            time.sleep(5)  # the launches' own work settles
            assert daemon.process
            idle = measure(daemon.process.pid, args.seconds)
            print(f"not following ([logs] follow = false): daemon CPU {idle * 100:.2f} % of one core")

            cluster.terminate()
            cluster.config.write_text(cluster.config.read_text().replace("follow = false", "follow = true"))
            daemon = cluster.start()
            wait_until(
                lambda: len(set(re.findall(r"following the output of container (\w+)", daemon.output))),
                lambda n: n >= args.containers,
                120,
                "every running container to be followed",
            )
            time.sleep(5)
            assert daemon.process
            following = measure(daemon.process.pid, args.seconds)
            if running(cluster) < args.containers:
                print("FAIL: containers ended during the measurement; lengthen their lifetime")
                return 2
            followed = len(set(re.findall(r"following the output of container (\w+)", daemon.output)))
            stopped = len(re.findall(r"stopped following container", daemon.output))
            print(
                f"following {followed} containers ({stopped} stopped): daemon CPU {following * 100:.2f} % of one core"
            )
        finally:
            cluster.close()
    extra = following - idle
    ratio = following / idle if idle > 0 else float("inf")
    print(f"cost of following {args.containers} containers: {extra * 100:.2f} % of one core; ratio {ratio:.2f}")
    print(f"end: load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    ok = extra < TARGET_SHARE
    print(f"  {'PASS' if ok else 'FAIL'}  following costs under {TARGET_SHARE * 100:.0f} % of one core")
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except AssertionError as e:
        print(f"run broke: {e}")
        sys.exit(2)
