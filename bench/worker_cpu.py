"""Benchmark of the CPU a task's container spends beyond its application: the reference worker
(``python3 /opt/container_worker '<settings>'``, its four callbacks answered by a tiny local
callback server) against the bare application (``python3 /opt/app/algorithm.py``), in the
same image, one container at a time, alternating.

Run from the repository root:  .venv/bin/python bench/worker_cpu.py [--repeat 20] [--image TAG]

The figure is CPU time, not wall time: the usage of the container's own cgroup (cgroup v1
``cpuacct.usage``, read inside the container just before it ends, so it counts every process
of the container: the worker, the shell it starts, the application) and the user + system
time of the container's waited-for processes (bash's ``times``).  Both count only the
container's own work, so they hold on a machine loaded by other work, where wall times do not.
The wrapper (``bash -c '<command>; read the cgroup; times'``) is the same for both variants;
its own share (bash's start, about a millisecond) is in both cgroup figures alike.

Printed: per variant the median, p10 and p90 of the cgroup CPU and of the children's user +
system time over ``--repeat`` containers, and the ratio worker / bare and the difference of
the medians (what the worker costs per container); the load average at the start and the end.
Exit status: 0 when the run is complete, 2 when it broke (a container that did not exit 0, a
worker that did not make its four callbacks, a time limit).  Every container carries the label
``ccserver-bench-worker-cpu`` and is removed, also on failure.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import docker  # noqa: E402

from ccserver.cluster.engine import bridge_gateway  # noqa: E402
from ccserver.config import NodeConfig  # noqa: E402
from ccserver.testing.benchkit import load_line  # noqa: E402

SOCKET = "unix:///var/run/docker.sock"
IMAGE = "ccserver-test/app-noinput:1"
APP_COMMAND = "python3 /opt/app/algorithm.py"
WORKER_COMMAND = 'python3 /opt/container_worker "$1"'
LABEL = "ccserver-bench-worker-cpu"
RAM_MB = 64
CALLBACKS = 4  # application container, no input and no result files: types 0 to 3
#: the wrapper: the command, then the container's cgroup usage (ns) and bash's `times`
#: (its own line, then its children's user and system time); `read` is a builtin, no process
WRAPPER = (
    '{command}; rc=$?; read -r usage < /sys/fs/cgroup/cpuacct/cpuacct.usage; echo "cgroup-ns $usage"; times; exit $rc'
)


class CallbackServer:
    """Answers the callbacks of the worker (HTTP/1.1, kept alive, as the daemon): type 0 with
    a work description without files, the others with ``{}``; counts them per container."""

    def __init__(self, host: str) -> None:
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # one segment per answer, sent at once (as the daemon's): head and body written
            # apart would meet the worker's delayed ACK, tens of milliseconds of waiting
            wbufsize = -1
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length))
                    container, kind = str(body["container_id"]), int(body["callback_type"])
                except (ValueError, KeyError, TypeError):
                    self._answer(400, {"error": "not a callback"})
                    return
                with server.lock:
                    server.counts[container] = server.counts.get(container, 0) + 1
                work: dict[str, Any] = {"task_id": container, "input_files": [], "result_files": [], "parameters": None}
                self._answer(200, work if kind == 0 else {})

            def _answer(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://{host}:{self.httpd.server_address[1]}/callback"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True, name="callbacks")
        self.thread.start()

    def count(self, container: str) -> int:
        with self.lock:
            return self.counts.get(container, 0)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def parse(output: str) -> tuple[float, float]:
    """(cgroup CPU seconds, children's user + system seconds) from the wrapper's output."""
    lines = output.strip().splitlines()
    cgroup = next(float(line.split()[1]) / 1e9 for line in lines if line.startswith("cgroup-ns "))
    # `times` prints two lines, the shell's own and its children's: "0m0.123s 0m0.045s"
    children = lines[-1].split()

    def seconds(text: str) -> float:
        minutes, rest = text.rstrip("s").split("m")
        return int(minutes) * 60 + float(rest)

    return cgroup, seconds(children[0]) + seconds(children[1])


def run_one(
    client: docker.DockerClient, image: str, command: str, args: list[str], name: str, timeout: float
) -> tuple[float, float]:
    container = client.containers.create(
        image,
        command=["bash", "-c", WRAPPER.format(command=command), "bash", *args],
        name=name,
        mem_limit=f"{RAM_MB}m",
        memswap_limit=f"{RAM_MB}m",
        labels={LABEL: "1"},
        detach=True,
    )
    try:
        container.start()
        status = container.wait(timeout=timeout)["StatusCode"]
        output = container.logs(stdout=True, stderr=False).decode("utf-8", "replace")
        if status != 0:
            errors = container.logs(stdout=False, stderr=True).decode("utf-8", "replace")
            raise RuntimeError(f"{name} exited with {status}: {errors[-800:]}")
        return parse(output)
    finally:
        container.remove(force=True)


def spread(values: list[float]) -> str:
    v = sorted(values)
    p10, p90 = v[int(0.1 * (len(v) - 1))], v[int(round(0.9 * (len(v) - 1)))]
    return f"median {statistics.median(v) * 1000:.1f} ms (p10 {p10 * 1000:.1f}, p90 {p90 * 1000:.1f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=20, help="containers per variant (default 20)")
    parser.add_argument("--image", default=IMAGE, help=f"the image (default {IMAGE})")
    parser.add_argument("--timeout", type=float, default=120, help="seconds per container (default 120)")
    parser.add_argument("--warm-up", type=int, default=2, help="unmeasured pairs first (default 2)")
    options = parser.parse_args()

    print(load_line("start"), flush=True)
    client = docker.DockerClient(base_url=SOCKET, timeout=options.timeout + 30)
    server = CallbackServer(bridge_gateway(NodeConfig(name="local", base_url=SOCKET, tls=None), 30))
    run = secrets.token_hex(4)
    figures: dict[str, list[tuple[float, float]]] = {"bare": [], "worker": []}
    started = time.monotonic()
    try:
        for i in range(options.warm_up + options.repeat):
            order = ("bare", "worker") if i % 2 == 0 else ("worker", "bare")
            for variant in order:
                name = f"bench-worker-cpu-{run}-{variant}-{i}"
                if variant == "bare":
                    measured = run_one(client, options.image, APP_COMMAND, [], name, options.timeout)
                else:
                    settings = {
                        "container_type": "application",
                        "container_id": name,
                        "callback_key": secrets.token_hex(16),
                        "callback_url": server.url,
                    }
                    measured = run_one(
                        client, options.image, WORKER_COMMAND, [json.dumps(settings)], name, options.timeout
                    )
                    if server.count(name) != CALLBACKS:
                        raise RuntimeError(f"{name} made {server.count(name)} callbacks, not {CALLBACKS}")
                if i >= options.warm_up:
                    figures[variant].append(measured)
    except Exception as e:
        print(f"BROKEN: {e}", flush=True)
        return 2
    finally:
        server.close()
        for leftover in client.containers.list(all=True, filters={"label": LABEL}):
            if run in (leftover.name or ""):
                leftover.remove(force=True)
        client.close()

    print(f"{options.repeat} containers per variant in {time.monotonic() - started:.0f} s, image {options.image}")
    medians = {}
    for variant in ("bare", "worker"):
        cgroup = [c for c, _ in figures[variant]]
        children = [c for _, c in figures[variant]]
        medians[variant] = statistics.median(cgroup), statistics.median(children)
        print(f"{variant:>6}: container cgroup CPU {spread(cgroup)}; user+sys of its processes {spread(children)}")
    (bare_cg, bare_ch), (worker_cg, worker_ch) = medians["bare"], medians["worker"]
    print(
        f"worker / bare: cgroup {worker_cg / bare_cg:.2f} (+{(worker_cg - bare_cg) * 1000:.1f} ms a container), "
        f"user+sys {worker_ch / bare_ch:.2f} (+{(worker_ch - bare_ch) * 1000:.1f} ms)"
    )
    print(load_line("end"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
