"""The REST API as a Klein application: routes only; the work happens in domain modules."""

from __future__ import annotations

import json
from typing import Any

from klein import Klein
from twisted.python.failure import Failure

from ccserver import __version__
from ccserver.storage.base import Store
from ccserver.web.errors import render_failure, write_json


class API:
    """Routes of cc-protocol.md §4; one instance per daemon."""

    app = Klein()

    def __init__(self, store: Store) -> None:
        self.store = store

    def resource(self) -> Any:
        return self.app.resource()

    @app.handle_errors(Exception)
    def _errors(self, request: Any, failure: Failure) -> bytes:
        return render_failure(request, failure)

    @app.route("/", methods=["GET"])
    def root(self, request: Any) -> bytes:
        return write_json(request, 200, {"version": __version__})


def dumps(body: Any) -> bytes:
    return json.dumps(body).encode()
