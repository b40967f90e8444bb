"""A validated TES task body becomes a ``tes_tasks`` document (contracts §1), its secrets
masked and kept apart for the vault.

Pure functions: no store, no clock (the caller passes ``now`` and the id), so they run the
same on the reactor thread for small bodies and in the request pool for large ones.
"""

from __future__ import annotations

import copy
import datetime
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bson import ObjectId

from ccserver.config import Config, S3Config, StorageConfig
from ccserver.document_checks import check_storable
from ccserver.documents import MASK
from ccserver.errors import Invalid
from ccserver.tes import schema, states
from ccserver.tes.listing import tag_pair
from ccserver.tes.locations import check_url

#: an executor's ``env`` value is secret when its name holds one of these (any case)
SECRET_ENV_WORDS = ("KEY", "SECRET", "TOKEN", "PASSWORD", "PASS", "CREDENTIAL", "AUTH")
#: ``resources.backend_parameters`` keys ccserver understands: none yet
BACKEND_PARAMETERS: frozenset[str] = frozenset()
#: the schemes inputs and outputs may always use (staging: see docs/tes.rst)
BASE_SCHEMES = ("http", "https", "ftp")
#: used when the wiring passes no defaults (the runner's ``[tes]`` keys give them)
DEFAULT_RAM_GB = 1.0
DEFAULT_CPU_CORES = 1.0
_WILDCARD = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class Storage:
    """What inputs and outputs may name: ``file://`` under ``file_roots`` (none: refused),
    ``s3://`` when ``s3`` is configured, always ``http(s)``, ``ftp`` and ``content``."""

    file_roots: tuple[str, ...] = ()
    s3: bool = False

    @classmethod
    def from_config(cls, config: Config) -> Storage:
        """From ``[tes.storage]``: its file roots, and whether S3 is configured."""
        section = config.tes.storage
        return cls(file_roots=tuple(os.path.normpath(r) for r in section.file_roots), s3=section.s3 is not None)

    def as_config(self) -> StorageConfig:
        """The ``[tes.storage]`` shape :mod:`ccserver.tes.locations` checks URLs against."""
        return StorageConfig(file_roots=self.file_roots, s3=S3Config() if self.s3 else None)

    def schemes(self) -> list[str]:
        found = (["file"] if self.file_roots else []) + list(BASE_SCHEMES) + (["s3"] if self.s3 else [])
        return found + ["content"]


@dataclass(frozen=True)
class Defaults:
    """What a task reserves when its ``resources`` do not say."""

    ram_gb: float = DEFAULT_RAM_GB
    cpu_cores: float = DEFAULT_CPU_CORES

    @classmethod
    def from_config(cls, config: Config) -> Defaults:
        """From ``[tes] default_ram_gb`` and ``default_cpu_cores``."""
        return cls(ram_gb=config.tes.default_ram_gb, cpu_cores=config.tes.default_cpu_cores)


@dataclass
class Prepared:
    """A document ready to insert, the secrets doc for the vault (``None``: no secret)."""

    document: dict[str, Any]
    secrets: dict[str, Any] | None


def rfc3339(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).isoformat(timespec="milliseconds")


def is_secret_env(name: str) -> bool:
    upper = name.upper()
    return any(word in upper for word in SECRET_ENV_WORDS)


def mask_url(url: str) -> str:
    """``url`` with the password of its userinfo masked (``ftp://u:**********@host/x``)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit((parts.scheme, f"{user}:{MASK}@{host}", parts.path, parts.query, parts.fragment))


def _compact(value: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in value.items() if v is not None}


def _as_url(url: str) -> str:
    """A bare absolute path (as Funnel takes them, and some clients send) is a ``file://`` URL."""
    return "file://" + url if url.startswith("/") else url


def _check_url(url: str, where: str, storage: Storage, *, kind: str = "FILE", output: bool = False) -> None:
    """The staging's own rule (:func:`ccserver.tes.locations.check_url`), at submission: a
    task that staging would refuse is a 400 now rather than a failed attempt later."""
    reason = check_url(url, storage.as_config(), kind=kind, output=output)
    if reason is not None:
        raise Invalid(f"{where}: {reason}")


def _inputs(raw: Iterable[dict[str, Any]], storage: Storage) -> list[dict[str, Any]]:
    out = []
    for i, given in enumerate(raw):
        item = _compact({k: given.get(k) for k in schema.INPUT["properties"]})
        item.setdefault("type", "FILE")
        where = f"inputs[{i}]"
        if item.get("content"):
            if item["type"] == "DIRECTORY":
                raise Invalid(f"{where}.content: a DIRECTORY input cannot have content")
            item.pop("url", None)  # the spec: with content, url is ignored
        elif item.get("url"):
            item.pop("content", None)
            item["url"] = _as_url(item["url"])
            _check_url(item["url"], f"{where}.url", storage, kind=item["type"])
        else:
            raise Invalid(f"{where}.url: required (or content)")
        out.append(item)
    return out


