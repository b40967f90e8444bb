"""The state names the dashboard shows: 0.10's six (lower case) and TES 1.1's ten (upper
case), one vocabulary for filters, counts and the colours of ``ui/states.css``."""

from __future__ import annotations

from ccserver import states
from ccserver.tes import states as tes_states

#: the kinds of task in the dashboard's table: a 0.10 task, a TES task
CC, TES = "cc", "tes"
COLLECTION = {CC: "tasks", TES: tes_states.COLLECTION}

CC_STATES = states.NAMES
TES_STATES = tes_states.ALL
TES_STARTED = ("RUNNING",)
TES_ENDED = ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED")
ALL_STATES = (*CC_STATES, *TES_STATES)
END_NAMES = frozenset((*(states.NAMES[s] for s in states.END_STATES), *TES_ENDED))


def state_name(kind: str, state: object) -> str:
    """The shown name of a stored state (an int for 0.10, a string for TES)."""
    if kind == CC and isinstance(state, int) and 0 <= state < len(CC_STATES):
        return CC_STATES[state]
    return str(state)


def stored_state(kind: str, name: str) -> object | None:
    """The stored value of state ``name`` in collection ``kind``; ``None``: no task of that kind
    can be in it."""
    if kind == CC:
        return CC_STATES.index(name) if name in CC_STATES else None
    return name if name in TES_STATES else None
