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
#: an activity answer is reused for this long (per user scope and window): every open queue
#: page asks every few seconds, and one answer may read thousands of tasks
ACTIVITY_CACHE_SECONDS = 10.0


class ActivityCache:
    """Recent activity answers by ``(scope, minutes)``; the clock is injected."""

    def __init__(self, clock: Any, seconds: float = ACTIVITY_CACHE_SECONDS) -> None:
        self.clock = clock
        self.seconds = seconds
        self._answers: dict[tuple[str | None, int], tuple[float, dict[str, Any]]] = {}

    def get(self, key: tuple[str | None, int]) -> dict[str, Any] | None:
        found = self._answers.get(key)
        if found is None or self.clock.seconds() - found[0] >= self.seconds:
            return None
        return found[1]

    def put(self, key: tuple[str | None, int], answer: dict[str, Any]) -> None:
        now = self.clock.seconds()
        # forget what has expired, so the cache holds at most one answer per recent asker
        self._answers = {k: v for k, v in self._answers.items() if now - v[0] < self.seconds}
        self._answers[key] = (now, answer)


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


async def activity(store: Store, user: User, cache: ActivityCache, raw: Mapping[bytes, list[bytes]]) -> dict[str, Any]:
    args = query_args(raw, {"minutes"})
    text = args.get("minutes", "60")
    try:
        minutes = int(text)
    except ValueError:
        raise Invalid(f"minutes: a whole number, not {text[:40]!r}") from None
    if not 1 <= minutes <= activity_.MAX_MINUTES:
        raise Invalid(f"minutes: between 1 and {activity_.MAX_MINUTES}")
    key = (_scope(user), minutes)
    answer = cache.get(key)
    if answer is None:
        answer = await activity_.read(store, key[0], cache.clock.seconds(), minutes, ACTIVITY_MAX_TASKS)
        cache.put(key, answer)
    return answer


async def tasks(store: Store, user: User, raw: Mapping[bytes, list[bytes]]) -> dict[str, Any]:
    args = query_args(raw, {"state", "user", "image", "since", "until", "cursor", "limit"})
    filters = listing.parse_filters(args, user.username, user.is_admin)
    cursor = listing.parse_cursor(args["cursor"]) if args.get("cursor") else None
    return await listing.page(store, filters, cursor, listing.parse_limit(args.get("limit")))


async def task(store: Store, user: User, kind: str, task_id: str) -> dict[str, Any]:
    oid = detail.parse_kind_and_id(kind, task_id)
    return await detail.read(store, kind, oid, _scope(user))
