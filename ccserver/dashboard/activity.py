"""Tasks submitted, started and ended per minute over a recent window (the queue page's plot).

:func:`bucket` is the pure part: event times in, one count per minute out.  :func:`read` is the
bounded read: the tasks created within the window plus a look-back (a task that started or
ended in the window was created before it), newest first by the ``created_at`` index, at most
``max_tasks`` of each kind; the answer says when that bound cut the read."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ccserver import states
from ccserver.dashboard.vocabulary import (
    CC,
    CC_STATES,
    COLLECTION,
    TES,
    TES_ENDED,
    TES_STARTED,
    TES_STATES,
    stored_state,
)
from ccserver.storage.base import Store

SERIES = ("submitted", "started", "ended")
#: tasks created this long before the window are still read (their start or end may fall in it)
LOOKBACK_SECONDS = 24 * 3600.0
MAX_MINUTES = 24 * 60


@dataclass(frozen=True)
class Events:
    """Event times (epoch seconds) of one task."""

    submitted: float | None
    started: float | None
    ended: float | None


def bucket(events: Iterable[Events], now: float, minutes: int) -> dict[str, Any]:
    """Counts per minute of the ``minutes`` whole minutes ending with the current one.

    Minute ``i`` (0 = oldest) covers ``[start + 60 i, start + 60 (i + 1))`` where ``start`` is
    the beginning of the minute ``minutes - 1`` before the current one; events outside are
    dropped."""
    if minutes < 1:
        raise ValueError("minutes must be at least 1")
    current = math.floor(now / 60.0) * 60.0
    start = current - 60.0 * (minutes - 1)
    counts = {name: [0] * minutes for name in SERIES}
    for event in events:
        for name in SERIES:
            t = getattr(event, name)
            if t is None:
                continue
            i = int((t - start) // 60.0)
            if 0 <= i < minutes:
                counts[name][i] += 1
    return {"start": start, "minutes": minutes, **counts}


def cc_events(task: Mapping[str, Any]) -> Events:
    """The events of a 0.10 task from its transitions (the first start, the end)."""
    started = ended = None
    for t in task.get("transitions") or ():
        state, when = t.get("state"), t.get("timestamp")
        if not isinstance(when, (int, float)):
            continue
        if state == states.PROCESSING and started is None:
            started = float(when)
        elif state in states.END_STATES:
            ended = float(when)
    return Events(_number(task.get("created_at")), started, ended)


def tes_events(task: Mapping[str, Any]) -> Events:
    started = ended = None
    for t in task.get("transitions") or ():
        state, when = t.get("state"), t.get("timestamp")
        if not isinstance(when, (int, float)):
            continue
        if state in TES_STARTED and started is None:
            started = float(when)
        elif state in TES_ENDED:
            ended = float(when)
    return Events(_number(task.get("created_at")), started, ended)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


async def read(store: Store, username: str | None, now: float, minutes: int, max_tasks: int) -> dict[str, Any]:
    """The plot's data for ``username``'s tasks (``None``: everybody's)."""
    since = now - 60.0 * minutes - LOOKBACK_SECONDS
    scope = {"username": username} if username is not None else {}
    events: list[Events] = []
    truncated = False
    for kind, of in ((CC, cc_events), (TES, tes_events)):
        page = await store.newest(
            COLLECTION[kind], scope, field="created_at", before=None, limit=max_tasks, scan_limit=max_tasks, since=since
        )
        truncated = truncated or len(page.docs) >= max_tasks or page.scanned_to is not None
        events.extend(of(doc) for doc in page.docs)
    return {**bucket(events, now, minutes), "truncated": truncated, "counts": await counts(store, scope)}


async def counts(store: Store, scope: Mapping[str, Any]) -> dict[str, int]:
    """Tasks by state name (both kinds): one indexed count per state."""
    found: dict[str, int] = {}
    for kind, names in ((CC, CC_STATES), (TES, TES_STATES)):
        for name in names:
            found[name] = await store.count(COLLECTION[kind], {**scope, "state": stored_state(kind, name)})
    return found
