"""The TES task document's writes (contracts §1): every change of state is one
compare-and-set ``update_one`` with the expected states in its filter, which also ``$push``es
a transition."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId

from ccserver.storage.base import Store
from ccserver.tes import states as tes_states

C = tes_states.COLLECTION


def rfc3339(epoch: float) -> str:
    """Epoch seconds as TES writes times (RFC 3339, UTC, microseconds)."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def transition(state: str, description: str, now: float) -> dict[str, Any]:
    return {"state": state, "timestamp": now, "description": description}


async def move(
    store: Store,
    task_id: ObjectId,
    from_states: Iterable[str],
    to: str,
    description: str,
    now: float,
    set_: dict[str, Any] | None = None,
    push: dict[str, Any] | None = None,
    unset: dict[str, Any] | None = None,
    inc: dict[str, Any] | None = None,
) -> bool:
    """Compare-and-set the state (from one of ``from_states``); True when this write made it."""
    update: dict[str, Any] = {
        "$set": {"state": to, **(set_ or {})},
        "$push": {"transitions": transition(to, description, now), **(push or {})},
    }
    if unset:
        update["$unset"] = unset
    if inc:
        update["$inc"] = inc
    if to in tes_states.ENDED:
        update["$set"]["ended_at"] = now
    changed = await store.update_one(C, {"_id": task_id, "state": {"$in": list(from_states)}}, update)
    return bool(changed)


def new_task_log(node: str, now: float) -> dict[str, Any]:
    return {
        "start_time": rfc3339(now),
        "end_time": None,
        "metadata": {"node": node},
        "logs": [],
        "outputs": [],
        "system_logs": [],
    }


async def claim(store: Store, task_id: ObjectId, node: str, now: float) -> bool:
    """QUEUED → INITIALIZING on ``node``: one more trial, a new TaskLog."""
    return await move(
        store,
        task_id,
        (tes_states.QUEUED,),
        tes_states.INITIALIZING,
        f"Placed on node {node}.",
        now,
        set_={"node": node},
        push={"logs": new_task_log(node, now)},
        inc={"trials": 1},
    )


async def too_large(store: Store, task_id: ObjectId, why: str, now: float) -> bool:
    """QUEUED → SYSTEM_ERROR at once: the task fits no node."""
    log = {**new_task_log("", now), "metadata": {}, "end_time": rfc3339(now), "system_logs": [why]}
    return await move(store, task_id, (tes_states.QUEUED,), tes_states.SYSTEM_ERROR, why, now, push={"logs": log})
