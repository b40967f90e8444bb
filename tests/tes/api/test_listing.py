"""``GET /tasks`` with 1,000 tasks on every backend: keyset paging stable while tasks are
added, filters with TES semantics, bounds of ``page_size``, bad tokens."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest
import pytest_twisted

from ccserver.tes import listing, states
from ccserver.tes.submission import Storage, prepare
from tests.api.conftest import Server
from tests.tes.api.conftest import TES, sample_tes_task

COUNT = 1000
STATES = (states.QUEUED, states.RUNNING, states.COMPLETE, states.EXECUTOR_ERROR, states.CANCELED)


def _tags(i: int) -> dict[str, str]:
    tags = {"batch": f"b{i % 4}"}
    if i % 3 == 0:
        tags["flag"] = ""
    if i % 5 == 0:
        tags["flag"] = "on"
    return tags


async def _populate(server: Server) -> list[dict[str, Any]]:
    """1,000 tasks of alice (pairs share a created_at, so the _id breaks ties), stored as the
    API stores them; oldest first."""
    docs = []
    for i in range(COUNT):
        body = sample_tes_task(name=f"{'align' if i % 2 else 'map'}-{i:04d}", tags=_tags(i))
        doc = prepare("alice", body, 1_700_000_000.0 + i // 2, Storage()).document
        doc["state"] = STATES[i % len(STATES)]
        docs.append(doc)
    await server.store.insert_many("tes_tasks", docs)
    return docs


async def _pages(server: Server, params: dict[str, Any], between: Any = None) -> tuple[list[str], int]:
    ids: list[str] = []
    token = None
    pages = 0
    while True:
        query = dict(params, **({"page_token": token} if token else {}))
        answer = await server.get(TES + "/tasks?" + urlencode(query, doseq=True))
        assert answer.status == 200, answer.raw
        pages += 1
        ids += [t["id"] for t in answer.json["tasks"]]
        token = answer.json.get("next_page_token")
        if not token:
            return ids, pages
        assert pages < 100
        if between is not None:
            await between()


def _newest_first(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(docs, key=lambda d: (d["created_at"], d["_id"]), reverse=True)


@pytest_twisted.ensureDeferred
async def test_paging_through_1000_tasks_is_stable_while_tasks_are_added(tes_server: Server) -> None:
    docs = await _populate(tes_server)
    added: list[str] = []

    async def submit() -> None:
        answer = await tes_server.post(TES + "/tasks", sample_tes_task(name="late"))
        added.append(answer.json["id"])

    ids, pages = await _pages(tes_server, {"page_size": 97, "view": "MINIMAL"}, between=submit)
    assert pages == 11 and len(added) == 10
    assert ids == [str(d["_id"]) for d in _newest_first(docs)], "every task once, newest first"
    # the new ones come first in a fresh listing
    first = (await tes_server.get(TES + "/tasks?page_size=10")).json
    assert [t["id"] for t in first["tasks"]] == added[::-1]


@pytest_twisted.ensureDeferred
async def test_the_default_page_size_is_256_and_the_last_page_has_no_token(tes_server: Server) -> None:
    await _populate(tes_server)
    answer = (await tes_server.get(TES + "/tasks")).json
    assert len(answer["tasks"]) == 256 and set(answer["tasks"][0]) == {"id", "state"}
    # 0 is "unset" to protobuf-based clients
    assert (await tes_server.get(TES + "/tasks?page_size=0")).json == answer
    everything = (await tes_server.get(TES + "/tasks?page_size=2047&view=FULL")).json
    assert len(everything["tasks"]) == COUNT and "next_page_token" not in everything
    assert everything["tasks"][0]["inputs"][0]["content"]


@pytest.mark.parametrize(
    "params, keep",
    [
        ({"name_prefix": "align-"}, lambda i, d: i % 2 == 1),
        ({"name_prefix": "map-00"}, lambda i, d: i % 2 == 0 and i < 100),
        ({"name_prefix": "al.gn"}, lambda i, d: False),  # a prefix, not a pattern
        ({"state": "RUNNING"}, lambda i, d: d["state"] == "RUNNING"),
        ({"state": "UNKNOWN"}, lambda i, d: False),
        ({"tag_key": "batch", "tag_value": "b1"}, lambda i, d: i % 4 == 1),
        ({"tag_key": "flag"}, lambda i, d: i % 3 == 0 or i % 5 == 0),  # no value: any value
        ({"tag_key": "flag", "tag_value": ""}, lambda i, d: i % 3 == 0 or i % 5 == 0),
        ({"tag_key": "flag", "tag_value": "on"}, lambda i, d: i % 5 == 0),
        ({"tag_key": ["batch", "flag"], "tag_value": ["b2", "on"]}, lambda i, d: i % 4 == 2 and i % 5 == 0),
        ({"tag_key": "flag", "tag_value": "off"}, lambda i, d: False),
        ({"tag_key": "nope"}, lambda i, d: False),
        (
            {"name_prefix": "map", "state": "COMPLETE", "tag_key": "batch", "tag_value": "b0"},
            lambda i, d: i % 2 == 0 and d["state"] == "COMPLETE" and i % 4 == 0,
        ),
    ],
)
@pytest_twisted.ensureDeferred
async def test_filters_have_tes_semantics_and_page_too(tes_server: Server, params: dict[str, Any], keep: Any) -> None:
    docs = await _populate(tes_server)
    ids, _ = await _pages(tes_server, {**params, "page_size": 150})
    expected = [str(d["_id"]) for d in _newest_first([d for i, d in enumerate(docs) if keep(i, d)])]
    assert ids == expected


@pytest.mark.parametrize(
    "query, message",
    [
        ("page_size=-1", "page_size: must be between 1 and 2047"),
        ("page_size=2048", "page_size: must be between 1 and 2047"),
        ("page_size=ten", "page_size: expected an integer"),
        ("state=DONE", "state: expected one of"),
        ("page_token=garbage", "page_token: not a page token"),
        ("page_token=" + listing.encode_token(1.0, "0123456789abcdef01234567")[:-3], "page_token: not a page token"),
        ("tag_value=x", "tag_value: more values than tag_key"),
        ("view=ALL", "view: expected one of"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_bad_listing_parameters_are_400(tes_server: Server, query: str, message: str) -> None:
    answer = await tes_server.get(TES + "/tasks?" + query)
    assert answer.status == 400, answer.raw
    assert answer.json["message"].startswith(message)


def test_page_tokens_round_trip() -> None:
    from bson import ObjectId

    oid = ObjectId()
    assert listing.decode_token(listing.encode_token(1234.5, oid)) == (1234.5, oid)
