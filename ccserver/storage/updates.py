"""Update documents (``$set $unset $inc $push``) applied in Python, for the embedded store.

MongoDB applies these on the server; the embedded store decodes the stored document, calls
:func:`apply_update` and writes it back, so the two backends must agree on what the four
operators do.  Only the subset ccserver uses is implemented, with MongoDB's behaviour:

* paths are dotted; ``$set`` creates missing intermediate documents, a numeric part indexes
  into an existing array;
* ``$unset`` of a missing path does nothing;
* ``$inc`` of a missing field sets it, of a non-number is an error;
* ``$push`` appends one value, or every value of ``{"$each": [...]}``, creating the array when
  the field is missing; pushing onto a non-array is an error;
* ``_id`` cannot be changed.

Anything else is a :class:`~ccserver.storage.base.QueryError`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from numbers import Number
from typing import Any

from ccserver.storage.base import UPDATE_OPERATORS, Document, QueryError

_MISSING = object()


def validate_update(update: Mapping[str, Any]) -> None:
    """Raise :class:`QueryError` unless ``update`` is a well-formed operator document."""
    if not isinstance(update, Mapping) or not update:
        raise QueryError("update must be a non-empty document of update operators")
    seen: set[str] = set()
    for operator, fields in update.items():
        if operator not in UPDATE_OPERATORS:
            raise QueryError(
                f"unsupported update operator {operator!r}; allowed: {', '.join(sorted(UPDATE_OPERATORS))}"
            )
        if not isinstance(fields, Mapping):
            raise QueryError(f"{operator}: expected a document of field paths")
        for path, value in fields.items():
            if not isinstance(path, str) or not path or any(not p for p in path.split(".")):
                raise QueryError(f"{operator}: invalid field path {path!r}")
            if path == "_id" or path.startswith("_id."):
                raise QueryError(f"{operator}: the field '_id' cannot be changed")
            for other in seen:
                if path == other or path.startswith(other + ".") or other.startswith(path + "."):
                    raise QueryError(f"{operator}: updating the path {path!r} would conflict with {other!r}")
            seen.add(path)
            if operator == "$inc" and not _is_number(value):
                raise QueryError(f"$inc: cannot increment by non-numeric value {value!r}")
            if operator == "$push" and isinstance(value, Mapping) and "$each" in value:
                if set(value) != {"$each"} or not isinstance(value["$each"], (list, tuple)):
                    raise QueryError("$push: only {'$each': [...]} is supported as a modifier")


def apply_update(doc: Document, update: Mapping[str, Any]) -> None:
    """Apply ``update`` to ``doc`` in place (validate first; on error ``doc`` may be partly
    changed, so callers apply it to a copy or discard the document)."""
    validate_update(update)
    for operator, fields in update.items():
        for path, value in fields.items():
            if operator == "$set":
                _set(doc, path, copy.deepcopy(value))
            elif operator == "$unset":
                _unset(doc, path)
            elif operator == "$inc":
                current = _get(doc, path)
                if current is _MISSING:
                    _set(doc, path, value)
                elif not _is_number(current):
                    raise QueryError(f"$inc: cannot apply to the non-numeric field {path!r}")
                else:
                    _set(doc, path, current + value)
            else:  # $push
                values = value["$each"] if isinstance(value, Mapping) and "$each" in value else [value]
                current = _get(doc, path)
                if current is _MISSING:
                    _set(doc, path, copy.deepcopy(list(values)))
                elif not isinstance(current, list):
                    raise QueryError(f"$push: the field {path!r} is not an array")
                else:
                    current.extend(copy.deepcopy(list(values)))


def _is_number(value: Any) -> bool:
    return isinstance(value, Number) and not isinstance(value, bool)


def _child(container: Any, part: str) -> Any:
    if isinstance(container, dict):
        return container.get(part, _MISSING)
    if isinstance(container, list) and part.isdigit():
        index = int(part)
        return container[index] if index < len(container) else _MISSING
    return _MISSING


def _get(doc: Document, path: str) -> Any:
    current: Any = doc
    for part in path.split("."):
        current = _child(current, part)
        if current is _MISSING:
            return _MISSING
    return current


def _set(doc: Document, path: str, value: Any) -> None:
    parts = path.split(".")
    current: Any = doc
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(current, dict):
            if last:
                current[part] = value
                return
            nxt = current.get(part, _MISSING)
            if nxt is _MISSING:
                nxt = current[part] = {}
            current = nxt
        elif isinstance(current, list) and part.isdigit():
            index = int(part)
            while len(current) <= index:  # MongoDB pads with nulls
                current.append(None)
            if last:
                current[index] = value
                return
            if current[index] is None:
                current[index] = {}
            current = current[index]
        else:
            where = ".".join(parts[:i]) or "(document)"
            kind = type(current).__name__
            raise QueryError(f"cannot create field {part!r} in element {where!r} of type {kind}")


def _unset(doc: Document, path: str) -> None:
    parts = path.split(".")
    parent = _get(doc, ".".join(parts[:-1])) if len(parts) > 1 else doc
    last = parts[-1]
    if isinstance(parent, dict):
        parent.pop(last, None)
    elif isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        parent[int(last)] = None  # MongoDB leaves a null in the array
