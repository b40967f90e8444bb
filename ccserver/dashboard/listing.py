"""One newest-first table of 0.10 and TES tasks, paged by a keyset cursor.

Both collections are walked by their ``created_at`` index (:meth:`Store.newest`), after the
cursor ``(created_at, _id)`` of the last row shown; the two pages are merged and cut to the
limit, so page 1,000 costs what page 1 costs.  Filters on state and user are index probes;
the image filter is applied to at most ``scan_limit`` candidates per page (there is no index
of images), and a page that bound cut short says where the next one goes on."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId

from ccserver.dashboard.vocabulary import ALL_STATES, CC, COLLECTION, END_NAMES, TES, state_name, stored_state
from ccserver.errors import Invalid
from ccserver.storage.base import Position, Store

MAX_LIMIT = 200
DEFAULT_LIMIT = 50
SCAN_LIMIT = 5000
#: sorts before every real ObjectId: "before (t, this)" leaves out the tasks created at t
_FIRST_ID = ObjectId("0" * 24)


@dataclass(frozen=True)
class Filters:
    state: str | None = None
    username: str | None = None
    image: str | None = None
    #: created at or after (epoch seconds)
    since: float | None = None
    #: created before (epoch seconds)
    until: float | None = None


def parse_cursor(text: str) -> Position:
    """``"<created_at>_<24 hex>"`` → ``(created_at, ObjectId)``."""
    value, sep, oid = text.partition("_")
    try:
        if not sep:
            raise ValueError
        return float(value), ObjectId(oid)
    except (ValueError, InvalidId, TypeError):
        raise Invalid(f"cursor: not a cursor of this listing: {text[:80]!r}") from None


def cursor_of(position: Position) -> str:
    value, oid = position
    return f"{float(value)!r}_{oid}"


def parse_filters(args: Mapping[str, str], username: str, is_admin: bool) -> Filters:
    """The filters of a request; a standard user's listing is always their own."""
    state = args.get("state") or None
    if state is not None and state not in ALL_STATES:
        raise Invalid(f"state: one of {', '.join(ALL_STATES)}, not {state[:40]!r}")
    user = args.get("user") or None
    if not is_admin:
        if user not in (None, username):
            raise Invalid("user: only admins may list the tasks of other users")
        user = username
    return Filters(
        state=state,
        username=user,
        image=args.get("image") or None,
        since=_time(args, "since"),
        until=_time(args, "until"),
    )


def _time(args: Mapping[str, str], key: str) -> float | None:
    text = args.get(key)
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise Invalid(f"{key}: epoch seconds, not {text[:40]!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise Invalid(f"{key}: a finite number of epoch seconds")
    return value


def kind_filter(kind: str, filters: Filters) -> dict[str, Any] | None:
    """The store filter of one collection; ``None`` when none of its tasks can match."""
    query: dict[str, Any] = {}
    if filters.state is not None:
        stored = stored_state(kind, filters.state)
        if stored is None:
            return None
        query["state"] = stored
    if filters.username is not None:
        query["username"] = filters.username
    if filters.image is not None:
        field = "application_container_description.image" if kind == CC else "executors.image"
        query[field] = filters.image
    return query


def row(kind: str, doc: Mapping[str, Any]) -> dict[str, Any]:
    """What the table shows of one task."""
    if kind == CC:
        image = (doc.get("application_container_description") or {}).get("image")
        name = ", ".join(str(t) for t in doc.get("tags") or ()) or None
    else:
        executors = doc.get("executors") or []
        image = executors[0].get("image") if executors and isinstance(executors[0], Mapping) else None
        name = doc.get("name")
    ended = None
    for t in doc.get("transitions") or ():
        if state_name(kind, t.get("state")) in END_NAMES:
            ended = t.get("timestamp")
    return {
        "kind": kind,
        "id": str(doc["_id"]),
        "state": state_name(kind, doc.get("state")),
        "username": doc.get("username"),
        "image": image if isinstance(image, str) else None,
        "name": name,
        "created_at": doc.get("created_at"),
        "ended_at": ended,
        "trials": doc.get("trials"),
    }


async def page(store: Store, filters: Filters, after: Position | None, limit: int) -> dict[str, Any]:
    """One page of the merged table after ``after`` and the cursor of the next (``None``: end)."""
    before = after
    if before is None and filters.until is not None:
        before = (filters.until, _FIRST_ID)
    merged: list[tuple[Position, str, Any]] = []
    stops: list[Position] = []
    for kind in (CC, TES):
        query = kind_filter(kind, filters)
        if query is None:
            continue
        got = await store.newest(
            COLLECTION[kind],
            query,
            field="created_at",
            before=before,
            limit=limit,
            scan_limit=SCAN_LIMIT,
            since=filters.since,
        )
        merged.extend(((doc["created_at"], doc["_id"]), kind, doc) for doc in got.docs)
        if got.scanned_to is not None:
            stops.append(got.scanned_to)
    merged.sort(key=lambda item: (item[0][0], item[0][1].binary), reverse=True)
    # a collection whose scan stopped early has unseen rows after its stop: the page may
    # only show rows before the highest such stop, so the next page misses none
    if stops:
        stop = max(stops, key=lambda p: (p[0], p[1].binary))
        merged = [m for m in merged if (m[0][0], m[0][1].binary) > (stop[0], stop[1].binary)]
    shown = merged[:limit]
    if len(shown) == limit:
        next_position: Position | None = shown[-1][0]
    elif stops:
        next_position = max(stops, key=lambda p: (p[0], p[1].binary))
    else:
        next_position = None
    return {
        "tasks": [row(kind, doc) for _, kind, doc in shown],
        "next": cursor_of(next_position) if next_position is not None else None,
        "scanned_to_limit": bool(stops),
    }


def parse_limit(text: str | None) -> int:
    if not text:
        return DEFAULT_LIMIT
    try:
        value = int(text)
    except ValueError:
        raise Invalid(f"limit: a whole number, not {text[:40]!r}") from None
    if not 1 <= value <= MAX_LIMIT:
        raise Invalid(f"limit: between 1 and {MAX_LIMIT}")
    return value
