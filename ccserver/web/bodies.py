"""Reading request bodies: bytes → JSON object → validated → ids converted.

Everything here turns client mistakes into :class:`~ccserver.errors.Invalid` with a
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
from typing import Any

from jsonschema import ValidationError
from jsonschema.exceptions import best_match

from ccserver.document_checks import MAX_DEPTH, json_type
from ccserver.errors import Invalid
from ccserver.keypaths import path_text
from ccserver.web.content_type import require_json
from ccserver.web.schemas import FAST_VALIDATORS, VALIDATORS

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


#: bodies larger than this are parsed piece by piece (see :func:`_parse_in_pieces`)
PIECEWISE_BYTES = 256 * 1024
#: how much of a body one regular expression search looks at: ``re`` holds the GIL for a
#: whole search, and so would stop the reactor thread for a search over 8 MiB
_SEARCH_WINDOW = 64 * 1024
_WHITESPACE = re.compile(r"[ \t\n\r]*")


def _search(pattern: re.Pattern[bytes], raw: bytes, longest: int = 32) -> bool:
    """``pattern.search(raw)`` in windows (a match is at most ``longest`` bytes long)."""
    if len(raw) <= _SEARCH_WINDOW:
        return pattern.search(raw) is not None
    return any(
        pattern.search(raw, start, start + _SEARCH_WINDOW + longest) is not None
        for start in range(0, len(raw), _SEARCH_WINDOW)
    )


def _parse_in_pieces(text: str, decoder: json.JSONDecoder) -> Any:
    """The JSON object ``text``, parsed one member (and one element of an array member) at a
    time, or ``None`` where this does not simply work out (the caller then parses the
    whole with ``json.loads``, for the same value or the same error as ever).

    ``json.loads`` is a single C call that holds the GIL for all of an 8 MiB body (hundreds of
    milliseconds on a loaded machine): even in a pool thread, the reactor thread could not run
    meanwhile.  Small C calls, one per task, let it in between."""
    scan = decoder.raw_decode

    def skip(text: str, i: int) -> int:
        """The index after the whitespace at ``i`` (``[ \t\n\r]*`` always matches)."""
        return _WHITESPACE.match(text, i).end()  # type: ignore[union-attr]  # the pattern matches the empty string

    end = len(text)
    i = skip(text, 0)
    if i >= end or text[i] != "{":
        return None
    body: dict[str, Any] = {}
    i = skip(text, i + 1)
    if i < end and text[i] == "}":
        i += 1
    else:
        while True:
            if i >= end or text[i] != '"':
                return None
            key, i = scan(text, i)
            i = skip(text, i)
            if i >= end or text[i] != ":":
                return None
            i = skip(text, i + 1)
            if i < end and text[i] == "[":
                items: list[Any] = []
                i = skip(text, i + 1)
                if i < end and text[i] == "]":
                    i += 1
                else:
                    while True:
                        item, i = scan(text, i)
                        items.append(item)
                        i = skip(text, i)
                        if i < end and text[i] == ",":
                            i = skip(text, i + 1)
                            continue
                        if i < end and text[i] == "]":
                            i += 1
                            break
                        return None
                value: Any = items
            else:
                value, i = scan(text, i)
            body[key] = value
            i = skip(text, i)
            if i < end and text[i] == ",":
                i = skip(text, i + 1)
                continue
            if i < end and text[i] == "}":
                i += 1
                break
            return None
    if skip(text, i) != end:
        return None
    return body


def parse(raw: bytes) -> dict[str, Any]:
    """The JSON object in ``raw``; :class:`Invalid` for anything else."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Invalid(f"the body is not UTF-8 text: {e.reason} at byte {e.start}") from None
    hooks: dict[str, Any] = {"parse_constant": _refuse_constant}
    if _search(_RISKY_NUMBER, raw):
        hooks.update(parse_int=_checked_int, parse_float=_checked_float)
    body = None
    if len(raw) > PIECEWISE_BYTES:
        try:
            body = _parse_in_pieces(text, json.JSONDecoder(**hooks))
        except (ValueError, RecursionError):
            body = None  # json.loads below says what is wrong, in its words
    try:
        if body is None:
            body = json.loads(text, **hooks)
    except RecursionError:
        raise Invalid(f"the body is nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as e:
        raise Invalid(f"the body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise Invalid(f"the body must be a JSON object, not {json_type(body)}")
    if _search(_SURROGATE, raw):
        try:
            json.dumps(body, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise Invalid("the body holds a string with a lone UTF-16 surrogate (\\ud800-\\udfff)") from None
        except RecursionError:
            raise Invalid(f"the body is nested deeper than {MAX_DEPTH} levels") from None
    return body


def size(request: Any) -> int:
    """The length of the body of a twisted.web request, without reading it."""
    content = request.content
    content.seek(0, 2)
    return content.tell()


def read(request: Any) -> dict[str, Any]:
    """Parse the body of a twisted.web request (already limited in size by CCSite)."""
    require_json(request)
    content = request.content
    content.seek(0)
    return parse(content.read())


def describe(error: ValidationError) -> str:
    where = path_text(error.absolute_path) or "(body)"
    return f"{where}: {_short(error.message)}"


def _short(message: str, limit: int = 300) -> str:
    return message if len(message) <= limit else message[:limit] + "..."


def validate(name: str, body: Any) -> None:
    """Raise :class:`Invalid` naming the most relevant violation of schema ``name``
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
    raise Invalid(describe(error))
