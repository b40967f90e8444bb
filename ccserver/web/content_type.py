"""Request bodies must say they are JSON: the cross-site form post defence.

A page on any origin can make a browser POST a form to the API without asking first: the
types a form can send (``application/x-www-form-urlencoded``, ``multipart/form-data``,
``text/plain``) are the CORS-"simple" ones, which need no preflight.  A ``text/plain`` form can
even carry a valid JSON body.  If the browser holds credentials for the API (typed into its
own login dialog, or in an ``http://user:password@...`` address), they go along.  A request
that declares ``application/json`` is one that no form can send; a page on another origin
can only send it after a preflight that ``server.cors_origins`` controls.

Accepted: ``application/json`` and the structured-syntax types ``application/<x>+json``
(RFC 6839; equally impossible for a form), in any letter case; a ``charset`` parameter, if
given, must be ``utf-8`` (bodies are read as UTF-8 and nothing else); other parameters are
ignored.  Anything else, a missing
type included, is refused with 415 before the body is read.  This is also what 0.10 (Flask's
``request.get_json()``) accepted.
"""

from __future__ import annotations

from typing import Any

from werkzeug.http import parse_options_header

from ccserver.web.errors import UnsupportedMediaType

EXPECTED = "application/json"


def is_json_type(media_type: str) -> bool:
    """``application/json`` or ``application/<anything>+json`` (already lower case)."""
    if media_type == EXPECTED:
        return True
    top, _, sub = media_type.partition("/")
    return top == "application" and sub.endswith("+json") and len(sub) > len("+json") and "/" not in sub


def check(values: list[bytes] | None) -> None:
    """Raise :class:`UnsupportedMediaType` unless ``values`` (the raw ``Content-Type``
    headers of a request) declare exactly one JSON type in UTF-8."""
    if not values:
        raise UnsupportedMediaType(f"the body must be sent with Content-Type: {EXPECTED} (none was given)")
    if len(values) > 1:
        raise UnsupportedMediaType(f"the request has {len(values)} Content-Type headers; send one: {EXPECTED}")
    text = values[0].decode("latin-1")
    media_type, options = parse_options_header(text)
    media_type = media_type.lower()
    if not is_json_type(media_type):
        shown = text[:80] + ("..." if len(text) > 80 else "")
        raise UnsupportedMediaType(f"the body must be sent with Content-Type: {EXPECTED}, not {shown!r}")
    charset = options.get("charset")
    if charset is not None and charset.lower() not in ("utf-8", "utf8"):
        raise UnsupportedMediaType(f"the body must be UTF-8 ({EXPECTED}; charset=utf-8), not charset={charset[:40]!r}")


def require_json(request: Any) -> None:
    """The check for a twisted.web request: call it before reading a body."""
    check(request.requestHeaders.getRawHeaders(b"content-type"))
