"""The OpenAPI 3.0 document of the TES routes, served at
``GET <prefix>/ga4gh/tes/v1/openapi.json`` and rendered in ``docs/tes.rst``.

The request body schema is the one that validates submissions (:mod:`ccserver.tes.schema`),
translated to the OpenAPI dialect by :func:`ccserver.web.openapi.to_openapi`; the answers
are written from the TES 1.1 models, as ccserver fills them.
"""

from __future__ import annotations

import copy
from typing import Any

from ccserver import __version__
from ccserver.tes import schema, states, views
from ccserver.tes.submission import Storage
from ccserver.web.openapi import to_openapi

Schema = dict[str, Any]
BASE = "/ga4gh/tes/v1"


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _plain(value: Any) -> Any:
    """``to_openapi`` of our request schemas, with ``null`` dropped from enums (``nullable``)."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: _plain(v) for k, v in value.items() if k != "$schema"}
    if "enum" in out and None in out["enum"]:
        out["enum"] = [v for v in out["enum"] if v is not None]
        out["nullable"] = True
    return out


_STR = {"type": "string"}
_TIME = {"type": "string", "description": "RFC 3339"}
EXECUTOR_LOG: Schema = {
    "type": "object",
    "properties": {
        "start_time": _TIME,
        "end_time": _TIME,
        "stdout": {"type": "string", "description": "the tail of the executor's stdout (FULL view only)"},
        "stderr": {"type": "string", "description": "the tail of the executor's stderr (FULL view only)"},
        "exit_code": {"type": "integer", "format": "int32"},
    },
    "required": ["exit_code"],
}
OUTPUT_FILE_LOG: Schema = {
    "type": "object",
    "properties": {"url": _STR, "path": _STR, "size_bytes": {"type": "string", "description": "bytes, as a string"}},
    "required": ["url", "path", "size_bytes"],
}
TASK_LOG: Schema = {
    "type": "object",
    "description": "one per attempt",
    "properties": {
        "logs": {"type": "array", "items": _ref("tesExecutorLog")},
        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
        "start_time": _TIME,
        "end_time": _TIME,
        "outputs": {"type": "array", "items": _ref("tesOutputFileLog")},
        "system_logs": {"type": "array", "items": _STR, "description": "FULL view only"},
    },
    "required": ["logs", "outputs"],
}


def _task_answer() -> Schema:
    task = _plain(to_openapi(copy.deepcopy(schema.TASK)))
    task["required"] = ["id", "state"]
    task["properties"].update(
        {
            "id": {"type": "string", "pattern": "^[0-9a-f]{24}$"},
            "state": _ref("tesState"),
            "logs": {"type": "array", "items": _ref("tesTaskLog")},
            "creation_time": _TIME,
        }
    )
    return task


def _params() -> list[Schema]:
    view = {
        "name": "view",
        "in": "query",
        "schema": {"type": "string", "enum": list(views.VIEWS), "default": views.MINIMAL},
        "description": "MINIMAL: id and state. BASIC: all but executor logs' stdout/stderr, inputs' "
        "content and system_logs. FULL: everything. Anything else is a 400.",
    }
    return [view]


def _op(summary: str, ok: Schema, *, body: Schema | None = None, params: list[Schema] | None = None) -> Schema:
    op: Schema = {
        "summary": summary,
        "tags": ["TaskService"],
        "security": [{"basicAuth": []}, {"bearerAuth": []}, {}],
        "responses": {
            "200": {"description": "", "content": {"application/json": {"schema": ok}}},
            "400": {"description": "a bad parameter or body; the message names the field", "content": _error()},
            "401": {"description": "missing or wrong credentials", "content": _error()},
            "404": {"description": "no such task (or another user's)", "content": _error()},
        },
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if params:
        op["parameters"] = params
    return op


def _error() -> Schema:
    return {"application/json": {"schema": _ref("Error")}}


def document(prefix: str = "", storage: list[str] | None = None) -> dict[str, Any]:
    """The OpenAPI document of ``<prefix>/ga4gh/tes/v1``."""
    task_id = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
    list_params = _params() + [
        {"name": "name_prefix", "in": "query", "schema": _STR},
        {"name": "state", "in": "query", "schema": _ref("tesState")},
        {"name": "tag_key", "in": "query", "schema": {"type": "array", "items": _STR}, "explode": True},
        {
            "name": "tag_value",
            "in": "query",
            "schema": {"type": "array", "items": _STR},
            "explode": True,
            "description": "zipped with tag_key; an empty or missing value matches any value of the key",
        },
        {"name": "page_size", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 2047}},
        {"name": "page_token", "in": "query", "schema": _STR},
    ]
    schemes = storage if storage is not None else Storage().schemes()
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "ccserver GA4GH Task Execution Service",
            "version": __version__,
            "description": "TES 1.1 as ccserver serves it (docs/tes.rst). The legacy TES 1.0 dialect for "
            "py-tes 0.4 is at <prefix>/v1 with the same paths.",
        },
        "servers": [{"url": (prefix or "") + BASE}],
        "paths": {
            "/service-info": {
                "get": {
                    "summary": "GetServiceInfo",
                    "tags": ["TaskService"],
                    "security": [],
                    "responses": {
                        "200": {"description": "", "content": {"application/json": {"schema": _ref("tesServiceInfo")}}}
                    },
                }
            },
            "/tasks": {
                "get": _op(
                    "ListTasks",
                    {
                        "type": "object",
                        "properties": {
                            "tasks": {"type": "array", "items": _ref("tesTask")},
                            "next_page_token": _STR,
                        },
                        "required": ["tasks"],
                    },
                    params=list_params,
                ),
                "post": _op(
                    "CreateTask",
                    {"type": "object", "properties": {"id": _STR}, "required": ["id"]},
                    body=_ref("tesTaskSubmission"),
                ),
            },
            "/tasks/{id}": {"get": _op("GetTask", _ref("tesTask"), params=[task_id] + _params())},
            "/tasks/{id}:cancel": {
                "post": _op("CancelTask", {"type": "object", "additionalProperties": False}, params=[task_id])
            },
        },
        "components": {
            "schemas": {
                "tesTaskSubmission": _plain(to_openapi(copy.deepcopy(schema.TASK))),
                "tesTask": _task_answer(),
                "tesState": {"type": "string", "enum": list(states.FILTERABLE)},
                "tesTaskLog": TASK_LOG,
                "tesExecutorLog": EXECUTOR_LOG,
                "tesOutputFileLog": OUTPUT_FILE_LOG,
                "tesServiceInfo": {
                    "type": "object",
                    "properties": {
                        "id": _STR,
                        "name": _STR,
                        "type": {
                            "type": "object",
                            "properties": {"group": _STR, "artifact": _STR, "version": _STR},
                        },
                        "organization": {"type": "object", "properties": {"name": _STR, "url": _STR}},
                        "version": _STR,
                        "storage": {"type": "array", "items": _STR, "example": schemes},
                        "tesResources_backend_parameters": {"type": "array", "items": _STR},
                    },
                    "required": ["id", "name", "type", "organization", "version"],
                },
                "Error": {
                    "type": "object",
                    "properties": {"error": _STR, "message": _STR},
                    "required": ["error", "message"],
                },
            },
            "securitySchemes": {
                "basicAuth": {"type": "http", "scheme": "basic", "description": "password or GET /token token"},
                "bearerAuth": {"type": "http", "scheme": "bearer", "description": "a token from GET /token"},
            },
        },
    }


def main() -> None:
    """Print the document as stored in ``docs/tes-openapi.json`` (``python -m ccserver.web.tes_openapi``)."""
    import json

    print(json.dumps(document(), indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
