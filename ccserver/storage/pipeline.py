"""Query planning and evaluation for the embedded store (pure functions, no SQLite).

MongoDB query semantics come from ``mongomock`` (``filtering.filter_applies`` for filters,
``aggregate.process_pipeline`` for stages); this module only decides how much work SQLite can
take off its hands:

* :func:`plan_filter` turns the equality / ``$in`` conditions of a filter on indexed fields
  and ``_id`` into :class:`Constraint` s.  They select a *superset* of the matching documents
  (the full filter is always applied afterwards); ``Prefilter.exact`` says when they select
  exactly the matching set, so counting and deleting need not decode documents.
* :func:`plan_pipeline` merges the leading ``$match`` stages into one filter and, when the
  rest of the pipeline is only ``$skip`` / ``$limit``, works out the window so that the store
  can stream candidates and stop early.

Index keys (:func:`index_key`): ObjectIds are their 12 bytes (a BLOB), strings are TEXT, int
and float are numbers (SQLite compares INTEGER and REAL numerically, as MongoDB compares
numbers).  Other types (``None``, booleans, dates, documents, ...) are not indexed and a
condition on them is not pushed down; it is still evaluated, by a scan.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bson import ObjectId
from mongomock import aggregate as mm_aggregate
from mongomock import filtering as mm_filtering

from ccserver.storage.base import Document, Filter, QueryError, QueryTimeout, Sort

#: how many documents are processed between two looks at the clock
CLOCK_EVERY = 64


def index_key(value: Any) -> Any | None:
    """The SQLite value an indexed field value is stored and looked up as, or ``None``."""
    if isinstance(value, ObjectId):
        return value.binary
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**63 else None
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, str):
        return value
    return None


def index_keys(doc: Mapping[str, Any], name: str) -> set[Any]:
    """The keys of field ``name`` of ``doc``: one per scalar value or per array element."""
    value = doc.get(name)
    values = value if isinstance(value, list) else [value]
    return {k for k in map(index_key, values) if k is not None}


@dataclass(frozen=True)
class Constraint:
    """``field`` has one of ``keys`` (index keys): a document that matches has such a value."""

    field: str
    keys: tuple[Any, ...]


@dataclass(frozen=True)
class Prefilter:
    constraints: tuple[Constraint, ...] = ()
    #: the constraints select exactly the documents the filter matches
    exact: bool = True

    @property
    def empty(self) -> bool:
        """Some constraint has no possible value (``{"$in": []}``): nothing can match."""
        return any(not c.keys for c in self.constraints)


def plan_filter(filter: Filter, indexed: Iterable[str]) -> Prefilter:
    """The SQL-answerable part of ``filter`` (top level and ``$and``) on ``indexed`` or ``_id``."""
    constraints: list[Constraint] = []
    exact = _collect(filter, frozenset(indexed) | {"_id"}, constraints)
    return Prefilter(tuple(constraints), exact)


def _collect(filter: Filter, indexed: frozenset[str], out: list[Constraint]) -> bool:
    if not isinstance(filter, Mapping):
        raise QueryError(f"a filter must be a document, not {type(filter).__name__}")
    exact = True
    for name, condition in filter.items():
        if name == "$and" and isinstance(condition, list) and condition:
            for sub in condition:
                exact = _collect(sub, indexed, out) and exact
            continue
        if name not in indexed:
            exact = False
            continue
        keys, pure = _condition_keys(condition)
        if keys is None:
            exact = False
            continue
        out.append(Constraint(name, keys))
        exact = exact and pure
    return exact


def _condition_keys(condition: Any) -> tuple[tuple[Any, ...] | None, bool]:
    """``(keys, pure)``: the index keys a matching value must have, and whether that is the
    whole condition; ``(None, False)`` when the condition cannot be pushed down."""
    if not isinstance(condition, Mapping):
        key = index_key(condition)
        return ((key,), True) if key is not None else (None, False)
    if not condition or any(not str(k).startswith("$") for k in condition):
        return None, False  # equality with an embedded document
    if "$eq" in condition:
        key = index_key(condition["$eq"])
        return ((key,), len(condition) == 1) if key is not None else (None, False)
    if "$in" in condition and isinstance(condition["$in"], (list, tuple)):
        keys = [index_key(v) for v in condition["$in"]]
        if any(k is None for k in keys):
            return None, False
        return tuple(dict.fromkeys(keys)), len(condition) == 1
    return None, False


@dataclass(frozen=True)
class PipelinePlan:
    #: the leading ``$match`` stages as one filter (``{}`` when there are none)
    match: dict[str, Any]
    #: the stages after the leading ``$match`` stages, for mongomock
    rest: list[dict[str, Any]] = field(default_factory=list)
    #: ``(skip, limit)`` when ``rest`` is only ``$skip``/``$limit`` (limit ``None``: no limit);
    #: the matching documents can then be streamed
    window: tuple[int, int | None] | None = None


def plan_pipeline(pipeline: Sequence[Mapping[str, Any]]) -> PipelinePlan:
    if not isinstance(pipeline, (list, tuple)):
        raise QueryError("a pipeline must be a list of stages")
    stages: list[dict[str, Any]] = []
    for stage in pipeline:
        if not isinstance(stage, Mapping) or len(stage) != 1:
            raise QueryError(f"each pipeline stage must be a document with exactly one key: {stage!r}")
        stages.append(dict(stage))
    matches = []
    while stages and "$match" in stages[0]:
        match = stages.pop(0)["$match"]
        if not isinstance(match, Mapping):
            raise QueryError("$match: the filter must be a document")
        if match:
            matches.append(dict(match))
    merged = matches[0] if len(matches) == 1 else ({"$and": matches} if matches else {})
    return PipelinePlan(merged, stages, _window(stages))


def _window(stages: list[dict[str, Any]]) -> tuple[int, int | None] | None:
    skip, limit = 0, None
    for stage in stages:
        ((name, value),) = stage.items()
        if name not in ("$skip", "$limit"):
            return None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise QueryError(f"{name}: expected an integer, got {value!r}")
        if name == "$skip":
            if value < 0:
                raise QueryError(f"$skip: expected a non-negative integer, got {value}")
            skip += value
            limit = None if limit is None else max(0, limit - value)
        else:
            if value <= 0:
                raise QueryError(f"$limit: expected a positive integer, got {value}")
            limit = value if limit is None else min(limit, value)
    return skip, limit


# --- evaluation with mongomock ----------------------------------------------------------


def _query_error(error: Exception) -> QueryError:
    message = str(error) or type(error).__name__
    return QueryError(message if isinstance(error, QueryError) else f"{type(error).__name__}: {message}")


def matches(filter: Filter, doc: Document) -> bool:
    """MongoDB's verdict on ``doc``; an unknown operator or bad value is a :class:`QueryError`.

    mongomock raises assorted exceptions for filters it refuses; all of them are about the
    filter (client input), hence the broad ``except``."""
    try:
        return bool(mm_filtering.filter_applies(filter, doc))
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - see docstring
        raise _query_error(e) from None


def check_filter(filter: Filter) -> None:
    """Evaluate ``filter`` once so that a bad one fails even when there is nothing to scan."""
    if _mentions(filter, "$text"):
        raise QueryError("$text: the embedded store has no text index; text search needs the MongoDB backend")
    matches(filter, {})


def _mentions(value: Any, key: str) -> bool:
    if isinstance(value, Mapping):
        return key in value or any(_mentions(v, key) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_mentions(v, key) for v in value)
    return False


class Deadline:
    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.at = None if seconds is None else time.monotonic() + seconds

    def check(self) -> None:
        if self.at is not None and time.monotonic() > self.at:
            raise QueryTimeout(f"the query ran longer than {self.seconds:g} s")


def filtered(docs: Iterable[Document], filter: Filter, deadline: Deadline) -> Iterator[Document]:
    """The documents of ``docs`` that match ``filter``, looking at the clock now and then."""
    for i, doc in enumerate(docs):
        if i % CLOCK_EVERY == 0:
            deadline.check()
        if not filter or matches(filter, doc):
            yield doc


def run_stages(docs: list[Document], stages: Sequence[Mapping[str, Any]], deadline: Deadline) -> list[Document]:
    """Run ``stages`` one by one through mongomock, checking the clock between stages."""
    for stage in stages:
        deadline.check()
        try:
            docs = list(mm_aggregate.process_pipeline(docs, None, [stage], None))
        except MemoryError:
            raise  # the worker's memory bound, not a fault of the pipeline
        except Exception as e:  # noqa: BLE001 - mongomock's errors are about the pipeline
            raise _query_error(e) from None
    deadline.check()
    return docs


def sort_documents(docs: list[Document], sort: Sort) -> list[Document]:
    """MongoDB order (as mongomock implements it) for ``[(field, 1 | -1), ...]``."""
    for name, direction in reversed(list(sort)):
        if direction not in (1, -1) or isinstance(direction, bool):
            raise QueryError(f"sort: direction of {name!r} must be 1 or -1, got {direction!r}")
        docs = sorted(docs, key=lambda d: mm_filtering.resolve_sort_key(name, d), reverse=direction < 0)
    return docs


def project(docs: list[Document], projection: Mapping[str, Any] | None) -> list[Document]:
    if not projection:
        return docs
    return run_stages(docs, [{"$project": dict(projection)}], Deadline(None))
