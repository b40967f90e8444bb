"""The pure parts of the embedded store: pushdown planning, update operators, evaluation."""

from __future__ import annotations

from typing import Any

import pytest
from bson import ObjectId

from ccserver.storage import QueryError, QueryTimeout
from ccserver.storage import pipeline as pl
from ccserver.storage.updates import apply_update, validate_update

OID = ObjectId()
INDEXED = ("state", "username", "task_group_id")


def constraints(filter: dict[str, Any]) -> tuple[list[tuple[str, tuple[Any, ...]]], bool]:
    plan = pl.plan_filter(filter, INDEXED)
    return [(c.field, c.keys) for c in plan.constraints], plan.exact


# --- index keys and prefilters --------------------------------------------------------


def test_index_keys_of_scalars_and_arrays() -> None:
    assert pl.index_key(OID) == OID.binary
    assert pl.index_key("x") == "x" and pl.index_key(3) == 3 and pl.index_key(2.5) == 2.5
    for value in (None, True, False, float("nan"), {"a": 1}, [1], b"x", 2**70):
        assert pl.index_key(value) is None
    assert pl.index_keys({"t": [OID, OID, "a", None, {"x": 1}]}, "t") == {OID.binary, "a"}
    assert pl.index_keys({"t": 1}, "t") == {1} and pl.index_keys({}, "t") == set()


def test_equality_and_in_are_pushed_down_exactly() -> None:
    assert constraints({"state": 1}) == ([("state", (1,))], True)
    both = ([("state", (1,)), ("username", ("a",))], True)
    assert constraints({"state": {"$eq": 1}, "username": "a"}) == both
    assert constraints({"state": {"$in": [1, 2, 1]}}) == ([("state", (1, 2))], True)
    assert constraints({"_id": OID}) == ([("_id", (OID.binary,))], True)
    assert constraints({"task_group_id": OID}) == ([("task_group_id", (OID.binary,))], True)
    assert constraints({"$and": [{"state": 1}, {"username": "a"}]}) == ([("state", (1,)), ("username", ("a",))], True)
    assert constraints({}) == ([], True)


def test_other_conditions_make_the_prefilter_a_superset() -> None:
    assert constraints({"state": 1, "trials": 2}) == ([("state", (1,))], False)
    assert constraints({"state": {"$in": [1], "$ne": 2}}) == ([("state", (1,))], False)
    assert constraints({"state": {"$gt": 1}}) == ([], False)
    assert constraints({"state": None}) == ([], False)  # also matches a missing field
    assert constraints({"state": True}) == ([], False)
    assert constraints({"state": {"$in": [1, None]}}) == ([], False)
    assert constraints({"username": {"first": "a"}}) == ([], False)
    assert constraints({"task_group_id": [OID]}) == ([], False)
    assert constraints({"$or": [{"state": 1}, {"state": 2}]}) == ([], False)
    assert constraints({"username.first": "a"}) == ([], False)


def test_empty_in_matches_nothing() -> None:
    assert pl.plan_filter({"state": {"$in": []}}, INDEXED).empty
    assert not pl.plan_filter({"state": {"$in": [1]}}, INDEXED).empty


# --- pipelines ---------------------------------------------------------------------------


def test_leading_matches_are_merged() -> None:
    plan = pl.plan_pipeline([{"$match": {"username": "a"}}, {"$match": {"state": 1}}, {"$sort": {"x": 1}}])
    assert plan.match == {"$and": [{"username": "a"}, {"state": 1}]}
    assert plan.rest == [{"$sort": {"x": 1}}] and plan.window is None
    assert pl.plan_pipeline([{"$match": {"state": 1}}]).match == {"state": 1}
    assert pl.plan_pipeline([{"$match": {}}, {"$count": "n"}]).match == {}
    later = pl.plan_pipeline([{"$sort": {"x": 1}}, {"$match": {"state": 1}}])
    assert later.match == {} and len(later.rest) == 2


@pytest.mark.parametrize(
    ("stages", "window"),
    [
        ([], (0, None)),
        ([{"$limit": 100}], (0, 100)),
        ([{"$skip": 5}, {"$limit": 10}], (5, 10)),
        ([{"$limit": 10}, {"$skip": 3}], (3, 7)),
        ([{"$limit": 10}, {"$skip": 30}], (30, 0)),
        ([{"$limit": 10}, {"$limit": 4}, {"$skip": 1}, {"$skip": 1}], (2, 2)),
        ([{"$limit": 5.0}], (0, 5)),
        ([{"$limit": 5}, {"$project": {"a": 1}}], None),
    ],
)
def test_skip_limit_window(stages: list[dict[str, Any]], window: tuple[int, int | None] | None) -> None:
    assert pl.plan_pipeline([{"$match": {"state": 1}}, *stages]).window == window


