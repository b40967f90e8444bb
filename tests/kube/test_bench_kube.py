"""The Kubernetes benchmark (bench/kube.py) runs to the end in a tiny form on the session's cluster.

It lives here rather than in tests/test_bench_smoke.py because it needs the ``kube_cluster``
session fixture (tests/kube/conftest.py), which only the tests under tests/kube see; the script
attaches to that cluster by its state directory (``--kube-dev``) and leaves it running.  Only
that it works is checked: both halves complete, every figure is printed, nothing of the run is
left on the cluster.  The SLO verdict depends on the machine's load: exit status 1 (missed) is
accepted, 2 (broken) is not.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from ccserver.identity import DAEMON_LABEL

REPO = Path(__file__).resolve().parents[2]
N = 3

FIGURE_LINES = [
    r"^start: load average [\d.]+ [\d.]+ [\d.]+; CPUs \d+",
    rf"^  ccserver: {N} pods; last task end [\d.]+ s .*last Job deleted [\d.]+ s; last pod deleted [\d.]+ s",
    rf"^  direct:   {N} pods; last Job Complete [\d.]+ s .*last Job deleted [\d.]+ s; last pod deleted [\d.]+ s",
    rf"^    ccserver pod start latency \({N} pods\), seconds: bound -> started p50 [\d.]+ p99 [\d.]+",
    rf"^    direct pod start latency \({N} pods\), seconds: bound -> started p50 [\d.]+ p99 [\d.]+",
    r"^  ratio ccserver/direct: [\d.]+ to the last end, [\d.]+ to the last pod ended, [\d.]+ to the last Job",
    rf"^(PASS|FAIL)  N={N} ccserver: pod start latency \(bound -> started\) p99 [\d.]+ s; SLO <= 5 s",
    rf"^(PASS|FAIL)  N={N} direct: pod start latency \(bound -> started\) p99 [\d.]+ s; SLO <= 5 s",
]


def test_tiny_kube_benchmark_runs_and_prints_its_figures(kube_cluster: Any) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "kube.py"), "--n", str(N), "--kube-dev", str(kube_cluster.state)],
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    output = result.stdout + result.stderr
    assert result.returncode in (0, 1), output
    assert "BROKEN" not in output and "Traceback" not in output, output
    for pattern in FIGURE_LINES:
        assert re.search(pattern, result.stdout, re.MULTILINE), f"no line like {pattern!r}:\n{output}"
    # nothing of the run is left: no Job or pod of the direct half or of the daemon
    (identity,) = re.findall(r"^    daemon identity ([0-9a-f]+);", result.stdout, re.MULTILINE)
    for path in (
        f"/apis/batch/v1/namespaces/{kube_cluster.namespace}/jobs",
        f"/api/v1/namespaces/{kube_cluster.namespace}/pods",
    ):
        for selector in ("ccserver-bench-kube", f"{DAEMON_LABEL}={identity}"):
            code, body = kube_cluster.api("GET", path, params={"labelSelector": selector})
            assert code == 200, body
            assert body["items"] == [], (selector, body["items"])
