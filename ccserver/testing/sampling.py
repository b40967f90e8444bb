"""Latency sampling against a running daemon, for the large-batch benchmark and its test.

A :class:`Sampler` thread sends one request every ``interval`` seconds over its own
keep-alive ``http.client`` connection and records (start, seconds, status) of each answer, so a
reactor that stalls shows as a long answer.  :func:`batch_body` builds the largest ``POST /tasks``
batch that fits a body limit.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from dataclasses import dataclass, field

#: the smallest valid task of cc-protocol.md §5 (the image is never run: see bench/batch.py)
TASK = {
    "application_container_description": {"image": "ccserver-test/app-noinput:1", "container_ram": 64},
    "input_files": [],
    "result_files": [],
}


def batch_body(max_bytes: int, task: dict | None = None) -> tuple[bytes, int]:
    """The JSON of ``{"tasks": [task, ...]}`` with as many tasks as fit in ``max_bytes``, and
    their number."""
    one = json.dumps(task or TASK, separators=(",", ":")).encode()
    count = (max_bytes - len(b'{"tasks":[]}') + 1) // (len(one) + 1)
    body = b'{"tasks":[' + b",".join([one] * count) + b"]}"
    assert len(body) <= max_bytes, (len(body), max_bytes)
    return body, count


def percentile(values: list[float], p: float) -> float:
    """The ``p`` th percentile (nearest rank) of ``values``; 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(p / 100 * len(ordered) + 0.5)) - 1))
    return ordered[rank]


@dataclass
class Sample:
    start: float  # time.monotonic() when the request was sent
    seconds: float
    status: int  # 0: the request failed (connection error, time limit)


@dataclass
class Sampler:
    """One client that asks ``path`` every ``interval`` seconds until stopped."""

    host: str
    port: int
    path: str
    auth: str | None = None
    interval: float = 0.02
    timeout: float = 60.0
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sampler {self.path}", daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.timeout + 5)

    def _run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        headers = {"authorization": self.auth} if self.auth else {}
        while not self._stop.is_set():
            began = time.monotonic()
            status = 0
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                conn.request("GET", self.path, headers=headers)
                answer = conn.getresponse()
                answer.read()
                status = answer.status
            except (OSError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                conn = None
            took = time.monotonic() - began
            self.samples.append(Sample(began, took, status))
            self._stop.wait(max(0.0, self.interval - took))
        if conn is not None:
            conn.close()

    def between(self, start: float, end: float) -> list[Sample]:
        """Samples whose request was sent in [start, end), or that were still waiting at ``start``."""
        return [s for s in self.samples if start <= s.start < end or (s.start < start < s.start + s.seconds)]


def summary(samples: list[Sample]) -> str:
    """``n, p50, p99, max`` in milliseconds, and the failed requests."""
    times = [s.seconds for s in samples]
    failed = sum(1 for s in samples if s.status != 200)
    text = (
        f"n {len(times):5d}  p50 {percentile(times, 50) * 1000:8.1f} ms  p99 {percentile(times, 99) * 1000:8.1f} ms"
        f"  max {max(times, default=0) * 1000:8.1f} ms"
    )
    return text + (f"  FAILED {failed}" if failed else "")
