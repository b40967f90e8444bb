"""A pull's progress, from the engine's events, logged at a readable rate (issue 9)."""

from __future__ import annotations

from typing import Any

from twisted.logger import globalLogPublisher

from ccserver.cluster.docker_ops import PULL_LOG_SECONDS, PullProgress


def test_layers_and_bytes_are_counted_and_logged_at_most_every_interval() -> None:
    now = [0.0]
    seen: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(seen.append)
    try:
        progress = PullProgress("example/app:1", "node1", lambda: now[0])
        progress.see({"id": "a", "status": "Pulling fs layer"})
        progress.see({"id": "b", "status": "Already exists"})
        for step in range(1, 101):  # many events a second, as the engine sends them
            now[0] += 0.05
            event = {"current": step * 100_000, "total": 10_000_000}
            progress.see({"id": "a", "status": "Downloading", "progressDetail": event})
        assert progress.summary() == "1 of 2 layers, 10.0 of 10.0 MB"
        lines = [e for e in seen if e.get("log_namespace") == "ccserver.docker" and "summary" in e]
        assert len(lines) == int(100 * 0.05 // PULL_LOG_SECONDS) == 0  # 5 s of events: nothing yet
        now[0] += PULL_LOG_SECONDS
        progress.see({"id": "a", "status": "Download complete"})
        lines = [e for e in seen if e.get("log_namespace") == "ccserver.docker" and "summary" in e]
        assert [e["summary"] for e in lines] == ["2 of 2 layers, 10.0 of 10.0 MB"]
        assert lines[0]["image"] == "example/app:1" and lines[0]["node"] == "node1"
    finally:
        globalLogPublisher.removeObserver(seen.append)
