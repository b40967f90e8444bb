"""The TES OpenAPI document: built from the validating schema, copied into the docs."""

from __future__ import annotations

import json
from pathlib import Path

from jsonschema import Draft202012Validator

from ccserver.tes import schema
from ccserver.web import tes_openapi

DOCS_COPY = Path(__file__).resolve().parents[3] / "docs" / "tes-openapi.json"


def test_the_docs_hold_the_current_document() -> None:
    expected = json.dumps(tes_openapi.document(), indent=2, sort_keys=True) + "\n"
    assert DOCS_COPY.read_text() == expected, "run: python -m ccserver.web.tes_openapi > docs/tes-openapi.json"


def test_the_submission_schema_is_the_validators_schema() -> None:
    Draft202012Validator.check_schema(schema.TASK)
    submission = tes_openapi.document()["components"]["schemas"]["tesTaskSubmission"]
    assert set(submission["properties"]) == set(schema.TASK["properties"])
    assert submission["required"] == ["executors"]
    assert submission["properties"]["executors"]["items"]["required"] == ["image", "command"]


def test_every_reference_resolves() -> None:
    document = tes_openapi.document()
    text = json.dumps(document)
    names = set(document["components"]["schemas"])
    refs = {part.split('"')[0] for part in text.split('"#/components/schemas/')[1:]}
    assert refs and refs <= names
