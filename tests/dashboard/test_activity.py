"""The activity plot's bucketing, a pure function."""

from __future__ import annotations

import pytest

from ccserver import states
from ccserver.dashboard.activity import Events, bucket, cc_events, tes_events


def test_events_fall_in_their_minute_and_outside_ones_are_dropped() -> None:
    now = 6000.0 + 59.5  # inside the minute starting at 6000
    events = [
        Events(6000.0, 6059.9, None),  # the current minute
        Events(5880.0, 5940.0, 6000.0),  # minute 0, minute 1, minute 2
        Events(5879.99, None, 6060.0),  # before the window, after it
        Events(None, None, None),
    ]
    got = bucket(events, now, 3)
    assert got == {"start": 5880.0, "minutes": 3, "submitted": [1, 0, 1], "started": [0, 1, 1], "ended": [0, 0, 1]}


def test_one_minute_and_bad_windows() -> None:
    assert bucket([Events(120.0, None, None)], 150.0, 1)["submitted"] == [1]
    with pytest.raises(ValueError):
        bucket([], 0.0, 0)


def test_events_of_the_two_kinds_of_task() -> None:
    cc = {
        "created_at": 1.0,
        "transitions": [
            states.transition(states.WAITING, "", 1.0),
            states.transition(states.PROCESSING, "", 2.0),
            states.transition(states.WAITING, "retry", 3.0),
            states.transition(states.PROCESSING, "", 4.0),
            states.transition(states.FAILED, "", 5.0),
        ],
    }
    assert cc_events(cc) == Events(1.0, 2.0, 5.0)
    tes = {
        "created_at": 1,
        "transitions": [{"state": "RUNNING", "timestamp": 2}, {"state": "CANCELED", "timestamp": 3}],
    }
    assert tes_events(tes) == Events(1.0, 2.0, 3.0)
    assert cc_events({"created_at": True, "transitions": [{"state": 2, "timestamp": "x"}]}) == Events(None, None, None)


def test_answers_are_reused_for_a_while_per_scope() -> None:
    from twisted.internet.task import Clock

    from ccserver.web.dashboard import ActivityCache

    clock = Clock()
    cache = ActivityCache(clock, seconds=10)
    cache.put(("alice", 60), {"n": 1})
    clock.advance(9.9)
    assert cache.get(("alice", 60)) == {"n": 1}
    assert cache.get((None, 60)) is None and cache.get(("alice", 30)) is None
    clock.advance(0.1)
    assert cache.get(("alice", 60)) is None
    cache.put(("bob", 60), {"n": 2})
    assert list(cache._answers) == [("bob", 60)]  # the expired one is gone
