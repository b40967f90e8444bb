"""Documents on their way out: to a client (ids as hex, secrets masked) or back into the
database with their secrets masked (cc-protocol.md §3).

A value is secret when its key contains ``key`` or ``password`` (compared in lower case, so
``apiKey`` counts too).  The whole value is masked, whatever its type: ``input_file_keys``
becomes one masked string, as in 0.10.
"""

from __future__ import annotations

import base64
import datetime
import functools
import math
import uuid
from typing import Any

from bson import ObjectId

MASK = "**********"
_SECRET_WORDS = ("key", "password")


def is_secret(key: Any) -> bool:
    if not isinstance(key, str):
        return False
    return _secret_name(key)


@functools.lru_cache(maxsize=8192)
def _secret_name(key: str) -> bool:
    # documents repeat the same few hundred key names: decide each once
    lowered = key.lower()
    return any(word in lowered for word in _SECRET_WORDS)


_PLAIN = frozenset({str, int, bool, type(None)})


def to_client(value: Any, mask: bool = True) -> Any:
    """A JSON-ready copy of ``value``: secrets masked, ObjectIds as hex strings, and every
    other BSON type a pipeline can produce (dates, binary, decimals, non-finite floats) as
    something ``json.dumps`` writes as valid JSON, so no query answer can fail to render.

    ``mask=False`` is for the answers to container callbacks only: the worker needs the real
    ``input_file_keys`` and connector passwords."""
    kind = type(value)
    # exact types first: this runs for every value of every answer (a query answer of 100
    # tasks walks thousands of them)
    if kind in _PLAIN:
        return value
    if kind is dict:
        return {
            (k if type(k) is str else str(k)): (
                MASK
                if mask and type(k) is str and _secret_name(k)
                else (v if type(v) in _PLAIN else to_client(v, mask))
            )
            for k, v in value.items()
        }
    if kind is list:
        return [v if type(v) in _PLAIN else to_client(v, mask) for v in value]
    if kind is ObjectId:
        return str(value)
    if isinstance(value, dict):
        return {str(k): (MASK if mask and is_secret(k) else to_client(v, mask)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_client(v, mask) for v in value]
    if isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return str(value)


def mask_secrets(value: Any) -> Any:
    """A copy of ``value`` with its secrets masked and everything else (ObjectIds included)
    kept, for writing back to the database when a task has ended."""
    if isinstance(value, dict):
        return {k: (MASK if is_secret(k) else mask_secrets(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(v) for v in value]
    return value


def has_secret(value: Any) -> bool:
    if isinstance(value, dict):
        return any(is_secret(k) or has_secret(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_secret(v) for v in value)
    return False


def secret_paths(document: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths of the secrets in a document, e.g. for a ``$set`` that masks them in
    place without rewriting the whole document.  Secrets inside lists are reported at the
    list (``input_files``), since one dotted path cannot address every element."""
    paths: list[str] = []
    for k, v in document.items():
        path = f"{prefix}.{k}" if prefix else str(k)
        if is_secret(k):
            paths.append(path)
        elif isinstance(v, dict):
            paths.extend(secret_paths(v, path))
        elif isinstance(v, list) and has_secret(v):
            paths.append(path)
    return paths


def masking_update(document: dict[str, Any]) -> dict[str, Any]:
    """A ``$set`` update that masks every secret of ``document`` in the database (values of
    secret keys become the mask; lists holding secrets are replaced by masked copies)."""
    update: dict[str, Any] = {}
    for path in secret_paths(document):
        value: Any = document
        for part in path.split("."):
            value = value[part]
        update[path] = MASK if is_secret(path.rsplit(".", 1)[-1]) else mask_secrets(value)
    return {"$set": update} if update else {}