@pytest.mark.parametrize(
    "pipeline",
    [
        {"$match": {}},
        [{"$match": 1}],
        [{"$limit": 0}],
        [{"$limit": True}],
        [{"$skip": -1}],
        [{"$match": {}, "$limit": 1}],
        ["$limit"],
    ],
)
def test_malformed_pipelines(pipeline: Any) -> None:
    with pytest.raises(QueryError):
        pl.plan_pipeline(pipeline)


def test_evaluation_maps_mongomock_errors_and_checks_the_clock() -> None:
    docs = [{"_id": i, "v": i % 3} for i in range(10)]
    assert pl.run_stages(
        docs, [{"$group": {"_id": "$v", "n": {"$sum": 1}}}, {"$sort": {"_id": 1}}], pl.Deadline(5)
    ) == [{"_id": 0, "n": 4}, {"_id": 1, "n": 3}, {"_id": 2, "n": 3}]
    with pytest.raises(QueryError, match="nosuch"):
        pl.run_stages(docs, [{"$nosuch": 1}], pl.Deadline(5))
    with pytest.raises(QueryError):
        pl.check_filter({"v": {"$nosuch": 1}})
    with pytest.raises(QueryTimeout):
        list(pl.filtered(iter(docs), {"v": 1}, pl.Deadline(-1)))
    assert [d["_id"] for d in pl.filtered(docs, {"v": 1}, pl.Deadline(5))] == [1, 4, 7]
    assert [d["v"] for d in pl.sort_documents(docs[:4], [("v", -1), ("_id", 1)])] == [2, 1, 0, 0]
    assert pl.project(docs[:1], {"v": 1, "_id": 0}) == [{"v": 0}]
    with pytest.raises(QueryError):
        pl.sort_documents(docs, [("v", 2)])


# --- updates -----------------------------------------------------------------------------


def updated(doc: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    apply_update(doc, update)
    return doc


def test_set_and_unset_with_dotted_paths() -> None:
    assert updated({"a": 1}, {"$set": {"b.c.d": 2, "a": 3}}) == {"a": 3, "b": {"c": {"d": 2}}}
    assert updated({"l": [{"x": 1}, {"x": 2}]}, {"$set": {"l.1.x": 5}}) == {"l": [{"x": 1}, {"x": 5}]}
    assert updated({"l": [1]}, {"$set": {"l.2": 3}}) == {"l": [1, None, 3]}
    assert updated({"a": {"b": 1, "c": 2}}, {"$unset": {"a.b": "", "zz": "", "a.q.r": ""}}) == {"a": {"c": 2}}
    assert updated({"l": [1, 2]}, {"$unset": {"l.0": ""}}) == {"l": [None, 2]}
    value = {"k": [1]}
    doc = updated({}, {"$set": {"v": value}})
    value["k"].append(2)
    assert doc == {"v": {"k": [1]}}  # the update's value is copied
    with pytest.raises(QueryError, match="cannot create field"):
        apply_update({"a": 1}, {"$set": {"a.b": 2}})


def test_inc_and_push() -> None:
    assert updated({"n": 1}, {"$inc": {"n": 2, "m.k": 1.5}}) == {"n": 3, "m": {"k": 1.5}}
    assert updated({"t": [1]}, {"$push": {"t": [2], "u": 3}}) == {"t": [1, [2]], "u": [3]}
    assert updated({"t": [1]}, {"$push": {"t": {"$each": [2, 3]}}}) == {"t": [1, 2, 3]}
    assert updated({"t": [1]}, {"$push": {"t": {"a": 1}}}) == {"t": [1, {"a": 1}]}
    with pytest.raises(QueryError):
        apply_update({"n": "x"}, {"$inc": {"n": 1}})
    with pytest.raises(QueryError):
        apply_update({"t": 1}, {"$push": {"t": 2}})


@pytest.mark.parametrize(
    "update",
    [
        {},
        {"state": 1},
        {"$rename": {"a": "b"}},
        {"$set": 1},
        {"$set": {"_id": 1}},
        {"$set": {"a..b": 1}},
        {"$inc": {"n": "1"}},
        {"$inc": {"n": True}},
        {"$push": {"t": {"$each": 1}}},
        {"$push": {"t": {"$each": [1], "$slice": 2}}},
        {"$set": {"a": 1}, "$unset": {"a": ""}},
        {"$set": {"a": {"b": 1}}, "$inc": {"a.b": 1}},
    ],
)
def test_rejected_updates(update: dict[str, Any]) -> None:
    with pytest.raises(QueryError):
        validate_update(update)
