"""``GET /tasks/{task_id}/logs``: the output of a 0.10 task's application container (an
extension beyond 0.10; docs/api.rst, "Live logs").  Domain only: no HTTP here."""

from __future__ import annotations

import math
from typing import Any, Protocol

from bson import ObjectId
from bson.errors import InvalidId

from ccserver import states
from ccserver.errors import Invalid, NotFound
from ccserver.livelogs.stream import Line
from ccserver.livelogs.tail import select
from ccserver.storage.base import Store

APP = "application_containers"
#: the most lines a ``tail`` may ask for
MAX_TAIL = 1_000_000


class Logs(Protocol):
    """What the endpoint reads of :class:`ccserver.livelogs.follower.LogFollower`."""

    def known(self, container: str) -> bool: ...

    def is_running(self, container: str) -> bool: ...

    def truncated(self, container: str) -> bool: ...

    def lines(self, container: str, since: float | None = None, tail: int | None = None) -> list[Line]: ...


class Asker(Protocol):
    @property
    def username(self) -> str: ...

    @property
    def is_admin(self) -> bool: ...


def parse_query(args: dict[bytes, list[bytes]]) -> tuple[float | None, int | None]:
    """``since`` (epoch seconds) and ``tail`` (lines) of the query string; :class:`Invalid`
    names a bad one."""
    since = tail = None
    if b"since" in args:
        raw = args[b"since"][-1].decode("utf-8", "replace")
        try:
            since = float(raw)
        except ValueError:
            since = None
        if since is None or not math.isfinite(since):
            raise Invalid(f"since: expected a time in seconds since the epoch, got {raw[:40]!r}")
    if b"tail" in args:
        raw = args[b"tail"][-1].decode("utf-8", "replace")
        if not raw.isascii() or not raw.isdigit() or int(raw) > MAX_TAIL:
            raise Invalid(f"tail: expected a number of lines from 0 to {MAX_TAIL}, got {raw[:40]!r}")
        tail = int(raw)
    return since, tail


async def task_logs(
    store: Store, logs: Logs, user: Asker, task_id: str, since: float | None, tail: int | None
) -> dict[str, Any]:
    """The answer of contracts §3: the lines of the task's current (or last) application
    container, oldest first, from the follower while it has them, else from the tail kept
    in the container's document when it ended."""
    try:
        _id = ObjectId(task_id)
    except (InvalidId, TypeError):
        raise NotFound(f"task not found: {task_id[:60]}") from None
    scope: dict[str, Any] = {"_id": _id}
    if not user.is_admin:
        scope["username"] = user.username
    if await store.find_one("tasks", scope, {"_id": 1}) is None:
        raise NotFound(f"task not found: {task_id}")
    apps = await store.find(
        APP, {"task_id": _id}, sort=[("created_at", -1)], limit=1, projection={"state": 1, "log_tail": 1}
    )
    answer: dict[str, Any] = {"task_id": task_id, "container_id": None, "running": False, "truncated": False}
    if not apps:
        return {**answer, "lines": []}
    app = apps[0]
    name = str(app["_id"])
    answer["container_id"] = name
    if logs.known(name):
        lines = [
            {"time": line.time, "stream": line.stream, "text": line.text} for line in logs.lines(name, since, tail)
        ]
        return {**answer, "running": logs.is_running(name), "truncated": logs.truncated(name), "lines": lines}
    kept = app.get("log_tail") or {}
    return {
        **answer,
        "running": app.get("state") == states.PROCESSING and not kept,
        "truncated": bool(kept.get("truncated")),
        "lines": select(list(kept.get("lines") or []), since, tail),
    }


class NoLogs:
    """No follower (an API without one, as in API-only tests): only kept tails are read."""

    def known(self, container: str) -> bool:
        return False

    def is_running(self, container: str) -> bool:
        return False

    def truncated(self, container: str) -> bool:
        return False

    def lines(self, container: str, since: float | None = None, tail: int | None = None) -> list[Line]:
        return []
