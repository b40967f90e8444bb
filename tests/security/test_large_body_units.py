"""The pieces behind large bodies off the reactor: piece-by-piece parsing gives json.loads's
value or error, windowed searches find what a whole search finds, the collector pause, the
request pool's queue deadline, and the FIFO window of a scheduling round (on both stores)."""

from __future__ import annotations

import gc
import json
import threading
from typing import Any

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.task import Clock

from ccserver import states
from ccserver.collector import CollectorPause
from ccserver.config import from_dict
from ccserver.errors import Invalid
from ccserver.scheduling import rounds
from ccserver.storage.base import Store
from ccserver.threads import QueueTimeout, ThreadPoolService
from ccserver.web import bodies
from ccserver.web.errors import Busy
from ccserver.web.offload import RequestWork

json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False),
        st.text(max_size=6),
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=4)),
    max_leaves=10,
)


def outcome(raw: bytes, piecewise: bool) -> tuple[str, Any]:
    saved = bodies.PIECEWISE_BYTES
    bodies.PIECEWISE_BYTES = 0 if piecewise else 10**12
    try:
        return "ok", bodies.parse(raw)
    except Invalid as e:
        return "error", e.message
    finally:
        bodies.PIECEWISE_BYTES = saved


@settings(max_examples=300, deadline=None)
@given(json_values, st.sampled_from(["", " ", "\n\t ", "\r"]), st.sampled_from([None, ",", "]", "}", "x", "[", ":"]))
def test_parsing_in_pieces_gives_what_json_loads_gives(value: Any, ws: str, noise: str | None) -> None:
    text = json.dumps(value, separators=(ws + ",", ":" + ws)) if ws else json.dumps(value)
    if noise is not None:
        cut = len(text) // 2
        text = text[:cut] + noise + text[cut:]
    raw = (ws + text + ws).encode("utf-8", "surrogatepass")
    assert outcome(raw, piecewise=True) == outcome(raw, piecewise=False)


def test_parsing_in_pieces_handles_a_batch_and_odd_spacing() -> None:
    raw = b' { "tasks" : [ {"a": [1, 2]} , {"b": {}} ] , "x" : 1 , "tasks2": [ ] } '
    assert outcome(raw, True) == outcome(raw, False) == ("ok", json.loads(raw))
    deep = b'{"tasks": [' + b"[" * 5000 + b"]" * 5000 + b"]}"
    assert outcome(deep, True) == outcome(deep, False)
    assert outcome(deep, True)[0] == "error"


def test_windowed_search_finds_matches_across_window_edges() -> None:
    window = bodies._SEARCH_WINDOW
    for offset in range(window - 25, window + 5):
        raw = b" " * offset + b"1234567890123456789012" + b" " * 100
        assert bodies._search(bodies._RISKY_NUMBER, raw) is True
        raw = b" " * offset + b"\\uD834" + b" " * (window + 10)
        assert bodies._search(bodies._SURROGATE, raw) is True
    assert bodies._search(bodies._RISKY_NUMBER, b"1" * 18 + b" " + b"1" * 18 + b" " * (3 * window)) is False


def test_the_collector_is_off_while_held_and_back_on_after_the_last_release() -> None:
    clock = Clock()
    pause = CollectorPause(clock, longest=60)
    assert gc.isenabled()
    try:
        first, second = pause.hold(), pause.hold()
        assert not gc.isenabled()
        first()
        first()  # a second release of the same hold changes nothing
        assert not gc.isenabled() and pause.holders == 1
        second()
        assert not gc.isenabled() and pause.holders == 0  # back on at the next turn of the reactor
        clock.advance(0)
        assert gc.isenabled()
        third = pause.hold()
        third()
        again = pause.hold()  # held again before that turn: stays off
        clock.advance(0)
        assert not gc.isenabled()
        again()
        clock.advance(0)
        assert gc.isenabled()
        forgotten = pause.hold()
        clock.advance(59)
        assert not gc.isenabled()
        clock.advance(2)  # a hold that is never released ends at ``longest``
        clock.advance(0)
        assert gc.isenabled() and pause.holders == 0
        forgotten()
        assert pause.holders == 0
    finally:
        gc.enable()


@pytest_twisted.ensureDeferred
async def test_large_work_that_waits_past_its_deadline_is_dropped_and_answered_503() -> None:
    pool = ThreadPoolService(reactor, "test-requests", 1)
    pool.startService()
    blocker = threading.Event()
    ran: list[str] = []
    try:
        busy = pool.run(blocker.wait, 10)
        work = RequestWork(pool, inline_bytes=100, queue_seconds=0.2)
        with pytest.raises(Busy, match="busy with other large requests"):
            await work.run(101, ran.append, "late")
        assert await work.run(100, lambda: threading.current_thread().name) == threading.current_thread().name
        with pytest.raises(QueueTimeout):
            await pool.run_started_within(0.1, ran.append, "late too")
        blocker.set()
        await busy
        assert await work.run(10**6, lambda: "ran in the pool") == "ran in the pool"
        assert ran == []  # what was dropped never ran
    finally:
        blocker.set()
        await pool.stopService()


class Capacities:
    """The one thing ``rounds.decide`` asks the cluster: healthy nodes and their RAM."""

    def capacities(self) -> list[tuple[str, int]]:
        return [("n1", 1_000_000)]

    def traits(self) -> dict[str, tuple[bool, bool, bool]]:
        return {}

    def cpu_totals(self) -> dict[str, int | None]:
        return {"n1": None}


@pytest_twisted.ensureDeferred
async def test_a_round_places_the_oldest_waiting_tasks_up_to_its_window_off_the_reactor(store: Store) -> None:
    config = from_dict({"server": {"scheduling_round_tasks": 7}}, "<test>")
    tasks = [
        {
            "state": states.WAITING,
            "created_at": 1000.0 - i,
            "username": "u",
            "task_group_id": [],
            "application_container_description": {"image": "i", "container_ram": 64},
            "input_files": [],
        }
        for i in range(20)
    ]
    await store.insert_many("tasks", tasks)
    where: list[str] = []
    pool = ThreadPoolService(reactor, "test-placement", 1)
    pool.startService()

    def run(fn: Any, *args: Any) -> Any:
        def placed_in_thread(*a: Any) -> Any:
            where.append(threading.current_thread().name)
            return fn(*a)

        return pool.run(placed_in_thread, *args)

    try:
        decisions = await rounds.decide(config, store, Capacities(), run)  # type: ignore[arg-type]
    finally:
        await pool.stopService()
    placed = [p.task["created_at"] for p in decisions.placed]
    assert placed == sorted(t["created_at"] for t in tasks)[:7]
    assert where and where[0] != threading.current_thread().name


def test_large_answers_are_encoded_as_json_dumps_encodes_them() -> None:
    from bson import ObjectId

    from ccserver.documents import to_client
    from ccserver.web.api import _encode

    body = {
        "tasks": [{"_id": ObjectId(), "x": 1.5, "s": 'é\u2028"\\', "n": None, "l": [True, {"a": []}]}] * 50,
        "task_group_id": ObjectId(),
        "callback_key": "secret",
    }
    for mask in (True, False):
        assert _encode(body, mask) == json.dumps(to_client(body, mask)).encode()
