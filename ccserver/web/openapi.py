"""The OpenAPI 3.0 document of the whole API, built from the same schemas that validate the
request bodies (:mod:`ccserver.web.schemas`), served at ``GET /openapi.json`` and rendered
into ``docs/api.rst``.

OpenAPI 3.0 schema objects are a dialect of JSON Schema: ``type`` lists become ``nullable``,
``const`` becomes a one-value ``enum``, and ``exclusiveMinimum`` is a flag beside
``minimum``; :func:`to_openapi` does that translation so the validators keep using plain
draft 2020-12.
"""

from __future__ import annotations

import copy
from typing import Any

from ccserver import __version__
from ccserver.web.schemas import REQUESTS

Schema = dict[str, Any]

ID: Schema = {"type": "string", "pattern": "^[0-9a-f]{24}$", "example": "5a3f0c7e9d1b2c0012345678"}
STATE: Schema = {
    "type": "integer",
    "enum": [0, 1, 2, 3, 4, 5],
    "description": "0 created, 1 waiting, 2 processing, 3 success, 4 failed, 5 cancelled",
}
NODE: Schema = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "total_ram": {"type": "number", "description": "MB"},
        "reserved_ram": {"type": "number", "description": "MB"},
        "total_cpus": {"type": "integer", "nullable": True},
        "reserved_cpus": {
            "type": "number",
            "description": "CPUs of the live TES tasks, plus tes.legacy_container_cpus per 0.10 application container",
        },
        "active_application_containers": {"type": "array", "items": {"type": "number"}},
        "active_data_containers": {"type": "array", "items": {"type": "number"}},
        "kind": {"type": "string", "enum": ["docker", "kubernetes"], "description": "not in 0.10"},
    },
}
DOCUMENTS: Schema = {
    "type": "array",
    "items": {"type": "object", "additionalProperties": True},
    "description": "stored documents as the pipeline shaped them; ids as hex strings, secrets masked",
}

RESPONSES: dict[str, Schema] = {
    "Version": {"type": "object", "properties": {"version": {"type": "string"}}, "required": ["version"]},
    "Token": {
        "type": "object",
        "properties": {
            "token": {"type": "string", "pattern": "^[0-9a-f]{48}$"},
            "valid_for_seconds": {"type": "number"},
        },
        "required": ["token", "valid_for_seconds"],
    },
    "NodesStatus": {
        "type": "object",
        "properties": {
            "healthy_nodes": {"type": "array", "items": NODE},
            "dead_nodes": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "description": {"type": "string"},
                        "kind": {"type": "string", "enum": ["docker", "kubernetes"], "description": "not in 0.10"},
                    },
                },
            },
        },
        "required": ["healthy_nodes", "dead_nodes"],
    },
    "Empty": {"type": "object", "additionalProperties": False},
    "TaskCreated": {"type": "object", "properties": {"_id": ID}, "required": ["_id"]},
    "TasksCreated": {
        "type": "object",
        "properties": {
            "task_group_id": ID,
            "tasks": {"type": "array", "items": {"$ref": "#/components/schemas/TaskCreated"}},
        },
        "required": ["task_group_id", "tasks"],
    },
    "TaskState": {"type": "object", "properties": {"_id": ID, "state": STATE}, "required": ["_id", "state"]},
    "TaskStates": {
        "type": "object",
        "properties": {"tasks": {"type": "array", "items": {"$ref": "#/components/schemas/TaskState"}}},
        "required": ["tasks"],
    },
    "Error": {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]},
    "ApplicationContainerStarted": {
        "type": "object",
        "description": "the answer to callback_type 0 of an application container",
        "properties": {
            "task_id": ID,
            "input_files": {"type": "array", "items": {"type": "object"}},
            "result_files": {"type": "array", "items": {"type": "object", "nullable": True}},
            "parameters": {"description": "object or array, as submitted"},
            "sandbox": {"type": "object", "nullable": True},
            "tracing": {"type": "object", "nullable": True},
        },
    },
    "DataContainerStarted": {
        "type": "object",
        "description": "the answer to callback_type 0 of a data container",
        "properties": {
            "input_files": {"type": "array", "items": {"type": "object"}},
            "input_file_keys": {"type": "array", "items": {"type": "string"}},
        },
    },
}

QUERY_COLLECTIONS = {
    "/tasks/query": ("tasks", "Query tasks"),
    "/task-groups/query": ("task_groups", "Query task groups"),
    "/application-containers/query": ("application_containers", "Query application containers"),
    "/data-containers/query": ("data_containers", "Query data containers"),
}

