"""The TES 1.1 task states, and which of them hold resources on a node."""

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

#: an attempt is under way on ``node``: its RAM and CPUs are reserved there
LIVE = (INITIALIZING, RUNNING, CANCELING)
ENDED = (COMPLETE, EXECUTOR_ERROR, SYSTEM_ERROR, CANCELED, PREEMPTED)

#: the collection of TES task documents (contracts §1)
COLLECTION = "tes_tasks"
