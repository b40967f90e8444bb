"""Nothing a client sends makes the TES code fail other than with a 400 (``Invalid``):
generated task bodies (valid ones from the schema, and variants of them) and list
arguments, through the same pure functions the routes call."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ccserver.errors import Invalid
from ccserver.tes import listing, views
from ccserver.tes.submission import Storage, prepare
from ccserver.web import tes_openapi
from tests.api.strategies import body_for

COMPONENTS = tes_openapi.document()["components"]["schemas"]
STORAGE = Storage(file_roots=("/srv/data",), s3=True)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body_for(COMPONENTS["tesTaskSubmission"], COMPONENTS))
def test_any_task_body_is_a_document_or_a_400(body: Any) -> None:
    if not isinstance(body, dict):
        body = {"executors": body}
    try:
        prepared = prepare("alice", body, 1.0, STORAGE)
    except Invalid as e:
        assert e.message and ":" in e.message
        return
    doc = prepared.document
    for view in views.VIEWS:
        json.dumps(views.render(doc, view))
        json.dumps(views.legacy(doc, view))
    assert doc["state"] == "QUEUED" and doc["executors"]


argument_values = st.lists(
    st.one_of(st.text(max_size=12), st.sampled_from(["", "0", "2047", "2048", "FULL", "QUEUED"])), max_size=3
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["page_size", "page_token", "state", "name_prefix", "tag_key", "tag_value", "x"]),
        argument_values,
    )
)
def test_any_list_arguments_are_a_query_or_a_400(args: dict[str, list[str]]) -> None:
    try:
        query = listing.parse(args)
    except Invalid as e:
        assert e.message
        return
    assert 1 <= query.page_size <= listing.MAX_PAGE_SIZE
    listing.mongo_filter(query, "alice")
    listing.mongo_filter(query, None, legacy=True)
