"""What the test cluster touches on the host, and how it leaves it as it was.

A *slot* (0..15) is one cluster's share of the host: its bridge ``ccskube<slot>``, subnet
10.88.<77+slot>.0/24 and cgroup root ``/ccskube-<slot>``; the slot's lock file under
/run/ccserver-kube is held (flock) by the cluster's mount-namespace holder for its whole life.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any


class KubeClusterError(Exception):
    """The cluster could not be set up or did not come up in time; the message says why."""


SLOTS = 16
SLOT_DIR = Path("/run/ccserver-kube")
# the values kubelet's setupKernelTunables wants (pkg/util/sysctl): bind-mounted in its namespace
KERNEL_TUNABLES = {
    "vm/overcommit_memory": "1",
    "vm/panic_on_oom": "0",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
    "kernel/keys/root_maxkeys": "1000000",
    "kernel/keys/root_maxbytes": "25000000",
}
# host directories that the namespace sees as state dirs of the cluster
NS_DIRS = {
    "/run/containerd": "ns/run-containerd",
    "/var/lib/cni": "ns/var-lib-cni",
    "/var/log/containers": "ns/var-log-containers",
    "/var/lib/kubelet": "ns/var-lib-kubelet",  # kubelet's device-plugins socket is there, whatever --root-dir says
}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _ip_json(*args: str) -> Any:
    done = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, timeout=10, check=False)
    return json.loads(done.stdout or "[]") if done.returncode == 0 else []


def node_ip() -> str:
    """The host's address on its default route (kubelet's InternalIP; it refuses loopback)."""
    for route in _ip_json("-4", "route", "show", "default"):
        for iface in _ip_json("-4", "addr", "show", "dev", route.get("dev", "")):
            for addr in iface.get("addr_info", []):
                if addr.get("scope") == "global":
                    return str(addr["local"])
    for iface in _ip_json("-4", "addr", "show"):
        name = iface.get("ifname", "")
        if name == "lo" or name.startswith(("docker", "br-", "veth", "ccskube")):
            continue
        for addr in iface.get("addr_info", []):
            if addr.get("scope") == "global":
                return str(addr["local"])
    raise KubeClusterError("no global IPv4 address on this host for the kubelet's node IP (it refuses loopback)")


def slot_subnet(slot: int) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(f"10.88.{77 + slot}.0/24")


def subnet_in_use(net: ipaddress.IPv4Network, own_link: str) -> bool:
    for route in _ip_json("-4", "route", "show", "table", "all"):
        dst = route.get("dst", "")
        if dst in ("", "default") or route.get("dev") == own_link:
            continue
        try:
            if ipaddress.IPv4Network(dst, strict=False).overlaps(net):
                return True
        except ValueError:
            continue
    return False


def slot_free(slot: int) -> bool:
    path = SLOT_DIR / f"slot-{slot}.lock"
    if not path.exists():
        return True
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(f, fcntl.LOCK_UN)
        return True


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def cgroup_hierarchies() -> list[Path]:
    """The mounted cgroup hierarchies (v1 controllers and the v2/unified one)."""
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[2] in ("cgroup", "cgroup2"):
            found.append(Path(fields[1]))
    return found


def make_cgroup_root(root: str) -> None:
    """``root`` in every cgroup hierarchy (cpuset filled from the parent), for kubelet's cgroupRoot."""
    for hierarchy in cgroup_hierarchies():
        if hierarchy.name == "unified" and Path("/sys/fs/cgroup/memory").is_dir():
            continue  # a hybrid host: runc makes what it needs there
        mine = hierarchy / root
        mine.mkdir(exist_ok=True)
        for name in ("cpuset.cpus", "cpuset.mems"):
            if (hierarchy / name).exists() and not (mine / name).read_text().strip():
                (mine / name).write_text((hierarchy / name).read_text())
        if (hierarchy / "cgroup.subtree_control").exists():  # cgroup v2
            wanted = set((hierarchy / "cgroup.controllers").read_text().split()) & {
                "cpu",
                "cpuset",
                "memory",
                "pids",
                "io",
                "hugetlb",
            }
            for controller in sorted(wanted):
                try:
                    (mine / "cgroup.subtree_control").write_text(f"+{controller}")
                except OSError:
                    pass


def remove_cgroups(root: str | None, timeout: float = 20.0) -> None:
    """SIGKILL every process left in the cgroups under ``root`` (the pods), then remove them."""
    if not root:
        return
    tops = [h / root for h in cgroup_hierarchies() if (h / root).is_dir()]
    deadline = time.monotonic() + timeout
    while True:
        pids: set[int] = set()
        for top in tops:
            for procs in top.rglob("cgroup.procs"):
                try:
                    pids.update(int(p) for p in procs.read_text().split())
                except OSError:
                    pass
        if not pids or time.monotonic() >= deadline:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    for top in tops:
        for directory in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            try:
                directory.rmdir()
            except OSError:
                pass
        try:
            top.rmdir()
        except OSError:
            pass
