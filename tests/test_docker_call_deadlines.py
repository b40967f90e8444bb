"""Every Docker call has one deadline, counted from when it was asked (issue 9, fault 4): a
call that waited in the bounded Docker pool past it never runs, and its caller hears at once."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest_twisted
from twisted.internet import reactor

from ccserver import config as configuration
from ccserver.cluster.service import Cluster, QueuedTooLong
from ccserver.threads import ThreadPoolService
from ccserver.wiring import CallbackAddress


@pytest_twisted.ensureDeferred
async def test_a_call_queued_past_its_deadline_fails_then_and_never_runs() -> None:
    cfg = configuration.from_dict(
        {"docker": {"thread_limit": 1, "nodes": {"local": {"base_url": "unix:///var/run/docker.sock"}}}}, "<test>"
    )
    pool = ThreadPoolService(reactor, "docker", 1, 5)
    pool.startService()
    cluster = Cluster(cfg, store=None, pool=pool, reactor=reactor, identity=None, address=CallbackAddress())  # type: ignore[arg-type]
    release = threading.Event()
    ran: list[str] = []
    try:
        # the one thread is busy (as with a long create on a slow engine)
        busy = cluster.call("local", lambda client: release.wait(20), timeout=30)
        asked = time.monotonic()
        queued = cluster.call("local", lambda client: ran.append("ran"), timeout=1.0)
        failure: Any = None
        try:
            await queued
        except QueuedTooLong as e:
            failure = e
        took = time.monotonic() - asked
        assert failure is not None and "no Docker thread was free within 1 s" in str(failure)
        assert took < 3.0, f"the queued call failed only after {took:.1f} s"
        release.set()
        await busy
        # the pool is free again: a call asked now runs; the dropped one never did
        assert await cluster.call("local", lambda client: "fresh") == "fresh"
        assert ran == []
    finally:
        release.set()
        await pool.stopService()
        await cluster.health_pool.stopService()
