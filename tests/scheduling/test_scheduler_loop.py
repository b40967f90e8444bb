"""The scheduler's loop: rounds never overlap, wake-ups coalesce, the interval ticks (Clock)."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from ccserver import config as configuration
from ccserver.lifecycle import Lifecycle
from ccserver.scheduling.service import Scheduler
from ccserver.wiring import CallbackAddress


class CountingScheduler(Scheduler):
    def __init__(self, clock: Clock) -> None:
        cfg = configuration.from_dict({"server": {"scheduling_interval_seconds": 30}}, "<test>")
        super().__init__(
            cfg,
            store=None,
            cluster=None,
            # a life cycle that never runs here (rounds are counted, not run)
            lifecycle=Lifecycle(None, clock, 1, None),  # type: ignore[arg-type]
            clock=clock,
            vault=None,
            identity=None,  # type: ignore[arg-type]
            address=CallbackAddress("http://cc"),
        )
        self.rounds: list[tuple[bool, Deferred[None]]] = []

    async def round(self, full: bool = True) -> None:
        d: Deferred[None] = Deferred()
        self.rounds.append((full, d))
        await d


def finish(s: CountingScheduler, clock: Clock) -> None:
    s.rounds[-1][1].callback(None)
    clock.advance(0)


def test_wake_ups_during_a_round_coalesce_into_one_more_round() -> None:
    clock = Clock()
    s = CountingScheduler(clock)
    s.startService()
    clock.advance(0)
    assert len(s.rounds) == 1 and s.rounds[0][0] is True  # the first round is a full one
    for _ in range(50):
        s.wake()
    clock.advance(0)
    assert len(s.rounds) == 1  # never two at once
    finish(s, clock)
    assert len(s.rounds) == 2 and s.rounds[1][0] is False
    finish(s, clock)
    assert len(s.rounds) == 2  # nothing asked for another
    s.stopService()


def test_the_interval_runs_full_rounds() -> None:
    clock = Clock()
    s = CountingScheduler(clock)
    s.startService()
    clock.advance(0)
    finish(s, clock)
    clock.advance(29)
    assert len(s.rounds) == 1
    clock.advance(1)
    clock.advance(0)
    assert len(s.rounds) == 2 and s.rounds[1][0] is True
    finish(s, clock)
    s.stopService()


def test_stop_waits_for_the_running_round() -> None:
    clock = Clock()
    s = CountingScheduler(clock)
    s.startService()
    clock.advance(0)
    stopped: list[Any] = []
    d = s.stopService()
    assert d is not None
    d.addCallback(stopped.append)
    assert not stopped
    finish(s, clock)
    assert stopped == [None]
    s.wake()
    clock.advance(1)
    assert len(s.rounds) == 1  # no rounds after stop