QUERY_NOTES = (
    "The body holds a MongoDB aggregation pipeline. Allowed stages (each an object with exactly one "
    "key): $match $project $limit $skip $count $sort $unwind $group $sample $replaceRoot $addFields. "
    "Operators that run code or reach other collections ($where, $function, $accumulator, $lookup, "
    "$graphLookup, $unionWith, $out, $merge, $facet, $documents, ...) are refused at any depth "
    "with 400. Standard users see only their own documents (a leading $match on username is "
    "added); admins see all. A query that would return more than server.query_max_documents "
    "documents is refused with 400 (add $limit); one that runs longer than "
    "server.query_timeout_seconds is refused with 400."
)


def to_openapi(schema: Any) -> Any:
    """A copy of a draft 2020-12 schema in the OpenAPI 3.0 dialect."""
    if isinstance(schema, list):
        return [to_openapi(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: to_openapi(v) for k, v in schema.items() if k not in ("type", "exclusiveMinimum")}
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        if "null" in kind:
            out["nullable"] = True
        if len(kinds) == 1:
            out["type"] = kinds[0]
        else:
            out["anyOf"] = [{"type": k} for k in kinds]
    elif kind is not None:
        out["type"] = kind
    if "exclusiveMinimum" in schema:
        out["minimum"] = schema["exclusiveMinimum"]
        out["exclusiveMinimum"] = True
    if "anyOf" in schema and {"type": "null"} in schema["anyOf"]:
        rest = [s for s in schema["anyOf"] if s != {"type": "null"}]
        if len(rest) == 1:
            del out["anyOf"]
            out.update(to_openapi(rest[0]))
            out["nullable"] = True
    return out


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Schema, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


TASK_LOGS: Schema = {
    "type": "object",
    "required": ["task_id", "container_id", "running", "truncated", "lines"],
    "properties": {
        "task_id": {"type": "string"},
        "container_id": {"type": "string", "nullable": True},
        "running": {"type": "boolean"},
        "truncated": {"type": "boolean"},
        "lines": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["time", "stream", "text"],
                "properties": {
                    "time": {"type": "number"},
                    "stream": {"enum": ["stdout", "stderr"]},
                    "text": {"type": "string"},
                },
            },
        },
    },
}


