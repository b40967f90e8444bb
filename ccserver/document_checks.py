"""Documents on their way in: what MongoDB can store, and ids as ObjectIds.

Pure functions over JSON values, shared by the request bodies of the web layer and by the
domain (task submission, query vetting).  A client's mistake is an
:class:`~ccserver.errors.Invalid` whose message names the place (``tasks[3].parameters.a``)
and what is wrong there.
"""

from __future__ import annotations

from typing import Any

from bson import ObjectId
from bson.errors import InvalidId

from ccserver.errors import BadId, NotStorable
from ccserver.keypaths import path_text

__all__ = ["MAX_DEPTH", "check_storable", "convert_ids", "is_id_key", "path_text"]

#: deeper nesting is refused: MongoDB stores at most 100 levels, and our own walks recurse
MAX_DEPTH = 64


def is_id_key(key: str) -> bool:
    return key.endswith("_id") or key.endswith("_ids")


def convert_ids(value: Any, path: str = "", under_id: bool = False) -> Any:
    """A copy of ``value`` in which the strings under keys ending in ``_id``/``_ids`` (at any
    depth below such a key, so ``{"_id": {"$in": [...]}}`` works as in 0.10) are ObjectIds.

    :class:`~ccserver.errors.BadId` names the first string that is not an id."""
    if isinstance(value, dict):
        return {k: convert_ids(v, path_text([k], path), under_id or is_id_key(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [convert_ids(v, f"{path}[{i}]", under_id) for i, v in enumerate(value)]
    if under_id and isinstance(value, str):
        try:
            return ObjectId(value)
        except (InvalidId, TypeError):
            raise BadId(f"{path}: {value[:60]!r} is not a valid id (24 hex digits)") from None
    return value


def check_storable(value: Any, path: str, depth: int = 0) -> None:
    """Refuse (:class:`~ccserver.errors.NotStorable`) what a client may put into free-form
    objects (``parameters``, ``connector_access``, ...) but MongoDB cannot store as given:
    keys starting with ``$``, keys with ``.`` or NUL, nesting deeper than :data:`MAX_DEPTH`."""
    if depth > MAX_DEPTH:
        raise NotStorable(f"{path}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            if key.startswith("$") or "." in key or "\x00" in key:
                raise NotStorable(f"{path_text([key], path)}: keys may not start with '$' or contain '.' or NUL")
            if isinstance(item, (dict, list)):
                check_storable(item, path_text([key], path), depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, (dict, list)):
                check_storable(item, f"{path}[{i}]", depth + 1)


def json_type(value: Any) -> str:
    """How an error message names the JSON type of ``value`` ("a string", "null", ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
