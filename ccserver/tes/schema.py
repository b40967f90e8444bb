"""The JSON Schema of a task as ``POST /tasks`` takes it, written from the models of the TES
1.1 OpenAPI (``tesTask``, ``tesExecutor``, ``tesInput``, ``tesOutput``, ``tesResources``).

Optional fields may be ``null`` (clients serialise unset attributes that way); the read-only
fields (``id``, ``state``, ``logs``, ``creation_time``) and keys the spec does not know are
accepted and ignored, as the spec's "the server uses [the document] as a basis".  What a
schema cannot say (``url`` or ``content``, accepted URL schemes, ``path_prefix`` with
wildcards) is checked in :mod:`ccserver.tes.submission`.  Every refusal names the field:
``executors[1].image: required``.
"""

from __future__ import annotations

from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError, best_match

from ccserver.document_checks import json_type
from ccserver.errors import Invalid
from ccserver.keypaths import path_text

Schema = dict[str, Any]


def _nullable(kind: str, **more: Any) -> Schema:
    return {"type": [kind, "null"], **more}


_TEXT = _nullable("string")
_ABSOLUTE = {"type": "string", "pattern": "^/", "minLength": 2}
_ABSOLUTE_OR_NULL = {"type": ["string", "null"], "pattern": "^/"}
_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
_FILE_TYPE = {"enum": ["FILE", "DIRECTORY", None]}

EXECUTOR: Schema = {
    "type": "object",
    "required": ["image", "command"],
    "properties": {
        "image": {"type": "string", "minLength": 1},
        "command": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "workdir": _ABSOLUTE_OR_NULL,
        "stdin": _ABSOLUTE_OR_NULL,
        "stdout": _ABSOLUTE_OR_NULL,
        "stderr": _ABSOLUTE_OR_NULL,
        "env": {**_STRINGS, "type": ["object", "null"]},
        "ignore_error": _nullable("boolean"),
    },
}

INPUT: Schema = {
    "type": "object",
    "required": ["path"],
    "properties": {
        "name": _TEXT,
        "description": _TEXT,
        "url": _TEXT,
        "path": _ABSOLUTE,
        "type": _FILE_TYPE,
        "content": _TEXT,
        "streamable": _nullable("boolean"),
    },
}

OUTPUT: Schema = {
    "type": "object",
    "required": ["path", "url"],
    "properties": {
        "name": _TEXT,
        "description": _TEXT,
        "url": {"type": "string", "minLength": 1},
        "path": _ABSOLUTE,
        "path_prefix": _ABSOLUTE_OR_NULL,
        "type": _FILE_TYPE,
    },
}

RESOURCES: Schema = {
    "type": ["object", "null"],
    "properties": {
        "cpu_cores": _nullable("integer", minimum=1),
        "preemptible": _nullable("boolean"),
        "ram_gb": _nullable("number", exclusiveMinimum=0),
        "disk_gb": _nullable("number", minimum=0),
        "zones": _nullable("array", items={"type": "string"}),
        "backend_parameters": {**_STRINGS, "type": ["object", "null"]},
        "backend_parameters_strict": _nullable("boolean"),
    },
}

TASK: Schema = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["executors"],
    "properties": {
        "name": _TEXT,
        "description": _TEXT,
        "inputs": _nullable("array", items=INPUT),
        "outputs": _nullable("array", items=OUTPUT),
        "resources": RESOURCES,
        "executors": {"type": "array", "items": EXECUTOR, "minItems": 1},
        "volumes": _nullable("array", items=_ABSOLUTE),
        "tags": {**_STRINGS, "type": ["object", "null"]},
    },
}

jsonschema.Draft202012Validator.check_schema(TASK)
_VALIDATOR = jsonschema.Draft202012Validator(TASK)


def describe(error: ValidationError) -> str:
    """``executors[1].image: required``: where, then what, in a few words."""
    where = path_text(error.absolute_path)
    if error.validator == "required":
        instance = error.instance if isinstance(error.instance, dict) else {}
        required: list[str] = list(error.schema.get("required", [])) if isinstance(error.schema, dict) else []
        missing = next((k for k in required if k not in instance), "?")
        return f"{path_text([missing], where)}: required"
    if error.validator == "type":
        value: Any = error.validator_value
        kinds = value if isinstance(value, list) else [value]
        wanted = " or ".join(str(k) for k in kinds if k != "null")
        return f"{where or '(body)'}: expected {wanted}, got {json_type(error.instance)}"
    if error.validator == "pattern" and error.validator_value == "^/":
        return f"{where}: must be an absolute path"
    if error.validator == "minLength" and error.instance == "":
        return f"{where}: must not be empty"
    if error.validator == "minItems":
        return f"{where}: needs at least {error.validator_value} item(s)"
    if error.validator == "enum":
        enum: Any = error.validator_value
        options = ", ".join(str(v) for v in enum if v is not None)
        return f"{where}: expected one of {options}"
    message = error.message if len(error.message) <= 200 else error.message[:200] + "..."
    return f"{where or '(body)'}: {message}"


def validate(body: Any) -> None:
    """Raise :class:`~ccserver.errors.Invalid` naming the first problem of a task body."""
    if _VALIDATOR.is_valid(body):
        return
    errors = sorted(_VALIDATOR.iter_errors(body), key=lambda e: list(map(str, e.absolute_path)))
    # the first problem in document order reads best ("executors[0]" before "executors[1]")
    error = errors[0] if errors else best_match(_VALIDATOR.iter_errors(body))
    raise Invalid(describe(error))
