"""Where the recording happens: ``Cluster.call`` (every Docker call, on the real engine),
the notifier (over a real socket), and a daemon with ``metrics.enabled = false``."""

from __future__ import annotations

import threading
from typing import Any

import docker
import pytest_twisted
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Site

from ccserver import config as configuration
from ccserver.cluster import docker_ops
from ccserver.cluster.service import Cluster, QueuedTooLong
from ccserver.metrics import Metrics
from ccserver.notifications import Notifier
from ccserver.service import CCServer
from ccserver.threads import ThreadPoolService
from ccserver.web.metrics_page import MetricsMount
from ccserver.wiring import CallbackAddress

NOINPUT_IMAGE = "ccserver-test/app-noinput:1"


def get(metrics: Metrics, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return 0.0


@pytest_twisted.ensureDeferred
async def test_every_docker_call_is_timed_and_its_failures_told_apart() -> None:
    cfg = configuration.from_dict(
        {"docker": {"thread_limit": 1, "nodes": {"local": {"base_url": "unix:///var/run/docker.sock"}}}}, "<test>"
    )
    pool = ThreadPoolService(reactor, "docker", 1, 5)
    pool.startService()
    metrics = Metrics()
    cluster = Cluster(cfg, None, pool, reactor, None, CallbackAddress(), metrics=metrics)  # type: ignore[arg-type]
    release = threading.Event()
    try:
        info = await cluster.call("local", docker_ops.node_info)
        assert info["total_ram"] > 0
        assert get(metrics, "ccserver_docker_call_seconds_count", operation="node_info", node="local") == 1
        # an image that is there: no pull happened, and none is counted as one
        assert (
            await cluster.call("local", docker_ops.ensure_image, NOINPUT_IMAGE, "if-not-present", None, "local") is None
        )

        def gone(client: docker.DockerClient) -> Any:
            return docker_ops.start_container(client, "ccserver-metrics-test-no-such-container")

        try:
            await cluster.call("local", gone)
        except Exception:
            pass
        assert get(metrics, "ccserver_docker_call_failures_total", operation="gone", node="local", reason="error") == 1

        def hold(client: docker.DockerClient) -> bool:
            return release.wait(20)

        def late(client: docker.DockerClient) -> None:
            return None

        busy = cluster.call("local", hold, timeout=0.5)  # runs past its deadline
        queued = cluster.call("local", late, timeout=0.2)  # never gets the one thread
        for d, kind in ((queued, QueuedTooLong), (busy, TimeoutError)):
            try:
                await d
            except kind:
                pass
        assert get(metrics, "ccserver_docker_call_failures_total", operation="late", node="local", reason="queued") == 1
        assert (
            get(metrics, "ccserver_docker_call_failures_total", operation="hold", node="local", reason="timeout") == 1
        )
        assert get(metrics, "ccserver_docker_call_seconds_count", operation="hold", node="local") == 1
        assert (
            get(metrics, "ccserver_docker_call_failures_total", operation="node_info", node="local", reason="error")
            == 0
        )
    finally:
        release.set()
        await pool.stopService()
        await cluster.health_pool.stopService()


class Flaky(Resource):
    """Answers 503 to the first POST, 200 to the next ones."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    def render_POST(self, request: Any) -> bytes:
        self.seen += 1
        request.setResponseCode(503 if self.seen == 1 else 200)
        return b"{}"


@pytest_twisted.ensureDeferred
async def test_notifications_and_their_tries_are_counted() -> None:
    receiver = Flaky()
    port = reactor.listenTCP(0, Site(receiver), interface="127.0.0.1")
    metrics = Metrics()
    notifier = Notifier(reactor, backoff_seconds=0.01, metrics=metrics)
    url = f"http://127.0.0.1:{port.getHost().port}/hook"
    try:
        delivered = await notifier.send(url, {"x": 1})
        assert delivered.delivered and delivered.attempts == 2
        refused = await notifier.send("http://127.0.0.1:1/nobody-listens", {"x": 1}, retries=1)
        assert not refused.delivered
        assert get(metrics, "ccserver_notifications_total", outcome="delivered") == 1
        assert get(metrics, "ccserver_notifications_total", outcome="failed") == 1
        assert get(metrics, "ccserver_notification_attempts_total") == 2 + refused.attempts
    finally:
        await port.stopListening()


def test_disabled_metrics_have_no_endpoint_and_no_refresher(tmp_path: Any) -> None:
    def tree(enabled: bool, listen: list[str] | None = None) -> CCServer:
        raw: dict[str, Any] = {"server": {"data_dir": str(tmp_path)}, "metrics": {"enabled": enabled}}
        if listen:
            raw["metrics"]["listen"] = listen
        return CCServer(configuration.from_dict(raw, "<test>"), reactor)

    def names(root: CCServer) -> set[str]:
        return {getattr(child, "name", None) or "" for child in root}

    on = tree(True)
    assert "metrics-refresher" in names(on)
    assert isinstance(on.web.site.resource, MetricsMount)
    off = tree(False, ["tcp:0:interface=127.0.0.1"])
    assert "metrics-refresher" not in names(off) and "metrics" not in names(off)
    assert off.metrics_web is None
    assert not isinstance(off.web.site.resource, MetricsMount)
    alone = tree(True, ["tcp:0:interface=127.0.0.1"])
    assert "metrics" in names(alone) and not isinstance(alone.web.site.resource, MetricsMount)
