"""``Store.newest``, the keyset paging under the dashboard's table, on both backends: order
(created_at, then _id, descending), ``before``, ``since``, indexed and other filters."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from bson import ObjectId

from ccserver.storage.base import QueryError


def _doc(t: Any, user: str = "alice", image: str = "a") -> dict[str, Any]:
    return {"_id": ObjectId(), "created_at": t, "username": user, "state": 1, "image": image}


@pytest_twisted.ensureDeferred
async def test_order_cursor_and_lower_bound(store: Any) -> None:
    docs = [_doc(10.0), _doc(10.0), _doc(10.0), _doc(11), _doc(9.5, "bob"), _doc("text"), _doc(None)]
    await store.insert_many("tasks", docs)
    expected = sorted((d for d in docs if isinstance(d["created_at"], (int, float))),
                      key=lambda d: (d["created_at"], d["_id"].binary), reverse=True)  # fmt: skip
    page = await store.newest("tasks", {}, field="created_at", before=None, limit=10, scan_limit=100)
    assert [d["_id"] for d in page.docs] == [d["_id"] for d in expected]
    assert page.scanned_to is None
    # after the second of the three at 10.0: the third, then 9.5
    after = (expected[2]["created_at"], expected[2]["_id"])
    page = await store.newest("tasks", {}, field="created_at", before=after, limit=10, scan_limit=100)
    assert [d["_id"] for d in page.docs] == [expected[3]["_id"], expected[4]["_id"]]
    page = await store.newest("tasks", {}, field="created_at", before=None, limit=10, scan_limit=100, since=10)
    assert [d["created_at"] for d in page.docs] == [11, 10.0, 10.0, 10.0]
    page = await store.newest("tasks", {"username": "bob"}, field="created_at", before=None, limit=10, scan_limit=100)
    assert [d["created_at"] for d in page.docs] == [9.5]
    page = await store.newest("tasks", {"image": "a", "username": "alice"}, field="created_at", before=None,
                              limit=2, scan_limit=100)  # fmt: skip
    assert [d["_id"] for d in page.docs] == [expected[0]["_id"], expected[1]["_id"]]


@pytest_twisted.ensureDeferred
async def test_the_embedded_scan_bound_and_an_unindexed_field(store: Any, store_backend: str) -> None:
    await store.insert_many("tasks", [_doc(float(i), image="b" if i == 0 else "a") for i in range(20)])
    page = await store.newest("tasks", {"image": "b"}, field="created_at", before=None, limit=5, scan_limit=8)
    if store_backend == "embedded":
        # eight candidates looked at, none matched: where the scan stopped
        assert page.docs == [] and page.scanned_to is not None and page.scanned_to[0] == 12.0
        with pytest.raises(QueryError):
            await store.newest("tasks", {}, field="image", before=None, limit=5, scan_limit=8)
    else:
        # MongoDB walks its index server-side to the match
        assert [d["created_at"] for d in page.docs] == [0.0] and page.scanned_to is None