def _operation(
    summary: str,
    ok: tuple[Schema, str],
    *,
    body: Schema | None = None,
    auth: str | None = "user",
    errors: dict[str, str] | None = None,
    description: str | None = None,
    tag: str,
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": {"200": _json(*ok)}}
    if description:
        op["description"] = description
    responses = op["responses"]
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        responses["400"] = _error("the body is not JSON, or does not match the schema, or names unknown ids")
        responses["413"] = _error("the body is larger than server.max_body_bytes")
        responses["415"] = _error("the body is not sent as Content-Type: application/json")
    if auth == "user":
        op["security"] = [{"basicAuth": []}]
        responses["401"] = _error("missing or wrong credentials, or locked out after failed logins")
    elif auth == "password":
        op["security"] = [{"basicAuth": []}]
        responses["401"] = _error("missing or wrong credentials (a token is not accepted here)")
    elif auth == "callback":
        op["security"] = []
        responses["401"] = _error("unknown container or wrong callback_key")
    else:
        op["security"] = []
    for status, text in (errors or {}).items():
        responses[status] = _error(text)
    responses["503"] = _error("the database cannot be reached")
    return op


def _paths() -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/": {"get": _operation("Server version", (_ref("Version"), "the version"), auth=None, tag="server")},
        "/openapi.json": {
            "get": _operation(
                "This OpenAPI document", ({"type": "object"}, "the OpenAPI 3.0 document"), auth=None, tag="server"
            )
        },
        "/token": {
            "get": _operation(
                "Issue a token",
                (_ref("Token"), "a token, valid from this client address only"),
                auth="password",
                tag="server",
                description="The token may replace the password in basic authentication on every other "
                "user endpoint, from the same client address, for valid_for_seconds.",
            )
        },
        "/nodes": {
            "get": _operation("Cluster nodes", (_ref("NodesStatus"), "healthy and dead nodes"), tag="nodes"),
            "post": _operation(
                "Re-check nodes now",
                (_ref("Empty"), "the nodes were checked"),
                body=_ref("Nodes"),
                tag="nodes",
                errors={"403": "only admins may re-check nodes"},
                description="Used after a dead node was repaired. An unknown node name is a 400.",
            ),
        },
        "/tasks": {
            "post": _operation(
                "Submit one task or a batch",
                (
                    {"oneOf": [_ref("TaskCreated"), _ref("TasksCreated")]},
                    "one task: {_id}; a batch: {task_group_id, tasks: [{_id}...]}",
                ),
                body={"oneOf": [_ref("Task"), _ref("Tasks")]},
                tag="tasks",
                description="Either way one task group is created for the request.",
            )
        },
        "/tasks/cancel": {
            "post": _operation(
                "Cancel one task or a batch",
                ({"oneOf": [_ref("TaskState"), _ref("TaskStates")]}, "the tasks' states after the request"),
                body={"oneOf": [_ref("CancelOne"), _ref("CancelMany")]},
                tag="tasks",
                description="A standard user may cancel only its own tasks. An unknown or foreign id is "
                "a 400 naming the id, and then nothing is cancelled. Tasks already in an end state "
                "keep it.",
            )
        },
    }
    paths["/tasks/{task_id}/logs"] = {
        "get": {
            **_operation(
                "Live logs of a task (an extension beyond 0.10)",
                (TASK_LOGS, "the output of the task's current (or last) application container"),
                tag="tasks",
                errors={
                    "400": "since or tail is not a number (the message names it)",
                    "404": "no such task, or another user's",
                },
                description="stdout and stderr lines, oldest first, as the engine timed them: while the "
                "container runs (followed from its engine), and its kept tail after it ended. since=T keeps "
                "the lines after T (epoch seconds), tail=N the last N. truncated says that older output was "
                "dropped ([logs] tail_bytes).",
            ),
            "parameters": [
                {"name": "task_id", "in": "path", "required": True, "schema": {"type": "string"}},
                {"name": "since", "in": "query", "required": False, "schema": {"type": "number"}},
                {"name": "tail", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0}},
            ],
        }
    }
    paths.update(_dashboard_paths())
    paths.update(_staging_paths())
    for path, (collection, summary) in QUERY_COLLECTIONS.items():
        answer = {"type": "object", "properties": {collection: DOCUMENTS}, "required": [collection]}
        paths[path] = {
            "post": _operation(
                summary,
                (answer, "the documents"),
                body=_ref("Query"),
                tag="queries",
                description=QUERY_NOTES,
            )
        }
    for kind, started in (("application", "ApplicationContainerStarted"), ("data", "DataContainerStarted")):
        paths[f"/{kind}-containers/callback"] = {
            "post": _operation(
                f"Callback of a {kind} container",
                ({"oneOf": [_ref(started), _ref("Empty")]}, "callback_type 0: the container's work; else {}"),
                body=_ref("Callback"),
                auth="callback",
                tag="containers",
                errors={"400": "the body is invalid, or the container has already failed"},
                description="Called by CC-Container-Worker inside the container, authenticated by the "
                "container's callback_key. Callbacks must arrive in order of callback_type with "
                "content.state 3; anything else fails the container.",
            )
        }
    return paths


def _staging_paths() -> dict[str, Any]:
    """What the staging steps of a TES task's pod on a Kubernetes cluster call
    (docs/kubernetes.rst, "TES tasks on a cluster"): authenticated by the token in the path."""
    token = {"name": "token", "in": "path", "required": True, "schema": {"type": "string"}}
    index = {"name": "index", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 0}}
    offset = {"name": "offset", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0}}
    octets = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    gone = {"404": _error("no such staging area (the attempt ended, or the token is wrong), or no such stream")}
    manifest = {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["dir", "size"],
            "properties": {"dir": {"type": "string"}, "size": {"type": "integer"}},
        },
    }

    def responses(ok: dict[str, Any]) -> dict[str, Any]:
        return {
            "200": ok,
            "400": _error("a bad offset, or a piece that does not continue the stream"),
            **gone,
            "503": _error("no staging thread was free in time"),
        }

    common = {"tags": ["staging"], "security": []}
    piece_size = {"type": "object", "required": ["size"], "properties": {"size": {"type": "integer"}}}
    return {
        "/tes-staging/{token}/inputs": {
            "get": {
                **common,
                "summary": "The input streams of a TES attempt (their sizes)",
                "parameters": [token],
                "responses": responses(_json(manifest, "one entry per input stream")),
            }
        },
        "/tes-staging/{token}/inputs/{index}": {
            "get": {
                **common,
                "summary": "A piece (at most 4 MiB) of an input stream, from offset",
                "parameters": [token, index, offset],
                "responses": responses({"description": "the bytes", "content": octets}),
            }
        },
        "/tes-staging/{token}/outputs/{index}": {
            "post": {
                **common,
                "summary": "A piece of the tar stream of an output path, at offset",
                "description": "last=1 ends the stream, with dir=1|0 and name (the path's last part); "
                "missing=1: the path does not exist.",
                "parameters": [
                    token,
                    index,
                    offset,
                    *(
                        {"name": n, "in": "query", "required": False, "schema": {"type": "string"}}
                        for n in ("last", "dir", "name", "missing")
                    ),
                ],
                "requestBody": {"required": True, "content": octets},
                "responses": responses(_json(piece_size, "the bytes of the stream received so far")),
            }
        },
    }


