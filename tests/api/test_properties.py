"""Property: no request generated from the OpenAPI document gets a 5xx answer.

Bodies come from the document's own schemas (valid ones and mutated ones, see
``strategies.py``), are sent over the real socket to a server on each storage backend, and
every answer must be a JSON object with a status below 500.  A 200 answer must match the
operation's documented response schema.

Hypothesis drives a synchronous function; it runs in a thread of its own and sends each
request through the reactor with ``blockingCallFromThread``, so the reactor keeps serving.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytest_twisted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.threads import blockingCallFromThread, deferToThread

from ccserver.web import openapi
from tests.api.conftest import ADMIN, ALICE, Server
from tests.api.strategies import body_for
from tests.api.test_openapi import _routes

DOCUMENT = openapi.document()
COMPONENTS = DOCUMENT["components"]["schemas"]
# the JSON operations (the dashboard's page, HTML, is tested in tests/dashboard/test_files.py)
OPERATIONS = sorted(
    (path, method)
    for path, item in DOCUMENT["paths"].items()
    for method in item
    if (path, method) in _routes() and "application/json" in item[method]["responses"]["200"].get("content", {})
)
EXAMPLES = 60
#: operations whose generated requests must succeed at least once, or the generator is broken
#: (random ids, node names and callback keys do not exist, so those may never succeed)
MAY_NEVER_SUCCEED = {
    ("/tasks/cancel", "post"),
    ("/dashboard/tasks/{kind}/{task_id}", "get"),
    ("/nodes", "post"),
    ("/application-containers/callback", "post"),
    ("/data-containers/callback", "post"),
    ("/tasks/{task_id}/logs", "get"),  # the path is sent as written: no such task
    # random tokens name no staging area (and the API of these tests has none)
    ("/tes-staging/{token}/inputs", "get"),
    ("/tes-staging/{token}/outputs/{index}", "post"),
}
MUST_SUCCEED = {(p, m) for p, m in OPERATIONS if (p, m) not in MAY_NEVER_SUCCEED}


def _response_validator(path: str, method: str) -> Draft202012Validator:
    """The 200 schema in draft 2020-12 terms: OpenAPI's ``nullable`` allows null, refs
    point into the components."""
    schema = DOCUMENT["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"]

    def convert(node: Any) -> Any:
        if isinstance(node, list):
            return [convert(n) for n in node]
        if not isinstance(node, dict):
            return node
        out = {k: convert(v) for k, v in node.items() if k not in ("nullable", "example", "exclusiveMinimum")}
        if node.get("nullable"):
            return {"anyOf": [out, {"type": "null"}]}
        if "$ref" in out:
            out["$ref"] = out["$ref"].replace("#/components/schemas/", "#/$defs/")
        return out

    return Draft202012Validator({**convert(schema), "$defs": convert(COMPONENTS)})


@pytest.mark.parametrize(("path", "method"), OPERATIONS, ids=[f"{m.upper()} {p}" for p, m in OPERATIONS])
@pytest_twisted.ensureDeferred
async def test_no_request_gets_a_5xx(api_server: Server, path: str, method: str) -> None:
    operation = DOCUMENT["paths"][path][method]
    body_schema = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    bodies = body_for(body_schema, COMPONENTS, query=path.endswith("/query")) if body_schema else st.none()
    validator = _response_validator(path, method)
    statuses: list[int] = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
            HealthCheck.data_too_large,
        ],
    )
    @given(body=bodies, user=st.sampled_from([ALICE, ADMIN]))
    def check(body: Any, user: tuple[str, str]) -> None:
        answer = blockingCallFromThread(
            reactor, lambda: ensureDeferred(api_server.request(method.upper(), path, body, user=user))
        )
        statuses.append(answer.status)
        assert answer.status < 500, (body, answer.status, answer.raw[:500])
        data = json.loads(answer.raw)
        assert isinstance(data, dict), answer.raw[:200]
        if answer.status == 200:
            errors = sorted(validator.iter_errors(data), key=str)
            assert not errors, (body, data, errors[0].message)
        else:
            assert isinstance(data.get("error"), str), data

    await deferToThread(check)
    if (path, method) in MUST_SUCCEED:
        assert 200 in statuses, sorted(set(statuses))
