"""The dashboard's read endpoints: query strings in, domain calls (:mod:`ccserver.dashboard`)
out.  A standard user's answers hold only their own tasks: the scope is set here, from the
authenticated user, never from the request."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from ccserver.auth.guard import User
from ccserver.dashboard import activity as activity_
from ccserver.dashboard import detail, listing
from ccserver.errors import Invalid
from ccserver.storage.base import Store

#: at most this many tasks of each kind are read for the activity plot
ACTIVITY_MAX_TASKS = 20000


def query_args(raw: Mapping[bytes, list[bytes]], allowed: Collection[str]) -> dict[str, str]:
    """The query string as ``name → value`` (one value each); an unknown name is a 400."""
    args: dict[str, str] = {}
    for key, values in raw.items():
        name = key.decode("utf-8", "replace")
        if name not in allowed:
            raise Invalid(f"unknown query parameter {name[:40]!r} (known: {', '.join(sorted(allowed))})")
        if len(values) != 1:
            raise Invalid(f"{name}: give it once")
        try:
            args[name] = values[0].decode("utf-8")
        except UnicodeDecodeError:
            raise Invalid(f"{name}: not UTF-8") from None
    return args


def _scope(user: User) -> str | None:
    return None if user.is_admin else user.username


async def activity(store: Store, user: User, now: float, raw: Mapping[bytes, list[bytes]]) -> dict[str, Any]:
    args = query_args(raw, {"minutes"})
    text = args.get("minutes", "60")
    try:
        minutes = int(text)
    except ValueError:
        raise Invalid(f"minutes: a whole number, not {text[:40]!r}") from None
    if not 1 <= minutes <= activity_.MAX_MINUTES:
        raise Invalid(f"minutes: between 1 and {activity_.MAX_MINUTES}")
    return await activity_.read(store, _scope(user), now, minutes, ACTIVITY_MAX_TASKS)


async def tasks(store: Store, user: User, raw: Mapping[bytes, list[bytes]]) -> dict[str, Any]:
    args = query_args(raw, {"state", "user", "image", "since", "until", "cursor", "limit"})
    filters = listing.parse_filters(args, user.username, user.is_admin)
    cursor = listing.parse_cursor(args["cursor"]) if args.get("cursor") else None
    return await listing.page(store, filters, cursor, listing.parse_limit(args.get("limit")))


async def task(store: Store, user: User, kind: str, task_id: str) -> dict[str, Any]:
    oid = detail.parse_kind_and_id(kind, task_id)
    return await detail.read(store, kind, oid, _scope(user))
