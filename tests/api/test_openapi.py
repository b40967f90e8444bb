"""The OpenAPI document covers every route, is served, and the copy in docs/ is current."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest_twisted
from jsonschema import Draft202012Validator

from ccserver.web import openapi
from ccserver.web.api import API
from ccserver.web.schemas import REQUESTS
from tests.api.conftest import Server

DOCS_COPY = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def _routes() -> set[tuple[str, str]]:
    # Klein's "<name>" is OpenAPI's "{name}"; a branch route's "<path:__rest__>" rule is its own
    return {
        (re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule), method.lower())
        for rule in API.app.url_map.iter_rules()
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS") and "__rest__" not in rule.rule
    }


def _documented() -> set[tuple[str, str]]:
    return {(path, method) for path, item in openapi.document()["paths"].items() for method in item}


def test_every_route_is_documented() -> None:
    missing = _routes() - _documented()
    assert not missing, f"routes of the Klein app missing from the OpenAPI document: {sorted(missing)}"


def test_every_documented_operation_is_routed() -> None:
    assert not _documented() - _routes()


def test_request_schemas_are_the_validators_schemas() -> None:
    components = openapi.document()["components"]["schemas"]
    for name in REQUESTS:
        assert name in components
        Draft202012Validator.check_schema(REQUESTS[name])
    # every $ref resolves
    text = json.dumps(openapi.document())
    for ref in {part.split('"')[0] for part in text.split('"$ref": "#/components/schemas/')[1:]}:
        assert ref in components, ref


def test_docs_copy_is_current() -> None:
    expected = json.dumps(openapi.document(), indent=2, sort_keys=True) + "\n"
    assert DOCS_COPY.read_text() == expected, "run: python -m ccserver.web.openapi > docs/openapi.json"


@pytest_twisted.ensureDeferred
async def test_served_without_credentials(api_server: Server) -> None:
    answer = await api_server.get("/openapi.json", user=None)
    assert answer.status == 200
    assert answer.header("content-type") == "application/json"
    assert answer.json == openapi.document()


def test_the_api_page_lists_every_endpoint() -> None:
    page = (DOCS_COPY.parent / "api.rst").read_text()
    for path, method in _documented():
        assert f"{method.upper()} {path}``" in page, (method, path)
