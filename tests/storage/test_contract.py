"""One contract for every storage backend: the same calls must give the same documents.

Expected values are written here, so each backend is checked against the same truth.

FerretDB 1.24 gaps (probed; they are asserted, not skipped, so a FerretDB upgrade that closes
one makes its test fail and the note can go):

* refused with "not implemented" (a QueryError here): the stages ``$sample`` and
  ``$replaceRoot``; ``$unwind`` in its document form (``{"path": ..., ...}``); every ``$group``
  accumulator except ``$sum`` and ``$count`` (so no ``$push $avg $min $max $first``);
  expression operators in ``$project`` (``$multiply``, ``$literal``, ...) and ``$expr``.
* silently WRONG: ``$group`` computes only its first accumulator; the others come back as 0.
  ``$unwind`` of an array field returns documents holding only ``_id`` and
  the unwound field (every other field is dropped; a non-array value passes through whole).
  A field path (``"$meta.x"``) as the value in ``$addFields``/``$set``/
  ``$project`` is stored as the literal string instead of being evaluated, and a dotted new
  field in ``$addFields`` (``"meta.y"``) becomes a top-level key with a dot.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import bson
import pytest
import pytest_twisted
from bson import ObjectId
from twisted.internet.task import deferLater

from ccserver.storage import QueryError, QueryTimeout, StorageUnavailable, Store

G1, G2 = ObjectId(), ObjectId()
GAP = "ferretdb"  # the backend with the gaps listed in the module docstring


def tasks() -> list[dict[str, Any]]:
    return [
        {
            "username": "alice",
            "state": 0,
            "created_at": 1.0,
            "task_group_id": [G1],
            "trials": 0,
            "tags": ["a", "b"],
            "ram": 256,
            "meta": {"x": 1},
        },
        {
            "username": "alice",
            "state": 1,
            "created_at": 2.0,
            "task_group_id": [G1],
            "trials": 1,
            "tags": ["b"],
            "ram": 512,
            "meta": {"x": 2},
        },
        {
            "username": "bob",
            "state": 1,
            "created_at": 3.0,
            "task_group_id": [G2],
            "trials": 0,
            "tags": [],
            "ram": 1024,
            "meta": {"x": 3},
        },
        {
            "username": "bob",
            "state": 2,
            "created_at": 4.0,
            "task_group_id": [G2],
            "trials": 2,
            "tags": ["c"],
            "ram": 256,
            "meta": {"x": 4},
        },
    ]


async def load(store: Store) -> list[ObjectId]:
    return await store.insert_many("tasks", tasks())


async def agg(store: Store, pipeline: list[dict[str, Any]], max_documents: int = 1000) -> list[Any]:
    return await store.aggregate("tasks", pipeline, max_documents=max_documents, timeout=10)


async def raises_query_error(d: Any) -> QueryError:
    with pytest.raises(QueryError) as info:
        await d
    return info.value


def names(docs: list[dict[str, Any]]) -> list[tuple[str, float]]:
    return [(d["username"], d["created_at"]) for d in docs]


# --- documents ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_insert_sets_ids_and_round_trips_object_ids(store: Store) -> None:
    docs = tasks()
    ids = await store.insert_many("tasks", docs)
    assert len(ids) == 4 and all(isinstance(i, ObjectId) for i in ids)
    assert [d["_id"] for d in docs] == ids
    found = await store.find_one("tasks", {"_id": ids[1]})
    assert found == docs[1]
    assert isinstance(found["_id"], ObjectId) and found["task_group_id"] == [G1]
    assert isinstance(found["task_group_id"][0], ObjectId)
    assert await store.find_one("tasks", {"_id": ObjectId()}) is None
    own = ObjectId()
    assert await store.insert_one("tasks", {"_id": own, "username": "carol"}) == own
    assert (await store.find_one("tasks", {"_id": own}))["username"] == "carol"


@pytest_twisted.ensureDeferred
async def test_duplicate_id_is_a_query_error(store: Store) -> None:
    oid = await store.insert_one("users", {"username": "alice"})
    await raises_query_error(store.insert_one("users", {"_id": oid, "username": "again"}))
    assert await store.count("users", {}) == 1


@pytest_twisted.ensureDeferred
async def test_find_count_filters(store: Store) -> None:
    ids = await load(store)
    assert await store.count("tasks", {}) == 4
    assert await store.count("tasks", {"state": 1}) == 2
    assert await store.count("tasks", {"state": {"$in": [0, 2]}, "username": "bob"}) == 1
    assert await store.count("tasks", {"state": {"$gte": 1}, "ram": {"$lt": 1024}}) == 2
    assert await store.count("tasks", {"$or": [{"username": "bob"}, {"trials": 1}]}) == 3
    assert await store.count("tasks", {"meta.x": {"$gt": 2}}) == 2
    assert await store.count("tasks", {"_id": {"$in": [ids[0], ids[3], ObjectId()]}}) == 2
    assert await store.count("tasks", {"state": {"$in": []}}) == 0
    assert await store.count("nothing_here", {}) == 0
    assert await store.find("nothing_here", {"state": 1}) == []


@pytest_twisted.ensureDeferred
async def test_array_of_one_id_matches_the_id(store: Store) -> None:
    await load(store)
    assert await store.count("tasks", {"task_group_id": G1}) == 2
    assert await store.count("tasks", {"task_group_id": {"$in": [G2]}}) == 2
    assert await store.count("tasks", {"task_group_id": [G2]}) == 2
    assert await store.count("tasks", {"tags": "b"}) == 2
    containers = [{"task_id": [ObjectId()], "data_container_ids": [G1, G2], "state": 0} for _ in range(2)]
    await store.insert_many("application_containers", containers)
    assert await store.count("application_containers", {"data_container_ids": G2}) == 2
    found = await store.find("application_containers", {"task_id": containers[1]["task_id"][0]})
    assert [d["_id"] for d in found] == [containers[1]["_id"]]


@pytest_twisted.ensureDeferred
async def test_sort_limit_projection(store: Store) -> None:
    await load(store)
    docs = await store.find("tasks", {}, sort=[("ram", 1), ("created_at", -1)])
    assert names(docs) == [("bob", 4.0), ("alice", 1.0), ("alice", 2.0), ("bob", 3.0)]
    docs = await store.find("tasks", {"state": {"$gte": 0}}, sort=[("created_at", -1)], limit=2)
    assert names(docs) == [("bob", 4.0), ("bob", 3.0)]
    assert len(await store.find("tasks", {}, limit=3)) == 3
    docs = await store.find(
        "tasks", {"username": "alice"}, sort=[("created_at", 1)], projection={"state": 1, "meta.x": 1, "_id": 0}
    )
    assert docs == [{"state": 0, "meta": {"x": 1}}, {"state": 1, "meta": {"x": 2}}]
    docs = await store.find(
        "tasks", {"username": "bob"}, sort=[("created_at", 1)], projection={"tags": 0, "meta": 0, "task_group_id": 0}
    )
    assert [sorted(d) for d in docs] == [["_id", "created_at", "ram", "state", "trials", "username"]] * 2
    one = await store.find_one("tasks", {"username": "bob", "state": 2}, projection={"trials": 1})
    assert set(one) == {"_id", "trials"} and one["trials"] == 2


# --- updates ------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_update_operators_with_dotted_paths(store: Store) -> None:
    ids = await load(store)
    first = {"_id": ids[0]}
    changes = {"meta.y": "new", "state": 3, "extra.deep.z": 1}
    assert await store.update_one("tasks", first, {"$set": changes}) == 1
    assert await store.update_one("tasks", first, {"$unset": {"meta.x": "", "missing.field": ""}}) == 1
    assert await store.update_one("tasks", first, {"$inc": {"trials": 2, "counter.n": 5}}) == 1
    assert await store.update_one("tasks", first, {"$push": {"tags": "c", "transitions": {"state": 3}}}) == 1
    assert await store.update_one("tasks", first, {"$push": {"tags": {"$each": ["d", "e"]}}}) == 1
    doc = await store.find_one("tasks", first)
    assert doc["meta"] == {"y": "new"} and doc["extra"] == {"deep": {"z": 1}} and doc["state"] == 3
    assert doc["trials"] == 2 and doc["counter"] == {"n": 5}
    assert doc["tags"] == ["a", "b", "c", "d", "e"] and doc["transitions"] == [{"state": 3}]
    # the indexed field changed: lookups by the new value find it, by the old value do not
    assert [d["_id"] for d in await store.find("tasks", {"state": 3})] == [ids[0]]
    assert await store.count("tasks", {"state": 0}) == 0
    assert await store.count("tasks", {"tags": "e"}) == 1


@pytest_twisted.ensureDeferred
async def test_update_one_is_compare_and_set(store: Store) -> None:
    ids = await load(store)
    guard = {"_id": ids[0], "state": 0}
    assert await store.update_one("tasks", guard, {"$set": {"state": 1}}) == 1
    assert await store.update_one("tasks", guard, {"$set": {"state": 1}}) == 0
    assert await store.update_one("tasks", {"state": 1}, {"$inc": {"trials": 10}}) == 1
    assert sorted(d["trials"] for d in await store.find("tasks", {"state": 1})) == [0, 1, 10]


@pytest_twisted.ensureDeferred
async def test_update_many_and_delete_many(store: Store) -> None:
    await load(store)
    assert await store.update_many("tasks", {"username": "alice"}, {"$set": {"state": 5}}) == 2
    assert await store.update_many("tasks", {"username": "nobody"}, {"$set": {"state": 5}}) == 0
    assert await store.count("tasks", {"state": 5}) == 2
    assert await store.delete_many("tasks", {"state": 5}) == 2
    assert await store.delete_many("tasks", {"ram": {"$gt": 500}}) == 1
    assert names(await store.find("tasks", {})) == [("bob", 4.0)]
    assert await store.count("tasks", {"task_group_id": G1}) == 0


@pytest_twisted.ensureDeferred
async def test_unsupported_update_is_a_query_error(store: Store) -> None:
    ids = await load(store)
    await raises_query_error(store.update_one("tasks", {"_id": ids[0]}, {"$rename": {"state": "s"}}))
    await raises_query_error(store.update_many("tasks", {}, {"state": 1}))
    await raises_query_error(store.update_one("tasks", {"_id": ids[0]}, {"$inc": {"state": "x"}}))
    await raises_query_error(store.update_one("tasks", {"_id": ids[0]}, {"$push": {"meta": 1}}))
    assert (await store.find_one("tasks", {"_id": ids[0]}))["meta"] == {"x": 1}


# --- aggregation: the stages of cc-protocol.md §4 -----------------------------------------


@pytest_twisted.ensureDeferred
async def test_match_sort_project_skip_limit(store: Store) -> None:
    await load(store)
    docs = await agg(
        store,
        [
            {"$match": {"username": "alice"}},
            {"$match": {"state": {"$gte": 0}}},
            {"$sort": {"created_at": -1}},
            {"$project": {"_id": 0, "state": 1, "meta": 1}},
        ],
    )
    assert docs == [{"state": 1, "meta": {"x": 2}}, {"state": 0, "meta": {"x": 1}}]
    docs = await agg(
        store, [{"$sort": {"created_at": 1}}, {"$skip": 1}, {"$limit": 2}, {"$project": {"created_at": 1, "_id": 0}}]
    )
    assert docs == [{"created_at": 2.0}, {"created_at": 3.0}]
    # only $skip/$limit after the $match: the embedded store streams these
    docs = await agg(store, [{"$match": {"state": 1}}, {"$limit": 5}])
    assert sorted(names(docs)) == [("alice", 2.0), ("bob", 3.0)]
    docs = await agg(store, [{"$match": {"state": 1}}, {"$skip": 1}, {"$limit": 5}])
    assert len(docs) == 1 and docs[0]["state"] == 1
    assert await agg(store, [{"$match": {"state": 1}}, {"$skip": 2}]) == []
    assert len(await agg(store, [{"$match": {"task_group_id": G2}}, {"$limit": 1}, {"$skip": 0}])) == 1


@pytest_twisted.ensureDeferred
async def test_count_stage(store: Store) -> None:
    await load(store)
    assert await agg(store, [{"$match": {"ram": 256}}, {"$count": "n"}]) == [{"n": 2}]
    assert await agg(store, [{"$count": "total"}]) == [{"total": 4}]


@pytest_twisted.ensureDeferred
async def test_unwind_stage(store: Store, store_backend: str) -> None:
    await load(store)
    docs = await agg(
        store, [{"$unwind": "$tags"}, {"$project": {"_id": 0, "username": 1, "tags": 1}}, {"$sort": {"tags": 1}}]
    )
    if store_backend == GAP:  # FerretDB 1.24 BUG: $unwind keeps only _id and the unwound field
        assert docs == [{"tags": "a"}, {"tags": "b"}, {"tags": "b"}, {"tags": "c"}]
    else:
        assert docs == [
            {"username": "alice", "tags": "a"},
            {"username": "alice", "tags": "b"},
            {"username": "alice", "tags": "b"},
            {"username": "bob", "tags": "c"},
        ]
    docs = await agg(store, [{"$unwind": "$task_group_id"}, {"$match": {"task_group_id": G1}}, {"$count": "n"}])
    assert docs == [{"n": 2}]
    long_form = [{"$unwind": {"path": "$tags", "preserveNullAndEmptyArrays": True}}, {"$count": "n"}]
    if store_backend == GAP:  # FerretDB 1.24: the document form of $unwind is not implemented
        await raises_query_error(agg(store, long_form))
    else:
        assert await agg(store, long_form) == [{"n": 5}]


@pytest_twisted.ensureDeferred
async def test_group_stage(store: Store, store_backend: str) -> None:
    await load(store)
    docs = await agg(store, [{"$group": {"_id": "$username", "ram": {"$sum": "$ram"}}}, {"$sort": {"_id": 1}}])
    assert docs == [{"_id": "alice", "ram": 768}, {"_id": "bob", "ram": 1280}]
    docs = await agg(
        store, [{"$group": {"_id": "$username", "ram": {"$sum": "$ram"}, "n": {"$sum": 1}}}, {"$sort": {"_id": 1}}]
    )
    if store_backend == GAP:  # FerretDB 1.24 BUG: only the first accumulator is computed, the rest are 0
        assert docs == [{"_id": "alice", "ram": 768, "n": 0}, {"_id": "bob", "ram": 1280, "n": 0}]
    else:
        assert docs == [{"_id": "alice", "ram": 768, "n": 2}, {"_id": "bob", "ram": 1280, "n": 2}]
    docs = await agg(
        store,
        [{"$match": {"state": {"$lt": 2}}}, {"$group": {"_id": "$state", "n": {"$sum": 1}}}, {"$sort": {"_id": -1}}],
    )
    assert docs == [{"_id": 1, "n": 2}, {"_id": 0, "n": 1}]
    richer = [
        {"$group": {"_id": "$username", "rams": {"$push": "$ram"}, "top": {"$max": "$ram"}, "mean": {"$avg": "$ram"}}},
        {"$sort": {"_id": 1}},
    ]
    if store_backend == GAP:  # FerretDB 1.24: only $sum and $count accumulators
        await raises_query_error(agg(store, richer))
    else:
        assert await agg(store, richer) == [
            {"_id": "alice", "rams": [256, 512], "top": 512, "mean": 384},
            {"_id": "bob", "rams": [1024, 256], "top": 1024, "mean": 640},
        ]


@pytest_twisted.ensureDeferred
async def test_add_fields_stage(store: Store, store_backend: str) -> None:
    await load(store)
    docs = await agg(
        store,
        [
            {"$match": {"username": "bob"}},
            {"$addFields": {"flag": True, "n": 7}},
            {"$sort": {"created_at": 1}},
            {"$project": {"_id": 0, "flag": 1, "n": 1, "state": 1}},
        ],
    )
    assert docs == [{"state": 1, "flag": True, "n": 7}, {"state": 2, "flag": True, "n": 7}]
    from_path = [{"$match": {"state": 2}}, {"$addFields": {"x": "$meta.x"}}, {"$project": {"_id": 0, "x": 1}}]
    if store_backend == GAP:  # FerretDB 1.24 BUG: the field path is stored as a literal string
        assert await agg(store, from_path) == [{"x": "$meta.x"}]
    else:
        assert await agg(store, from_path) == [{"x": 4}]


@pytest_twisted.ensureDeferred
async def test_replace_root_stage(store: Store, store_backend: str) -> None:
    await load(store)
    pipeline = [{"$match": {"username": "alice"}}, {"$replaceRoot": {"newRoot": "$meta"}}, {"$sort": {"x": 1}}]
    if store_backend == GAP:  # FerretDB 1.24: $replaceRoot is not implemented
        await raises_query_error(agg(store, pipeline))
    else:
        assert await agg(store, pipeline) == [{"x": 1}, {"x": 2}]


@pytest_twisted.ensureDeferred
async def test_sample_stage(store: Store, store_backend: str) -> None:
    ids = await load(store)
    pipeline = [{"$sample": {"size": 2}}]
    if store_backend == GAP:  # FerretDB 1.24: $sample is not implemented
        await raises_query_error(agg(store, pipeline))
    else:
        docs = await agg(store, pipeline)
        assert len(docs) == 2 and len({d["_id"] for d in docs}) == 2 and {d["_id"] for d in docs} <= set(ids)


@pytest_twisted.ensureDeferred
async def test_project_expressions(store: Store, store_backend: str) -> None:
    await load(store)
    pipeline = [{"$match": {"state": 2}}, {"$project": {"_id": 0, "double": {"$multiply": ["$ram", 2]}}}]
    if store_backend == GAP:  # FerretDB 1.24: no expression operators in $project
        await raises_query_error(agg(store, pipeline))
    else:
        assert await agg(store, pipeline) == [{"double": 512}]


@pytest_twisted.ensureDeferred
async def test_max_documents_truncates(store: Store) -> None:
    await load(store)
    assert len(await agg(store, [], max_documents=3)) == 3
    assert len(await agg(store, [{"$match": {"ram": {"$gt": 0}}}], max_documents=2)) == 2
    docs = await agg(store, [{"$sort": {"created_at": -1}}, {"$limit": 3}], max_documents=2)
    assert names(docs) == [("bob", 4.0), ("bob", 3.0)]
    assert len(await agg(store, [{"$unwind": "$tags"}], max_documents=1)) == 1


@pytest.mark.parametrize(
    "pipeline",
    [
        [{"$nosuchstage": {}}],
        [{"$match": {"state": {"$nosuchop": 1}}}],
        [{"$limit": -1}],
        [{"$match": {"state": 1}}, {"$skip": "x"}],
        [{"$group": {"n": {"$sum": 1}}}],  # no _id
        [{"$match": {}, "$limit": 1}],  # two keys in a stage
    ],
    ids=["stage", "operator", "limit", "skip", "group", "two-keys"],
)
@pytest_twisted.ensureDeferred
async def test_bad_pipeline_is_a_query_error(store: Store, pipeline: list[dict[str, Any]]) -> None:
    await load(store)
    error = await raises_query_error(agg(store, pipeline))
    assert str(error)


@pytest_twisted.ensureDeferred
async def test_bad_filter_is_a_query_error(store: Store) -> None:
    await load(store)  # FerretDB does not look at the filter of a collection that does not exist
    await raises_query_error(store.find("tasks", {"state": {"$nosuchop": 1}}))
    await raises_query_error(store.count("tasks", {"$nosuchop": []}))


@pytest_twisted.ensureDeferred
async def test_ping(store: Store) -> None:
    assert await store.ping() is None


# --- what only one backend can show -------------------------------------------------------


def embedded(path: Any, **kwargs: Any) -> Any:
    from twisted.internet import reactor

    from ccserver.config import EmbeddedConfig
    from ccserver.storage.embedded import EmbeddedStore

    return EmbeddedStore(EmbeddedConfig(path=str(path), synchronous="full"), reactor, **kwargs)


async def bounded(d: Any, seconds: float = 30.0) -> Any:
    from twisted.internet import reactor

    return await d.addTimeout(seconds, reactor)


@pytest_twisted.ensureDeferred
async def test_embedded_data_persists_across_stop_and_start(tmp_path: Any) -> None:
    path = tmp_path / "new" / "dir" / "ccserver.sqlite3"
    first = embedded(path)
    await bounded(first.startService())
    ids = await first.insert_many("tasks", tasks())
    await first.update_one("tasks", {"_id": ids[0]}, {"$set": {"state": 9}})
    await bounded(first.stopService())
    with pytest.raises(StorageUnavailable):
        await first.count("tasks", {})
    second = embedded(path)
    await bounded(second.startService())
    try:
        assert await second.count("tasks", {}) == 4
        assert (await second.find_one("tasks", {"state": 9}))["_id"] == ids[0]
        assert await second.count("tasks", {"task_group_id": G2}) == 2
    finally:
        await bounded(second.stopService())


@pytest_twisted.ensureDeferred
async def test_embedded_write_is_committed_when_the_deferred_fires(tmp_path: Any) -> None:
    path = tmp_path / "ccserver.sqlite3"
    store = embedded(path)
    await bounded(store.startService())
    reader = sqlite3.connect(str(path))
    try:
        assert reader.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        oid = await store.insert_one("tasks", {"state": 0})
        rows = reader.execute("SELECT data FROM documents WHERE collection = 'tasks'").fetchall()
        assert [bson.decode(r[0])["_id"] for r in rows] == [oid]
        await store.update_one("tasks", {"_id": oid}, {"$set": {"state": 1}})
        data = reader.execute("SELECT data FROM documents WHERE collection = 'tasks'").fetchone()[0]
        assert bson.decode(data)["state"] == 1
        await store.delete_many("tasks", {})
        assert reader.execute("SELECT count(*) FROM documents").fetchone()[0] == 0
        assert reader.execute("SELECT count(*) FROM idx").fetchone()[0] == 0
    finally:
        reader.close()
        await bounded(store.stopService())


@pytest_twisted.ensureDeferred
async def test_embedded_locked_database_is_unavailable(tmp_path: Any) -> None:
    path = tmp_path / "ccserver.sqlite3"
    store = embedded(path, busy_timeout=0.2)
    await bounded(store.startService())
    other = sqlite3.connect(str(path), isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StorageUnavailable, match="locked"):
            await store.insert_one("tasks", {"state": 0})
        other.execute("ROLLBACK")
        await store.insert_one("tasks", {"state": 0})
    finally:
        other.close()
        await bounded(store.stopService())


@pytest_twisted.ensureDeferred
async def test_embedded_pushdown_streams_and_times_out(tmp_path: Any) -> None:
    store = embedded(tmp_path / "ccserver.sqlite3")
    await bounded(store.startService())
    try:
        docs = [
            {
                "username": f"u{i % 10}",
                "state": i % 5,
                "created_at": float(i),
                "task_group_id": [ObjectId()],
                "transitions": [{"state": 0, "description": "created", "timestamp": float(i)}],
            }
            for i in range(20000)
        ]
        for start in range(0, len(docs), 5000):
            await store.insert_many("tasks", docs[start : start + 5000])
        began = time.perf_counter()
        found = await store.aggregate(
            "tasks", [{"$match": {"state": 1}}, {"$limit": 100}], max_documents=1000, timeout=10
        )
        elapsed = time.perf_counter() - began
        assert len(found) == 100 and all(d["state"] == 1 for d in found)
        # streamed, it reads a few hundred of the 20,000 documents; evaluated whole it takes
        # seconds: a bound far from both, so that a loaded machine does not fail it
        assert elapsed < 0.5, f"streamed $match/$limit took {elapsed:.3f} s"
        with pytest.raises(QueryTimeout):
            slow = [{"$match": {"trials": {"$exists": False}}}, {"$sort": {"state": 1}}]
            await store.aggregate("tasks", slow, max_documents=10, timeout=0.001)
    finally:
        await bounded(store.stopService())


@pytest_twisted.ensureDeferred
async def test_mongodb_outage_is_unavailable_then_recovers(tmp_path: Any) -> None:
    from twisted.internet import reactor

    from ccserver.config import MongoConfig
    from ccserver.storage.mongo import MongoStore
    from ccserver.testing.ferretdb import FerretDB

    server = FerretDB(data_dir=str(tmp_path / "ferretdb"))
    server.start()
    store = MongoStore(MongoConfig(uri=server.uri, db="outage", timeout_seconds=1.0), reactor)
    store.startService()
    try:
        await bounded(store.when_indexed())
        oid = await store.insert_one("tasks", {"state": 0})
        server.stop()
        with pytest.raises(StorageUnavailable):
            await bounded(store.find_one("tasks", {"_id": oid}))
        with pytest.raises(StorageUnavailable):
            await bounded(store.ping())
        server.start()
        for _ in range(100):  # txmongo reconnects on its own, within its retry delay
            try:
                found = await bounded(store.find_one("tasks", {"_id": oid}))
                break
            except StorageUnavailable:
                await deferLater(reactor, 0.1)
        assert found == {"_id": oid, "state": 0}
    finally:
        await bounded(store.stopService())
        server.cleanup()
