"""What a stored task looks like in an answer: the three views of TES 1.1, and the legacy
dialect of TES 1.0 (py-tes 0.4.x: Snakemake and Toil plugins).

``MINIMAL``: ``id`` and ``state`` only.  ``BASIC``: everything except the executors' ``stdout``
and ``stderr`` in the logs, the inputs' ``content`` and the task logs' ``system_logs``.
``FULL``: everything.  Keys whose value is ``null`` are left out in both dialects (all of them
are optional in the spec); the legacy dialect also leaves out empty strings, lists and objects
(py-tes 0.4's models refuse ``"resources": null``), keeps ``exit_code`` even when it is 0, knows
only the TES 1.0 fields and the eight old states.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ccserver.errors import Invalid
from ccserver.tes import states

MINIMAL, BASIC, FULL = "MINIMAL", "BASIC", "FULL"
VIEWS = (MINIMAL, BASIC, FULL)

#: the fields of a task in TES 1.1 answers, in the spec's order
TASK_FIELDS = (
    "id",
    "state",
    "name",
    "description",
    "inputs",
    "outputs",
    "resources",
    "executors",
    "volumes",
    "tags",
    "logs",
    "creation_time",
)
#: what TES 1.0 (py-tes 0.4) knows of each object; everything else is 1.1-only
LEGACY_FIELDS: dict[str, tuple[str, ...]] = {
    "input": ("name", "description", "url", "path", "type", "content"),
    "output": ("name", "description", "url", "path", "type"),
    "resources": ("cpu_cores", "preemptible", "ram_gb", "disk_gb", "zones"),
    "executor": ("image", "command", "workdir", "stdin", "stdout", "stderr", "env"),
    "task_log": ("start_time", "end_time", "metadata", "logs", "outputs", "system_logs"),
    "executor_log": ("start_time", "end_time", "stdout", "stderr", "exit_code"),
    "output_log": ("url", "path", "size_bytes"),
}


def parse_view(value: str | None, default: str = MINIMAL) -> str:
    if value is None or value == "":
        return default
    if value not in VIEWS:
        raise Invalid(f"view: expected one of {', '.join(VIEWS)}, got {value[:40]!r}")
    return value


def _without_nulls(value: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in value.items() if v is not None}


def tags_of(doc: Mapping[str, Any]) -> dict[str, str] | None:
    """The task's tags, kept as ``tag_list`` (their keys may hold "." or "$")."""
    if "tag_list" not in doc:
        return doc.get("tags")
    return {entry["key"]: entry["value"] for entry in doc["tag_list"] or ()}


def render(doc: Mapping[str, Any], view: str) -> dict[str, Any]:
    """The TES 1.1 ``tesTask`` of a stored document in ``view``."""
    if view == MINIMAL:
        return {"id": str(doc["_id"]), "state": doc["state"]}
    task: dict[str, Any] = {"id": str(doc["_id"])}
    for key in TASK_FIELDS[1:]:
        value = tags_of(doc) if key == "tags" else doc.get(key)
        if value is not None:
            task[key] = value
    if view == BASIC:
        task["inputs"] = [{k: v for k, v in i.items() if k != "content"} for i in task.get("inputs", [])]
        task["logs"] = [_basic_task_log(log) for log in task.get("logs", [])]
    return task


def _basic_task_log(log: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in log.items() if k != "system_logs"}
    out["logs"] = [{k: v for k, v in e.items() if k not in ("stdout", "stderr")} for e in log.get("logs") or []]
    out.setdefault("outputs", [])
    return out


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, (str, list, dict)) and not value)


def _pick(value: Mapping[str, Any], kind: str) -> dict[str, Any]:
    return {k: value[k] for k in LEGACY_FIELDS[kind] if k in value and not _empty(value[k])}


def legacy(doc: Mapping[str, Any], view: str) -> dict[str, Any]:
    """The TES 1.0 task of a stored document in ``view``, for py-tes 0.4."""
    task = render(doc, view)
    out: dict[str, Any] = {"id": task["id"], "state": states.legacy(task["state"])}
    if view == MINIMAL:
        return out
    for key in ("name", "description", "volumes", "tags", "creation_time"):
        if not _empty(task.get(key)):
            out[key] = task[key]
    for key, kind in (("inputs", "input"), ("outputs", "output"), ("executors", "executor")):
        items = [_pick(item, kind) for item in task.get(key) or []]
        if items:
            out[key] = items
    resources = _pick(task.get("resources") or {}, "resources")
    if resources:
        out["resources"] = resources
    logs = [_legacy_task_log(log) for log in task.get("logs") or []]
    if logs:
        out["logs"] = logs
    return out


def _legacy_task_log(log: Mapping[str, Any]) -> dict[str, Any]:
    out = _pick(log, "task_log")
    executor_logs = []
    for e in log.get("logs") or []:
        entry = _pick(e, "executor_log")
        if isinstance(e.get("exit_code"), int):
            entry["exit_code"] = e["exit_code"]  # 0 too: it is not "empty"
        executor_logs.append(entry)
    if executor_logs:
        out["logs"] = executor_logs
    outputs = [_pick(o, "output_log") for o in log.get("outputs") or []]
    if outputs:
        out["outputs"] = outputs
    return out
