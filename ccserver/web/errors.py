"""Errors a route may raise, and the one place that turns them into JSON answers."""

from __future__ import annotations

import json
from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure
from werkzeug.exceptions import HTTPException

from ccserver.storage.base import QueryError, StorageUnavailable

log = Logger(namespace="ccserver.http")


class APIError(Exception):
    """An answer other than 2xx that the client caused or must know about."""

    status = 400

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class BadRequest(APIError):
    status = 400


class Unauthorized(APIError):
    status = 401


class Forbidden(APIError):
    status = 403


class NotFoundError(APIError):
    status = 404


class ServiceUnavailable(APIError):
    status = 503


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
    if isinstance(error, APIError):
        return write_json(request, error.status, {"error": error.message})
    if isinstance(error, HTTPException):
        code = error.code or 500
        message = {404: "no such endpoint", 405: "method not allowed for this endpoint"}.get(code, error.name)
        valid_methods = getattr(error, "valid_methods", None)  # only a MethodNotAllowed has them
        if code == 405 and valid_methods:
            request.setHeader(b"allow", ", ".join(valid_methods).encode())
        return write_json(request, code, {"error": message})
    if isinstance(error, StorageUnavailable):
        return write_json(request, 503, {"error": f"database unavailable: {error}"})
    if isinstance(error, QueryError):
        return write_json(request, 400, {"error": f"query refused: {error}"})
    log.failure("unhandled error in {method} {path}", failure, method=request.method, path=request.path)
    return write_json(request, 500, {"error": "internal server error"})
