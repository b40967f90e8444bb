"""Vetting the aggregation pipelines of the four query endpoints (cc-protocol.md §4).

0.10 checked stage names only, so ``{"$match": {"$where": "..."}}`` ran JavaScript on the
database server and ``$lookup`` inside ``$facet``-like nesting could read other collections.
Here every key of every object at every depth (inside lists, inside ``$match``, inside
``$expr``) is compared with a deny-list of operators that run code or reach another
collection, and only whitelisted stages are accepted at the top.  A standard user's pipeline
gets a leading ``$match`` on its own user name, so no later stage can see other users'
documents (``$replaceRoot``/``$group`` run on already filtered input).
"""

from __future__ import annotations

from typing import Any

from ccserver.document_checks import MAX_DEPTH, convert_ids
from ccserver.errors import QueryRefused
from ccserver.keypaths import path_text

ALLOWED_STAGES = frozenset(
    {
        "$match",
        "$project",
        "$limit",
        "$skip",
        "$count",
        "$sort",
        "$unwind",
        "$group",
        "$sample",
        "$replaceRoot",
        "$addFields",
    }
)

#: operators that run code on the server, read or write other collections, or reveal server
#: state; refused wherever they appear
DENIED_OPERATORS = frozenset(
    {
        # server-side code
        "$where",
        "$function",
        "$accumulator",
        "$eval",
        # other collections / writes
        "$lookup",
        "$graphLookup",
        "$unionWith",
        "$out",
        "$merge",
        "$documents",
        "$facet",
        # server and cluster state
        "$changeStream",
        "$changeStreamSplitLargeEvent",
        "$collStats",
        "$currentOp",
        "$listSessions",
        "$listLocalSessions",
        "$listSearchIndexes",
        "$listSampledQueries",
        "$indexStats",
        "$planCacheStats",
        "$queryStats",
        "$shardedDataDistribution",
        # ($search, $searchMeta and $vectorSearch are Atlas *stages*, refused by ALLOWED_STAGES;
        # "$search" is also the key of the $text query operator, which is allowed)
    }
)

#: stages whose argument is a count: an integer (or integral number) in these bounds
COUNT_STAGES = {"$skip": 0, "$limit": 1}
#: MongoDB's counts are 64-bit integers
MAX_COUNT = 2**63 - 1


def vet(pipeline: Any, username: str | None) -> list[dict[str, Any]]:
    """The pipeline to run: checked, with ids in ``$match`` stages converted, and, when
    ``username`` is given (a standard user), restricted to that user's documents.

    Raises :class:`QueryRefused` naming the offending stage and key."""
    if not isinstance(pipeline, list):
        raise QueryRefused("aggregate: expected a list of stages")
    stages: list[dict[str, Any]] = []
    for i, stage in enumerate(pipeline):
        where = f"aggregate[{i}]"
        if not isinstance(stage, dict) or len(stage) != 1:
            raise QueryRefused(f"{where}: each stage must be an object with exactly one key")
        ((name, spec),) = stage.items()
        if name not in ALLOWED_STAGES:
            allowed = " ".join(sorted(ALLOWED_STAGES))
            raise QueryRefused(f"{where}: stage {name!r} is not allowed (allowed: {allowed})")
        check_operators(spec, path_text([name], where), 1)
        if name == "$match":
            if not isinstance(spec, dict):
                raise QueryRefused(f"{where}.$match: expected an object")
            spec = convert_ids(spec, f"{where}.$match")
        elif name in COUNT_STAGES:
            spec = count(spec, f"{where}.{name}", COUNT_STAGES[name])
        elif name == "$sample":
            if not isinstance(spec, dict) or "size" not in spec:
                raise QueryRefused(f"{where}.$sample: expected an object with a size")
            spec = {**spec, "size": count(spec["size"], f"{where}.$sample.size", 0)}
        stages.append({name: spec})
    if username is not None:
        own = {"username": username}
        if stages and "$match" in stages[0]:
            # one leading $match: MongoDB accepts $text only in the first stage
            stages[0] = {"$match": {"$and": [own, stages[0]["$match"]]}}
        else:
            stages.insert(0, {"$match": own})
    return stages


def count(value: Any, path: str, minimum: int) -> int:
    """``value`` as the integer argument of a stage, or a :class:`QueryRefused` naming ``path``."""
    if isinstance(value, float) and value.is_integer() and minimum <= value <= MAX_COUNT:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= MAX_COUNT:
        raise QueryRefused(f"{path}: expected an integer from {minimum} to {MAX_COUNT}, got {value!r}")
    return value


def check_operators(value: Any, path: str, depth: int) -> None:
    """Refuse denied operators as keys at any depth of ``value``, and too deep nesting."""
    if depth > MAX_DEPTH:
        raise QueryRefused(f"{path}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            if key in DENIED_OPERATORS:
                raise QueryRefused(f"{path_text([key], path)}: operator {key} is not allowed in queries")
            if isinstance(item, (dict, list)):
                check_operators(item, path_text([key], path), depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, (dict, list)):
                check_operators(item, f"{path}[{i}]", depth + 1)
