"""Helpers of the benchmarks in bench/ that run containers on the local engine (bench/tasks.py,
bench/tes.py): the load average, CPU seconds of processes and of the machine, the engine's
container events with their times, spreads of durations, and waiting until no other ccserver
uses the engine."""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Iterable

import docker

from ccserver.cluster.docker_ops import KIND_LABEL

SOCKET = "unix:///var/run/docker.sock"


def load_line(label: str) -> str:
    one, five, fifteen = os.getloadavg()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return f"{label}: load average {one:.2f} {five:.2f} {fifteen:.2f}; CPUs {os.cpu_count()} ({usable} usable)"


def _ticks(path: str) -> float:
    with open(path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_of(pid: int | None, thread: bool = False) -> float:
    """User + system CPU seconds of a process (or of its main thread)."""
    if pid is None:
        return float("nan")
    try:
        return _ticks(f"/proc/{pid}/task/{pid}/stat" if thread else f"/proc/{pid}/stat")
    except (OSError, IndexError, ValueError):
        return float("nan")


def pid_of(command: str, marker: str) -> int | None:
    """The process named ``command`` whose command line holds ``marker``: the dockerd and
    containerd of this engine (tests may run more engines on the machine)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().strip() != command:
                        continue
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        return int(entry)
            except OSError:
                continue
    return None


CONTAINERS_CPUACCT = "/sys/fs/cgroup/cpuacct/docker/cpuacct.usage"  # cgroup v1, cgroupfs driver


def containers_cpu() -> float:
    """CPU seconds of all containers so far (the engine's parent cgroup counts removed ones
    too, and so do other engines on the machine with the same cgroup parent); NaN where there
    is no such file (cgroup v2, systemd driver)."""
    try:
        with open(CONTAINERS_CPUACCT) as f:
            return int(f.read()) / 1e9
    except (OSError, ValueError):
        return float("nan")


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return float(sum(values) - idle), float(sum(values))


class Meter:
    """CPU seconds of the daemon (and its reactor thread), dockerd, containerd, and the busy
    share of the machine over one phase."""

    def __init__(self, daemon_pid: int | None, socket: str = SOCKET) -> None:
        self.pids = {
            "daemon": daemon_pid,
            "dockerd": pid_of("dockerd", socket[len("unix://") :]),
            "containerd": pid_of("containerd", "/var/run/docker/containerd/"),
        }
        self.daemon_pid = daemon_pid
        self.start = self._read()

    def _read(self) -> dict[str, float]:
        values = {name: cpu_of(pid) for name, pid in self.pids.items()}
        values["reactor"] = cpu_of(self.daemon_pid, thread=True)
        values["busy"], values["total"] = machine_busy()
        values["containers"] = containers_cpu()
        return values

    def line(self, n: int) -> str:
        end = self._read()
        d = {k: end[k] - self.start[k] for k in end}
        busy = d["busy"] / d["total"] if d["total"] else float("nan")
        hz = os.sysconf("SC_CLK_TCK")
        parts = []
        if self.daemon_pid is not None:
            parts.append(f"daemon {d['daemon']:.1f} s (reactor thread {d['reactor']:.1f})")
        whole = d["busy"] / hz
        known = sum(d[k] for k in ("daemon", "dockerd", "containerd", "containers") if d[k] == d[k])
        parts += [
            f"dockerd {d['dockerd']:.1f} s",
            f"containerd {d['containerd']:.1f} s",
            f"inside containers {d['containers']:.1f} s ({d['containers'] / n * 1000:.0f} ms each)",
            f"whole machine {whole:.1f} s ({whole / n * 1000:.0f} ms per container, busy {busy * 100:.0f}%), "
            f"of which the rest (kernel, runc, shims, this script, other work on the machine) "
            f"{whole - known:.1f} s",
        ]
        return "CPU: " + ", ".join(parts)


def spread(values: Iterable[float]) -> str:
    v = sorted(values)
    if not v:
        return "-"
    return f"p50 {statistics.median(v):.2f} p90 {v[min(len(v) - 1, int(0.9 * len(v)))]:.2f} max {v[-1]:.2f}"


class Events:
    """The engine's container events (create/start/die/destroy) with their times, in a thread.

    ``times[name][action]`` is the engine's time of the first such event; ``kinds[name]`` the
    container's ccserver kind label (empty for others)."""

    ACTIONS = ("create", "start", "die", "destroy")

    def __init__(self, client: docker.DockerClient) -> None:
        self.times: dict[str, dict[str, float]] = {}
        self.kinds: dict[str, str] = {}
        self.labels: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()
        self._stream = client.events(decode=True, filters={"type": "container"})
        self._thread = threading.Thread(target=self._read, daemon=True, name="bench-events")
        self._thread.start()

    def _read(self) -> None:
        try:
            for event in self._stream:
                action = event.get("Action") or event.get("status") or ""
                if action not in self.ACTIONS:
                    continue
                attributes = event.get("Actor", {}).get("Attributes", {})
                name = attributes.get("name", "")
                when = int(event.get("timeNano") or 0) / 1e9 or float(event.get("time") or 0)
                with self._lock:
                    self.times.setdefault(name, {}).setdefault(action, when)
                    self.kinds.setdefault(name, attributes.get(KIND_LABEL, ""))
                    self.labels.setdefault(name, attributes)
        except Exception:
            pass  # closed

    def get(self, name: str) -> dict[str, float]:
        with self._lock:
            return dict(self.times.get(name, {}))

    def names(self) -> list[str]:
        with self._lock:
            return list(self.times)

    def close(self) -> None:
        try:
            self._stream.close()
        except Exception:
            pass


def foreign_ccserver_containers(client: docker.DockerClient, mine: set[str] | None = None) -> list[str]:
    found = client.api.containers(all=True, filters={"label": KIND_LABEL})
    names = [c["Names"][0].lstrip("/") for c in found if c.get("Names")]
    return [n for n in names if not mine or n not in mine]


def wait_quiet(client: docker.DockerClient, seconds: float, calm: float = 20.0) -> list[str]:
    """Wait until no container of any ccserver has existed on the engine for ``calm`` seconds
    (test suites leave short gaps between their tests); bounded by ``seconds``.  What is left."""
    deadline = time.monotonic() + seconds
    announced = False
    quiet_since = time.monotonic()
    while True:
        left = foreign_ccserver_containers(client)
        now = time.monotonic()
        if left:
            quiet_since = now
        elif now - quiet_since >= calm:
            return []
        if now > deadline:
            return left or [f"(none for less than {calm:.0f} s)"]
        if left and not announced:
            print(
                f"    waiting up to {seconds:.0f} s for {len(left)} container(s) of another ccserver to go "
                f"(several daemons on one engine remove each other's containers)",
                flush=True,
            )
            announced = True
        time.sleep(1.0)


def peak(points: list[tuple[float, int]]) -> int:
    level = peak = 0
    for _, delta in points:
        level += delta
        peak = max(peak, level)
    return peak
