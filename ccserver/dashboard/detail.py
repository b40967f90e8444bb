"""One task for the dashboard's task page: the document (secrets masked by the caller's
renderer), its state names, and, for a 0.10 task, its application containers and their nodes."""

from __future__ import annotations

from typing import Any

from bson import ObjectId
from bson.errors import InvalidId

from ccserver.dashboard.vocabulary import CC, COLLECTION, TES, state_name
from ccserver.errors import Invalid, NotFound
from ccserver.storage.base import Store

#: a task has at most this many application containers (one per trial) shown
MAX_CONTAINERS = 100


def parse_kind_and_id(kind: str, task_id: str) -> ObjectId:
    if kind not in (CC, TES):
        raise Invalid(f"kind: {CC} or {TES}, not {kind[:20]!r}")
    try:
        return ObjectId(task_id)
    except (InvalidId, TypeError):
        raise Invalid(f"task id: 24 hexadecimal digits, not {task_id[:40]!r}") from None


def _named(kind: str, doc: dict[str, Any]) -> dict[str, Any]:
    doc["state_name"] = state_name(kind, doc.get("state"))
    for t in doc.get("transitions") or ():
        if isinstance(t, dict):
            t["state_name"] = state_name(kind, t.get("state"))
    return doc


async def read(store: Store, kind: str, task_id: ObjectId, username: str | None) -> dict[str, Any]:
    """The task and its containers; :class:`UnknownTask` for an unknown task or, when
    ``username`` is given, one of another user (a standard user learns nothing of it)."""
    query: dict[str, Any] = {"_id": task_id}
    if username is not None:
        query["username"] = username
    task = await store.find_one(COLLECTION[kind], query)
    if task is None:
        raise NotFound(f"no such task: {task_id}")
    containers: list[dict[str, Any]] = []
    if kind == CC:
        found = await store.find(
            "application_containers",
            {"task_id": task_id},
            limit=MAX_CONTAINERS,
            # the callbacks hold the worker's telemetry: exit code, the end of stdout and stderr
            projection={
                "state": 1,
                "cluster_node": 1,
                "container_ram": 1,
                "transitions": 1,
                "created_at": 1,
                "callbacks": 1,
            },
        )
        containers = [_named(CC, c) for c in found]
    return {"kind": kind, "task": _named(kind, task), "containers": containers}