def _outputs(raw: Iterable[dict[str, Any]], storage: Storage) -> list[dict[str, Any]]:
    out = []
    for i, given in enumerate(raw):
        item = _compact({k: given.get(k) for k in schema.OUTPUT["properties"]})
        item.setdefault("type", "FILE")
        where = f"outputs[{i}]"
        item["url"] = _as_url(item["url"])
        _check_url(item["url"], f"{where}.url", storage, kind=item["type"], output=True)
        if _WILDCARD.search(item["path"]):
            prefix = item.get("path_prefix")
            if not prefix:
                raise Invalid(f"{where}.path_prefix: required when path has wildcards")
            if not item["path"].startswith(prefix):
                raise Invalid(f"{where}.path_prefix: must be a prefix of path")
        else:
            item.pop("path_prefix", None)
        out.append(item)
    return out


def _executors(raw: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [_compact({k: given.get(k) for k in schema.EXECUTOR["properties"]}) for given in raw]


def _resources(raw: dict[str, Any] | None) -> tuple[dict[str, Any] | None, list[str]]:
    """The resources to store and the warnings to log (backend parameters not supported)."""
    if raw is None:
        return None, []
    item = _compact({k: raw.get(k) for k in schema.RESOURCES["properties"]})
    given = item.pop("backend_parameters", None) or {}
    unknown = sorted(k for k in given if k.lower() not in BACKEND_PARAMETERS)
    if unknown and item.get("backend_parameters_strict"):
        raise Invalid(f"resources.backend_parameters.{unknown[0]}: not supported by this server")
    known = {k: v for k, v in given.items() if k.lower() in BACKEND_PARAMETERS}
    if known:
        item["backend_parameters"] = known
    warnings = [f"backend_parameters not supported, ignored: {', '.join(unknown)}"] if unknown else []
    return item, warnings


def conceal(doc: dict[str, Any]) -> dict[str, Any] | None:
    """Mask the secrets of ``doc`` in place (contracts §1); the vault's secrets document
    holding the real values of the masked fields, or ``None`` when there were none."""
    real: dict[str, Any] = {}
    for field in ("inputs", "outputs"):
        items = doc.get(field) or []
        if any("url" in item and mask_url(item["url"]) != item["url"] for item in items):
            real[field] = copy.deepcopy(items)
            for item in items:
                if "url" in item:
                    item["url"] = mask_url(item["url"])
    executors = doc.get("executors") or []
    if any(is_secret_env(k) for e in executors for k in (e.get("env") or {})):
        real["executors"] = copy.deepcopy(executors)
        for e in executors:
            if e.get("env"):
                e["env"] = {k: (MASK if is_secret_env(k) else v) for k, v in e["env"].items()}
    resources = doc.get("resources") or {}
    if resources.get("backend_parameters"):
        real["resources"] = copy.deepcopy(resources)
        resources["backend_parameters"] = {k: MASK for k in resources["backend_parameters"]}
    return {"_id": doc["_id"], "fields": real} if real else None


def needs_engine(executors: Any) -> bool:
    """A task that only a Docker engine runs: an executor with a stdin, stdout or stderr file,
    or with ``ignore_error`` (docs/kubernetes.rst, "TES tasks on a cluster")."""
    for executor in executors or ():
        if isinstance(executor, dict) and any(executor.get(k) for k in ("stdin", "stdout", "stderr", "ignore_error")):
            return True
    return False


def prepare(
    username: str,
    body: dict[str, Any],
    now: float,
    storage: Storage,
    defaults: Defaults = Defaults(),
    task_id: ObjectId | None = None,
) -> Prepared:
    """Validate ``body`` (:class:`~ccserver.errors.Invalid` naming the field) and build the
    QUEUED document of ``username``'s task."""
    schema.validate(body)
    resources, warnings = _resources(body.get("resources"))
    tags = dict(body.get("tags") or {})
    ram_gb = (resources or {}).get("ram_gb") or defaults.ram_gb
    cpus = (resources or {}).get("cpu_cores") or defaults.cpu_cores
    description = "submitted" + ("; " + "; ".join(warnings) if warnings else "")
    doc: dict[str, Any] = {
        "_id": task_id or ObjectId(),
        "username": username,
        "state": states.QUEUED,
        "created_at": now,
        "creation_time": rfc3339(now),
        "name": body.get("name"),
        "description": body.get("description"),
        "inputs": _inputs(body.get("inputs") or [], storage),
        "outputs": _outputs(body.get("outputs") or [], storage),
        "executors": _executors(body["executors"]),
        "volumes": list(body.get("volumes") or []),
        "resources": resources,
        # tags live as a list only: a key may hold "." or "$" (``ccserver.notify``), which a
        # MongoDB field name may not; the views answer them as the object TES knows
        "tag_list": [{"key": k, "value": v} for k, v in tags.items()],
        "tag_pairs": [tag_pair(k, v) for k, v in tags.items()],
        "ram_mb": int(math.ceil(float(ram_gb) * 1024)),
        "cpus": float(cpus),
        # placement keeps it off Kubernetes clusters (read by every round: a flag, not the executors)
        "engine_only": needs_engine(body["executors"]),
        "trials": 0,
        "node": None,
        "logs": [],
        "transitions": [{"state": states.QUEUED, "timestamp": now, "description": description}],
        "ended_at": None,
    }
    # user-named keys (env) the database cannot hold: a 400 naming them, not a 5xx
    check_storable({"executors": doc["executors"]}, "")
    secrets = conceal(doc)
    return Prepared(doc, secrets)