def _dashboard_paths() -> dict[str, Any]:
    """The web dashboard's page and its read endpoints (docs/dashboard.rst): extensions beyond 0.10."""
    html = {
        "description": "the dashboard's page (index.html)",
        "content": {"text/html": {"schema": {"type": "string"}}},
    }
    page = _operation("The web dashboard", ({"type": "string"}, "the page"), auth=None, tag="dashboard")
    page["responses"]["200"] = html
    page["description"] = "The files of the dashboard: /ui/ is its page, /ui/<file> its scripts and styles."
    task_row = {"type": "object", "description": "kind (cc or tes), id, state, username, image, name, created_at"}
    query = [
        {"name": name, "in": "query", "required": False, "schema": {"type": kind}, "description": text}
        for name, kind, text in (
            ("state", "string", "a state name: 0.10's (lower case) or TES 1.1's (upper case)"),
            ("user", "string", "admins only: this user's tasks"),
            ("image", "string", "the image of the task (0.10) or of one of its executors (TES)"),
            ("since", "number", "created at or after (epoch seconds)"),
            ("until", "number", "created before (epoch seconds)"),
            ("cursor", "string", "the next of the previous page"),
            ("limit", "integer", "rows per page, 1 to 200 (50)"),
        )
    ]
    listing = _operation(
        "0.10 and TES tasks, newest first, by pages",
        (
            {
                "type": "object",
                "properties": {
                    "tasks": {"type": "array", "items": task_row},
                    "next": {"type": "string", "nullable": True},
                    "scanned_to_limit": {"type": "boolean"},
                },
            },
            "one page and the cursor of the next (null: the end)",
        ),
        tag="dashboard",
        errors={"400": "an unknown parameter, a bad value, or a standard user asking for another user"},
        description="Keyset paging on the created_at index: every page costs the same. A standard "
        "user sees only their own tasks.",
    )
    listing["parameters"] = query
    task = _operation(
        "One task with its containers",
        (
            {"type": "object", "properties": {"kind": {"type": "string"}, "task": DOCUMENTS, "containers": DOCUMENTS}},
            "the task document (secrets masked) and its application containers",
        ),
        tag="dashboard",
        errors={"400": "kind is not cc or tes, or the id is not 24 hex digits", "404": "no such task of yours"},
    )
    task["parameters"] = [
        {"name": "kind", "in": "path", "required": True, "schema": {"type": "string", "enum": ["cc", "tes"]}},
        {"name": "task_id", "in": "path", "required": True, "schema": {"type": "string"}},
    ]
    activity = _operation(
        "Tasks by state, and submitted / started / ended per minute",
        ({"type": "object"}, "{start, minutes, submitted: [n...], started, ended, truncated, counts: {state: n}}"),
        tag="dashboard",
        errors={"400": "minutes is not a whole number from 1 to 1440"},
    )
    activity["parameters"] = [
        {"name": "minutes", "in": "query", "required": False, "schema": {"type": "integer"}, "description": "60"}
    ]
    me = _operation("Who is logged in", ({"type": "object"}, "{username, is_admin}"), tag="dashboard")
    return {
        "/ui/": {"get": page},
        "/dashboard/me": {"get": me},
        "/dashboard/tasks": {"get": listing},
        "/dashboard/tasks/{kind}/{task_id}": {"get": task},
        "/activity": {"get": activity},
    }


def document(prefix: str = "") -> dict[str, Any]:
    """The OpenAPI document; ``prefix`` is ``server.api_prefix`` (the server URL's path)."""
    schemas = {name: to_openapi(copy.deepcopy(schema)) for name, schema in REQUESTS.items()}
    schemas.update(copy.deepcopy(RESPONSES))
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "ccserver (Curious Containers) REST API",
            "version": __version__,
            "description": "The CC-Server 0.10 REST API. Every body is a JSON object. Ids are 24 hex "
            "digits. In answers, values under keys containing 'key' or 'password' are masked.",
        },
        "servers": [{"url": prefix or "/"}],
        "paths": _paths(),
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "basicAuth": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "user name and password, or user name and a token from GET /token",
                }
            },
        },
    }


def main() -> None:
    """Print the document as stored in ``docs/openapi.json`` (``python -m ccserver.web.openapi``)."""
    import json

    print(json.dumps(document(), indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
