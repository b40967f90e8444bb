"""Authentication is a route guard (ccserver.web.routes), and errors become answers in one table
(ccserver.web.errors.ANSWERS)."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.python.failure import Failure
from twisted.web.test.requesthelper import DummyRequest

from ccserver import errors
from ccserver.storage.base import QueryError, QueryTimeout, StorageError, StorageUnavailable
from ccserver.web.api import API
from ccserver.web.errors import ANSWERS, Busy, NoSuchEndpoint, UnsupportedMediaType, answer_for, render_failure
from ccserver.web.routes import Authorization, authorization_of
from tests.api import conftest as api_fixtures
from tests.api.conftest import ADMIN, BOB, Server

start_server = api_fixtures.start_server
api_server = api_fixtures.api_server

#: the routes anyone may call: the version, the API's description, and the container
#: callbacks (authenticated by the callback key in their body, not by a user)
#: and the dashboard's page (its files hold no data; the page logs in like any client)
#: and the staging steps of TES pods on clusters (authenticated by the token in their path)
PUBLIC = {
    "root",
    "openapi_document",
    "application_container_callback",
    "data_container_callback",
    "dashboard_page",
    "staging_inputs",
    "staging_input_piece",
    "staging_output_piece",
}
#: branches that hand the request to another Klein app, which guards its own routes
#: (the TES routes: tests/tes/api/test_guard.py)
MOUNTS = {"tes_current", "tes_legacy"}


def _routes() -> dict[str, Any]:
    # Klein names the rule of a branch's sub-paths "<endpoint>_branch"
    names = {rule.endpoint.removesuffix("_branch") for rule in API.app.url_map.iter_rules()}
    return {name: getattr(API, name) for name in names - MOUNTS}


def test_every_route_but_the_public_ones_is_guarded() -> None:
    routes = _routes()
    assert PUBLIC <= set(routes)
    unguarded = {name for name, handler in routes.items() if authorization_of(handler) is None}
    assert unguarded == PUBLIC
    # token, nodes x2, submit, cancel, 4 queries, task logs, and the dashboard's me, tasks, task, activity
    assert len(routes) - len(PUBLIC) == 14


def test_the_guards_say_who_may_pass() -> None:
    routes = _routes()
    assert authorization_of(routes["token"]) == Authorization(tokens=False)  # a token needs the password
    assert authorization_of(routes["recheck_nodes"]) == Authorization(admin_only="re-check nodes")
    for name in ("nodes", "submit_tasks", "cancel_tasks", "query_tasks", "query_data_containers", "task_logs"):
        assert authorization_of(routes[name]) == Authorization()


@pytest_twisted.ensureDeferred
async def test_the_guard_refuses_before_the_handler_reads_anything(api_server: Server) -> None:
    # no credentials and no valid body: the 401 of the guard, not the 415/400 of the handler
    for path in ("/tasks", "/tasks/cancel", "/tasks/query", "/nodes"):
        refused = await api_server.post(path, raw=b"not json", user=None, content_type="text/plain")
        assert (refused.status, refused.json) == (401, {"error": "credentials required (HTTP basic authentication)"})
    # a user who is not an admin: the 403 of the guard comes before the body is looked at
    refused = await api_server.post("/nodes", raw=b"not json", user=BOB, content_type="text/plain")
    assert (refused.status, refused.json) == (403, {"error": "only admins may re-check nodes"})
    # the admin passes the guard and meets the handler's checks
    refused = await api_server.post("/nodes", raw=b"not json", user=ADMIN, content_type="text/plain")
    assert refused.status == 415
    assert api_server.cluster.rechecked == []


@pytest_twisted.ensureDeferred
async def test_the_guard_hands_the_authenticated_user_to_the_handler(api_server: Server) -> None:
    # /token issues the token for the user the guard established: it then works for that user only
    issued = await api_server.get("/token", user=BOB)
    assert issued.status == 200
    token = issued.json["token"]
    assert (await api_server.get("/nodes", user=(BOB[0], token))).status == 200
    assert (await api_server.get("/nodes", user=(ADMIN[0], token))).status == 401


KINDS = [
    (errors.Invalid("a"), 400),
    (errors.Unauthenticated("a"), 401),
    (errors.NotAllowed("a"), 403),
    (errors.NotFound("a"), 404),
    (errors.Unavailable("a"), 503),
    (errors.UnknownTask("a"), 400),
    (errors.NotStorable("a"), 400),
    (errors.BadId("a"), 400),
    (errors.QueryRefused("a"), 400),
    (errors.CallbackRefused("a"), 400),
    (errors.WrongCallbackKey("a"), 401),
    (errors.BadCredentials("a"), 401),
    (NoSuchEndpoint("a"), 404),
    (UnsupportedMediaType("a"), 415),
    (Busy("a"), 503),
]


@pytest.mark.parametrize(("error", "status"), KINDS, ids=[type(e).__name__ for e, _ in KINDS])
def test_each_kind_of_error_has_its_status(error: Exception, status: int) -> None:
    assert answer_for(error) == (status, "a")
    request = DummyRequest([b""])
    body = render_failure(request, Failure(error))
    assert (request.responseCode, body) == (status, b'{"error": "a"}')


def test_every_domain_error_is_in_the_table() -> None:
    def leaves(kind: type) -> set[type]:
        return {kind}.union(*(leaves(sub) for sub in kind.__subclasses__()))

    for kind in leaves(errors.DomainError) - {errors.DomainError}:
        assert answer_for(kind("m")) is not None, kind
    assert errors.DomainError not in ANSWERS  # a new error must pick its kind


def test_storage_errors_keep_their_prefixes_and_bugs_stay_500() -> None:
    assert answer_for(QueryTimeout("took too long")) == (400, "query refused: took too long")
    assert answer_for(QueryError("bad")) == (400, "query refused: bad")
    assert answer_for(StorageUnavailable("gone")) == (503, "database unavailable: gone")
    assert answer_for(StorageError("other")) is None
    assert answer_for(errors.DomainError("no kind")) is None
    assert answer_for(KeyError("x")) is None
    request = DummyRequest([b""])
    request.path = b"/tasks"
    assert render_failure(request, Failure(KeyError("secret"))) == b'{"error": "internal server error"}'
    assert request.responseCode == 500
