"""``GET /tasks``: filters with TES semantics and keyset paging, newest first (as Funnel).

A page token names the last task of the page, as ``(created_at, _id)``; the next page holds
the tasks sorted after it.  Tasks submitted meanwhile are newer than every task already
listed, so they never shift the later pages: no task is listed twice or skipped.  The token
is opaque to clients (URL-safe base64 of a small JSON array); a token that is not one of
ours is a 400.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId

from ccserver.errors import Invalid
from ccserver.tes import states

DEFAULT_PAGE_SIZE = 256
MAX_PAGE_SIZE = 2047
SORT = (("created_at", -1), ("_id", -1))


@dataclass(frozen=True)
class Query:
    name_prefix: str | None = None
    state: str | None = None
    #: (key, value) pairs; value "" matches any value of the key
    tags: tuple[tuple[str, str], ...] = ()
    page_size: int = DEFAULT_PAGE_SIZE
    after: tuple[float, ObjectId] | None = None


def tag_pair(key: str, value: str) -> str:
    """One tag as one string, for exact key and value matches (the key's length first, so
    no two pairs can give the same string)."""
    return f"{len(key)}:{key}={value}"


def encode_token(created_at: float, task_id: ObjectId) -> str:
    raw = json.dumps([created_at, str(task_id)], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str) -> tuple[float, ObjectId]:
    try:
        padded = token + "=" * (-len(token) % 4)
        created_at, task_id = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        if not isinstance(created_at, (int, float)) or isinstance(created_at, bool) or not math.isfinite(created_at):
            raise ValueError
        return float(created_at), ObjectId(task_id)
    except (ValueError, TypeError, UnicodeError, binascii.Error, InvalidId):
        raise Invalid("page_token: not a page token of this server") from None


def parse(args: Mapping[str, Sequence[str]]) -> Query:
    """The query of ``GET /tasks`` from its arguments (each a list of values)."""

    def one(name: str) -> str | None:
        values = args.get(name) or []
        return values[-1] if values else None

    size_text = one("page_size")
    page_size = DEFAULT_PAGE_SIZE
    if size_text not in (None, ""):
        try:
            page_size = int(size_text)
        except ValueError:
            raise Invalid(f"page_size: expected an integer, got {size_text[:20]!r}") from None
        if page_size == 0:
            page_size = DEFAULT_PAGE_SIZE  # unset, as protobuf-based clients write it
        elif not 1 <= page_size <= MAX_PAGE_SIZE:
            raise Invalid(f"page_size: must be between 1 and {MAX_PAGE_SIZE}")
    state = one("state") or None
    if state is not None and state not in states.FILTERABLE:
        raise Invalid(f"state: expected one of {', '.join(states.FILTERABLE)}")
    keys, values = list(args.get("tag_key") or []), list(args.get("tag_value") or [])
    if len(values) > len(keys):
        raise Invalid("tag_value: more values than tag_key parameters")
    tags = tuple((k, values[i] if i < len(values) else "") for i, k in enumerate(keys))
    if any(not k for k, _ in tags):
        raise Invalid("tag_key: must not be empty")
    token = one("page_token")
    return Query(
        name_prefix=one("name_prefix") or None,
        state=state,
        tags=tags,
        page_size=page_size,
        after=decode_token(token) if token else None,
    )


def mongo_filter(query: Query, username: str | None, legacy: bool = False) -> dict[str, Any]:
    """The store filter of ``query``, limited to ``username``'s tasks unless ``None`` (admins)."""
    parts: list[dict[str, Any]] = []
    if username is not None:
        parts.append({"username": username})
    if query.state is not None:
        if query.state == states.UNKNOWN:
            parts.append({"state": {"$nin": list(states.ALL)}})
        elif legacy:
            parts.append({"state": {"$in": states.stored_for_legacy(query.state)}})
        else:
            parts.append({"state": query.state})
    if query.name_prefix:
        parts.append({"name": {"$regex": "^" + re.escape(query.name_prefix)}})
    for key, value in query.tags:
        # not $elemMatch on tag_list, nor a sub-document equality: FerretDB 1.x answers the
        # first with an error and the second with nothing
        parts.append({"tag_pairs": tag_pair(key, value)} if value else {"tag_list.key": key})
    if query.after is not None:
        created_at, task_id = query.after
        parts.append(
            {"$or": [{"created_at": {"$lt": created_at}}, {"created_at": created_at, "_id": {"$lt": task_id}}]}
        )
    if not parts:
        return {}
    return parts[0] if len(parts) == 1 else {"$and": parts}
