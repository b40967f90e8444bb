"""Reading request bodies: bytes → JSON object → validated → ids converted.

Everything here turns client mistakes into :class:`~ccserver.web.errors.BadRequest` with a
message that says where and what, because "Nothing a client sends may produce a 500"
(cc-protocol.md §3).  Python's ``json`` accepts more than JSON (``NaN``, ``Infinity``, lone
UTF-16 surrogates, integers of any size) and BSON can store less (64-bit integers, UTF-8
strings, keys without ``$``/``.``/NUL, bounded nesting); those gaps are closed here, on the
cheap path when the raw bytes show they cannot occur.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from jsonschema import ValidationError
from jsonschema.exceptions import best_match

from ccserver.web.content_type import require_json
from ccserver.web.errors import BadRequest
from ccserver.web.schemas import FAST_VALIDATORS, VALIDATORS

#: deeper nesting is refused: MongoDB stores at most 100 levels, and our own walks recurse
MAX_DEPTH = 64
INT64 = (-(2**63), 2**63 - 1)

# a run of 19+ digits may not fit into 64 bits (or, as a float, may overflow to infinity);
# an exponent may overflow too; a \ud800-\udfff escape may be a lone surrogate
_RISKY_NUMBER = re.compile(rb"\d{19}|[eE][+-]?\d{3}")
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _checked_int(text: str) -> int:
    value = int(text)
    if not INT64[0] <= value <= INT64[1]:
        raise ValueError(f"integer {text[:30]}{'...' if len(text) > 30 else ''} does not fit in 64 bits")
    return value


def _checked_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:30]} is out of range")
    return value


def parse(raw: bytes) -> dict[str, Any]:
    """The JSON object in ``raw``; :class:`BadRequest` for anything else."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRequest(f"the body is not UTF-8 text: {e.reason} at byte {e.start}") from None
    hooks: dict[str, Any] = {"parse_constant": _refuse_constant}
    if _RISKY_NUMBER.search(raw):
        hooks.update(parse_int=_checked_int, parse_float=_checked_float)
    try:
        body = json.loads(text, **hooks)
    except RecursionError:
        raise BadRequest(f"the body is nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as e:
        raise BadRequest(f"the body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise BadRequest(f"the body must be a JSON object, not {_json_type(body)}")
    if _SURROGATE.search(raw):
        try:
            json.dumps(body, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise BadRequest("the body holds a string with a lone UTF-16 surrogate (\\ud800-\\udfff)") from None
        except RecursionError:
            raise BadRequest(f"the body is nested deeper than {MAX_DEPTH} levels") from None
    return body


def read(request: Any) -> dict[str, Any]:
    """Parse the body of a twisted.web request (already limited in size by CCSite)."""
    require_json(request)
    content = request.content
    content.seek(0)
    return parse(content.read())


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def path_text(path: Iterable[Any], prefix: str = "") -> str:
    """``tasks[3].application_container_description.container_ram``"""
    out = prefix
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def describe(error: ValidationError) -> str:
    where = path_text(error.absolute_path) or "(body)"
    return f"{where}: {_short(error.message)}"


def _short(message: str, limit: int = 300) -> str:
    return message if len(message) <= limit else message[:limit] + "..."


def validate(name: str, body: Any) -> None:
    """Raise :class:`BadRequest` naming the most relevant violation of schema ``name``
    (a key of :data:`ccserver.web.schemas.REQUESTS`).

    The compiled check runs first; only when it refuses does ``jsonschema`` (the reference)
    look again and describe the problem.  Should the two ever disagree, the reference wins."""
    fast = FAST_VALIDATORS.get(name)
    if fast is not None:
        try:
            fast(body)
            return
        except Exception:  # noqa: BLE001 - any refusal of the fast path is re-checked below
            pass
    validator = VALIDATORS[name]
    if validator.is_valid(body):
        return
    error = best_match(validator.iter_errors(body))
    raise BadRequest(describe(error))


def is_id_key(key: str) -> bool:
    return key.endswith("_id") or key.endswith("_ids")


def convert_ids(value: Any, path: str = "", under_id: bool = False) -> Any:
    """A copy of ``value`` in which the strings under keys ending in ``_id``/``_ids`` (at any
    depth below such a key, so ``{"_id": {"$in": [...]}}`` works as in 0.10) are ObjectIds.

    :class:`BadRequest` names the first string that is not an id."""
    if isinstance(value, dict):
        return {
            k: convert_ids(v, path_text([k], path), under_id or is_id_key(k)) for k, v in value.items()
        }
    if isinstance(value, list):
        return [convert_ids(v, f"{path}[{i}]", under_id) for i, v in enumerate(value)]
    if under_id and isinstance(value, str):
        try:
            return ObjectId(value)
        except (InvalidId, TypeError):
            raise BadRequest(f"{path}: {value[:60]!r} is not a valid id (24 hex digits)") from None
    return value


def check_storable(value: Any, path: str, depth: int = 0) -> None:
    """Refuse what a client may put into free-form objects (``parameters``,
    ``connector_access``, ...) but MongoDB cannot store as given: keys starting with ``$``,
    keys with ``.`` or NUL, nesting deeper than :data:`MAX_DEPTH`."""
    if depth > MAX_DEPTH:
        raise BadRequest(f"{path}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            if key.startswith("$") or "." in key or "\x00" in key:
                raise BadRequest(f"{path_text([key], path)}: keys may not start with '$' or contain '.' or NUL")
            if isinstance(item, (dict, list)):
                check_storable(item, path_text([key], path), depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, (dict, list)):
                check_storable(item, f"{path}[{i}]", depth + 1)
