"""The one place where errors become JSON answers, and the refusals of the web layer itself.

The domain raises :mod:`ccserver.errors`; the storage layer its own errors; both, and the
few refusals that only HTTP knows (:class:`WebError`), meet in :data:`ANSWERS`."""

from __future__ import annotations

import json
from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure
from werkzeug.exceptions import HTTPException

from ccserver.errors import Invalid, NotAllowed, NotFound, Unauthenticated, Unavailable
from ccserver.storage.base import QueryError, StorageUnavailable

log = Logger(namespace="ccserver.http")


class WebError(Exception):
    """A refusal that only the web layer knows of (no such endpoint, a body that is not
    JSON, a server too busy to read it); ``message`` is for the client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NoSuchEndpoint(WebError):
    pass


class UnsupportedMediaType(WebError):
    pass


class Busy(WebError):
    pass


#: exception kind -> (status, how its message is written); the most specific kind in an
#: exception's MRO wins.  The one place where errors become status codes.
ANSWERS: dict[type[BaseException], tuple[int, str]] = {
    Invalid: (400, "{}"),
    Unauthenticated: (401, "{}"),
    NotAllowed: (403, "{}"),
    NotFound: (404, "{}"),
    Unavailable: (503, "{}"),
    NoSuchEndpoint: (404, "{}"),
    UnsupportedMediaType: (415, "{}"),
    Busy: (503, "{}"),
    QueryError: (400, "query refused: {}"),
    StorageUnavailable: (503, "database unavailable: {}"),
}


def answer_for(error: BaseException) -> tuple[int, str] | None:
    """``(status, message)`` of the answer to ``error``; ``None`` when it is none of ours to
    answer (a bug: a 500)."""
    for kind in type(error).__mro__:
        entry = ANSWERS.get(kind)
        if entry is not None:
            status, text = entry
            return status, text.format(error)
    return None


def write_json(request: Any, status: int, body: Any, rendered: bytes | None = None) -> bytes:
    """Set status and type; the JSON of ``body``, or ``rendered`` when already encoded."""
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    data = rendered if rendered is not None else json.dumps(body).encode()
    if rendered is not None:
        request.setHeader(b"content-length", b"%d" % len(data))
    return data


def render_failure(request: Any, failure: Failure) -> bytes:
    """Map any failure of a route to a JSON answer; unknown ones are logged and become a 500
    without details (a bug of ours, never something the client sent).

    A 401 carries no ``WWW-Authenticate`` challenge, as in 0.10: a ``Basic`` challenge makes a
    browser show its own login dialog over CC-UI's form (headless, the request then hangs) and
    remember what is typed there for every later request to this server, cross-site form posts
    included (docs/authentication.rst)."""
    error = failure.value
    answer = answer_for(error)
    if answer is not None:
        return write_json(request, answer[0], {"error": answer[1]})
    if isinstance(error, HTTPException):
        code = error.code or 500
        message = {404: "no such endpoint", 405: "method not allowed for this endpoint"}.get(code, error.name)
        valid_methods = getattr(error, "valid_methods", None)  # only a MethodNotAllowed has them
        if code == 405 and valid_methods:
            request.setHeader(b"allow", ", ".join(valid_methods).encode())
        return write_json(request, code, {"error": message})
    log.failure("unhandled error in {method} {path}", failure, method=request.method, path=request.path)
    return write_json(request, 500, {"error": "internal server error"})
