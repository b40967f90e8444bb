"""The REST API benchmark (bench/api.py) runs to the end in its quick form, and the worker CPU
benchmark (bench/worker_cpu.py) with two containers of each kind.

Only that it works is checked here: it starts the real daemon, every phase answers without
errors and every figure is printed.  Its speed targets live in the benchmark (a slow or busy
machine misses them): with ``--quick`` it prints them but exits 0 whenever the run is complete,
and 2 when a request failed or the daemon misbehaved.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIGURE = r"[\d,]+\.\d+/s; latency p50 [\d.]+ ms, p99 [\d.]+ ms"

FIGURE_LINES = [
    rf"^\(a\) single POST /tasks, token: \d+ requests in [\d.]+ s = {FIGURE}",
    r"^\(b\) 1,000-task POST /tasks, 1 client: \d+ batches in [\d.]+ s = [\d,.]+/s, [\d,]+ tasks/s; latency p50",
    rf"^\(c\) GET /nodes: \d+ requests in [\d.]+ s = {FIGURE}",
    r"^\(d\) fill: 1,000-task POST /tasks, 32 clients: \d+ batches .* tasks/s; latency p50",
    rf"^\(d\) POST /tasks/query, 1 client: \d+ requests in [\d.]+ s = {FIGURE}",
    rf"^\(d\) POST /tasks/query, 32 clients: \d+ requests in [\d.]+ s = {FIGURE}",
    rf"^\(e\) single POST /tasks, password: \d+ requests in [\d.]+ s = {FIGURE}",
    r"^start: load average [\d.]+ [\d.]+ [\d.]+; CPUs \d+",
    r"^end: load average [\d.]+ [\d.]+ [\d.]+; CPUs \d+",
    r"^daemon pid \d+ on 127\.0\.0\.1:\d+; nodes: healthy \[\], dead \['none'\]",
    r"^total: [\d.]+ s; CPU daemon [\d.]+ s, generator [\d.]+ s",
    r"^    tasks stored: about [\d,]+",
    r"^  (PASS|FAIL)  single submissions \(token\): ",
    r"^  (PASS|FAIL)  1,000-task batch: ",
    r"^  (PASS|FAIL)  query over [\d,]+ tasks",
    r"^  (PASS|FAIL)  password on every request: .* token/password = [\d.]+",
]


def test_quick_api_benchmark_runs_and_prints_its_figures() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "api.py"), "--quick"],
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    for pattern in FIGURE_LINES:
        assert re.search(pattern, result.stdout, re.MULTILINE), f"no line like {pattern!r}:\n{output}"
    # every phase answered cleanly: no failed requests, nothing cut short, no daemon traceback
    assert "ERRORS" not in result.stdout, output
    assert "STOPPED AT TIME LIMIT" not in result.stdout, output
    assert "Traceback" not in output, output
    assert "PASS  run complete" in result.stdout, output


def test_worker_cpu_benchmark_runs_and_prints_its_figures() -> None:
    # bench/worker_cpu.py on the local engine, two containers of each variant: the worker made
    # its four callbacks (else the script exits 2) and both figures and their ratio are printed
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "worker_cpu.py"), "--repeat", "2", "--warm-up", "0"],
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    for variant in ("bare", "worker"):
        assert re.search(
            rf"^ *{variant}: container cgroup CPU median [\d.]+ ms \(p10 [\d.]+, p90 [\d.]+\); "
            r"user\+sys of its processes median [\d.]+ ms",
            result.stdout,
            re.MULTILINE,
        ), output
    assert re.search(r"^worker / bare: cgroup [\d.]+ \(\+-?[\d.]+ ms a container\)", result.stdout, re.MULTILINE), (
        output
    )
    assert "Traceback" not in output, output
