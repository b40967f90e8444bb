"""TES task states, and how the legacy dialect (TES 1.0, py-tes 0.4) names them."""

from __future__ import annotations

QUEUED = "QUEUED"
INITIALIZING = "INITIALIZING"
RUNNING = "RUNNING"
PAUSED = "PAUSED"
COMPLETE = "COMPLETE"
EXECUTOR_ERROR = "EXECUTOR_ERROR"
SYSTEM_ERROR = "SYSTEM_ERROR"
CANCELING = "CANCELING"
CANCELED = "CANCELED"
PREEMPTED = "PREEMPTED"
UNKNOWN = "UNKNOWN"

#: every state a task document holds (UNKNOWN is only ever answered, never stored)
ALL = (QUEUED, INITIALIZING, RUNNING, PAUSED, COMPLETE, EXECUTOR_ERROR, SYSTEM_ERROR, CANCELING, CANCELED, PREEMPTED)
#: what the ``state`` filter of ``GET /tasks`` accepts
FILTERABLE = (UNKNOWN, *ALL)
ENDED = frozenset({COMPLETE, EXECUTOR_ERROR, SYSTEM_ERROR, CANCELED, PREEMPTED})
#: an attempt is under way on the task's ``node``: its RAM and CPUs are reserved there
LIVE = (INITIALIZING, RUNNING, CANCELING)
#: the collection of TES task documents
COLLECTION = "tes_tasks"
#: states a cancel moves to CANCELING (the runner then removes the containers)
ACTIVE = frozenset({INITIALIZING, RUNNING, PAUSED})

#: the eight states py-tes 0.4 accepts; the others are mapped onto them
LEGACY = (UNKNOWN, QUEUED, INITIALIZING, RUNNING, COMPLETE, CANCELED, EXECUTOR_ERROR, SYSTEM_ERROR)
_TO_LEGACY = {PREEMPTED: SYSTEM_ERROR, CANCELING: CANCELED, PAUSED: RUNNING}


def legacy(state: str) -> str:
    """``state`` in the words of TES 1.0 / Funnel 0.10."""
    mapped = _TO_LEGACY.get(state, state)
    return mapped if mapped in LEGACY else UNKNOWN


def stored_for_legacy(state: str) -> list[str]:
    """The stored states a legacy client means by ``state`` (for the ``state`` filter)."""
    return [s for s in ALL if legacy(s) == state]
