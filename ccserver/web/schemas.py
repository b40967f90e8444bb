"""JSON Schemas (draft 2020-12) of every request body, and the validators built from them once.

The schemas use only keywords that mean the same in draft 7 and draft 2020-12, so that
``fastjsonschema`` (draft 7) can compile them into plain Python functions: a single-task
POST then costs about 12 µs of validation instead of about 330 µs, which is most of the
difference between meeting the API's throughput target and missing it.  ``jsonschema``
stays the reference: it runs whenever the fast check fails, and writes the error message.

The same documents feed request validation (:mod:`ccserver.web.bodies`), the OpenAPI document
(:mod:`ccserver.web.openapi`) and the property-based tests, so the three cannot disagree.

Where cc-protocol.md §5 fixes a structure, unknown keys are refused (a typo in a task must be
a 400, not a silently ignored field).  What the worker inside the container interprets
(``connector_access``, ``parameters``, ``tracing``, ``sandbox``, notification ``json_data``)
is only required to be an object: the server stores it and hands it over unchanged.
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator

try:  # optional: a compiled validator, about 25 times faster on valid bodies
    import fastjsonschema
except ImportError:  # pragma: no cover - jsonschema alone gives the same answers, slower
    fastjsonschema = None  # type: ignore[assignment]  # None: the module is not installed

Schema = dict[str, Any]

#: 24 hex digits: the text form of an ObjectId (conversion still checks it, see bodies.py)
OBJECT_ID: Schema = {"type": "string", "pattern": "^[0-9a-fA-F]{24}$"}

FREE_OBJECT: Schema = {"type": "object"}

INPUT_FILE: Schema = {
    "type": "object",
    "properties": {
        "connector_type": {"type": "string"},
        "connector_access": FREE_OBJECT,
    },
    "required": ["connector_type", "connector_access"],
    "additionalProperties": False,
}

RESULT_FILE: Schema = {
    "type": "object",
    "properties": {
        "local_result_file": {"type": "string"},
        "connector_type": {"type": "string"},
        "connector_access": FREE_OBJECT,
        "add_meta_data": {"type": "boolean"},
    },
    "required": ["connector_type", "connector_access"],
    "additionalProperties": False,
}

HTTP_AUTH: Schema = {
    "type": "object",
    "properties": {
        "auth_type": {"enum": ["basic", "digest"]},
        "username": {"type": "string"},
        "password": {"type": "string"},
    },
    "required": ["auth_type", "username", "password"],
    "additionalProperties": False,
}

NOTIFICATION: Schema = {
    "type": "object",
    "properties": {
        "connector_type": {"type": "string"},
        "connector_access": {
            "type": "object",
            "properties": {
                "url": {"type": "string"},
                # 0.10 required a method; its worker and server always POST, so it is optional
                "method": {"enum": ["PUT", "POST", "put", "post", "Put", "Post"]},
                "json_data": FREE_OBJECT,
                "ssl_verify": {"type": "boolean"},
                "auth": HTTP_AUTH,
            },
            "required": ["url"],
            "additionalProperties": False,
        },
        "add_meta_data": {"type": "boolean"},
    },
    "required": ["connector_access"],
    "additionalProperties": False,
}

APPLICATION_CONTAINER_DESCRIPTION: Schema = {
    "type": "object",
    "properties": {
        "image": {"type": "string", "minLength": 1},
        "container_ram": {"type": "number", "exclusiveMinimum": 0, "description": "MB"},
        "entry_point": {"type": "string", "minLength": 1},
        "registry_auth": {
            "anyOf": [
                {
                    "type": "object",
                    "properties": {"username": {"type": "string"}, "password": {"type": "string"}},
                    "required": ["username", "password"],
                    "additionalProperties": False,
                },
                {"type": "null"},
            ]
        },
        "parameters": {"type": ["object", "array"]},
        "tracing": FREE_OBJECT,
        "sandbox": FREE_OBJECT,
    },
    "required": ["image", "container_ram"],
    "additionalProperties": False,
}

TASK: Schema = {
    "title": "Task",
    "type": "object",
    "properties": {
        "tags": {"type": "array", "items": {"type": "string"}},
        "no_cache": {"type": "boolean"},
        "application_container_description": APPLICATION_CONTAINER_DESCRIPTION,
        "input_files": {"type": "array", "items": INPUT_FILE},
        "result_files": {"type": "array", "items": {"anyOf": [RESULT_FILE, {"type": "null"}]}},
        "notifications": {"type": "array", "items": NOTIFICATION},
    },
    "required": ["application_container_description", "input_files", "result_files"],
    "additionalProperties": False,
}

TASKS: Schema = {
    "title": "Tasks",
    "type": "object",
    "properties": {"tasks": {"type": "array", "items": TASK, "minItems": 1}},
    "required": ["tasks"],
    "additionalProperties": False,
}

CANCEL_ONE: Schema = {
    "title": "CancelOne",
    "type": "object",
    "properties": {"_id": OBJECT_ID},
    "required": ["_id"],
    "additionalProperties": False,
}

CANCEL_MANY: Schema = {
    "title": "CancelMany",
    "type": "object",
    "properties": {"tasks": {"type": "array", "items": CANCEL_ONE, "minItems": 1}},
    "required": ["tasks"],
    "additionalProperties": False,
}

QUERY: Schema = {
    "title": "Query",
    "type": "object",
    "properties": {
        "aggregate": {
            "type": "array",
            "items": {"type": "object", "minProperties": 1, "maxProperties": 1},
            "description": "a MongoDB aggregation pipeline; see the list of allowed stages",
        }
    },
    "required": ["aggregate"],
    "additionalProperties": False,
}

NODES: Schema = {
    "title": "Nodes",
    "type": "object",
    "properties": {
        "nodes": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}},
                "required": ["name"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["nodes"],
    "additionalProperties": False,
}

#: what workers report is stored as it comes: CC-Container-Worker 0.10 sends file sizes as a list
#: or as an object keyed by result name, numbers may be null, and images may add fields
TELEMETRY: Schema = {
    "type": ["object", "null"],
    "properties": {
        "max_vms_memory": {"type": ["number", "null"]},
        "max_rss_memory": {"type": ["number", "null"]},
        "input_file_sizes": {"type": ["array", "object", "null"]},
        "result_file_sizes": {"type": ["array", "object", "null"]},
        "wall_time": {"type": ["number", "null"]},
        "std_out": {"type": ["string", "null"]},
        "std_err": {"type": ["string", "null"]},
        "return_code": {"type": ["integer", "null"]},
        "tracing": {},
    },
    "additionalProperties": True,
}

CALLBACK: Schema = {
    "title": "Callback",
    "type": "object",
    "properties": {
        "callback_key": {"type": "string"},
        "callback_type": {"type": "integer", "minimum": 0},
        "container_id": OBJECT_ID,
        "content": {
            "type": "object",
            "properties": {
                "state": {"type": "integer"},
                "description": {"type": "string"},
                "exception": {"type": ["string", "null"]},
                "telemetry": TELEMETRY,
            },
            "required": ["state", "description"],
            "additionalProperties": False,
        },
    },
    "required": ["callback_key", "callback_type", "container_id", "content"],
    "additionalProperties": False,
}

#: the request schemas by name; openapi.py publishes them under components/schemas
REQUESTS: dict[str, Schema] = {
    "Task": TASK,
    "Tasks": TASKS,
    "CancelOne": CANCEL_ONE,
    "CancelMany": CANCEL_MANY,
    "Query": QUERY,
    "Nodes": NODES,
    "Callback": CALLBACK,
}


def _validator(schema: Schema) -> Draft202012Validator:
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


#: built once at import: validators keep their compiled state between requests
VALIDATORS: dict[str, Draft202012Validator] = {name: _validator(s) for name, s in REQUESTS.items()}
#: compiled checks (raise on invalid input), or empty without fastjsonschema
FAST_VALIDATORS: dict[str, Any] = (
    {name: fastjsonschema.compile(s) for name, s in REQUESTS.items()} if fastjsonschema is not None else {}
)
