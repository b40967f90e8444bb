"""The six states of task groups, tasks and containers, and their transition records
(cc-protocol.md §1)."""

from __future__ import annotations

from typing import Any

CREATED = 0
WAITING = 1
PROCESSING = 2
SUCCESS = 3
FAILED = 4
CANCELLED = 5

NAMES = ("created", "waiting", "processing", "success", "failed", "cancelled")
END_STATES = (SUCCESS, FAILED, CANCELLED)
LIVE_STATES = (CREATED, WAITING, PROCESSING)


def name(state: int) -> str:
    return NAMES[state]


def is_end(state: int) -> bool:
    return state in END_STATES


def transition(
    state: int,
    description: str,
    timestamp: float,
    exception: str | None = None,
    caused_by: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One record of a document's ``transitions`` list."""
    return {
        "timestamp": timestamp,
        "state": state,
        "description": description,
        "exception": exception,
        "caused_by": caused_by,
    }


def not_ended() -> dict[str, Any]:
    """A filter fragment: the document is not in an end state (never leave an end state)."""
    return {"$in": list(LIVE_STATES)}
