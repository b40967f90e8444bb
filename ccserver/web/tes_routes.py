"""The GA4GH TES 1.1 routes (``<prefix>/ga4gh/tes/v1``) and their legacy dialect for py-tes
0.4 (``<prefix>/v1``), mounted in :class:`ccserver.web.api.API` as two branches.

Both dialects serve the same tasks through one :class:`~ccserver.tes.tasks.TesTasks`; they
differ only in how a task is written (:mod:`ccserver.tes.views`) and in the service-info.
Each route reads: authenticate (Basic with password or token, ``Bearer``, or the configured
anonymous user) → parse (large bodies in the request pool) → one domain call → JSON.
Errors are answered ``{"error": ..., "message": ...}`` (``message`` is what TES clients
print).  Once a task is stored, nothing but a 200 follows (see :meth:`TesTasks.submit`).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from klein import Klein
from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure
from twisted.web.resource import IResource
from werkzeug.routing import RequestRedirect

from ccserver import __version__
from ccserver.auth.guard import User
from ccserver.errors import Invalid
from ccserver.tes import listing, submission, views
from ccserver.tes.submission import Defaults, Storage
from ccserver.tes.tasks import Clock, TesTasks
from ccserver.web import bodies, tes_openapi
from ccserver.web.errors import NoSuchEndpoint, answer_for, render_failure, write_json
from ccserver.web.offload import RequestWork
from ccserver.web.routes import Authenticates, authorized_route

#: pages with more tasks than this (not MINIMAL) are rendered and encoded in the request pool
INLINE_TASKS = 64
SERVICE_ID = "io.curious-containers.ccserver"


#: what py-tes 0.4 sends when it is given no credentials (requests writes ``(None, None)``
#: as ``None:None``): the Snakemake and Toil plugins do so against a server without users
PY_TES_04_NO_CREDENTIALS = b"Basic " + base64.b64encode(b"None:None")


class AnonymousOrAuthenticated:
    """The TES routes' authenticator: requests with an ``Authorization`` header are checked
    by ``auth``; without one (or with py-tes 0.4's ``None:None``) they act as
    ``anonymous_user`` (never an admin), when set."""

    def __init__(self, auth: Authenticates, anonymous_user: str | None) -> None:
        self.auth = auth
        self.anonymous_user = anonymous_user

    def authenticate(self, request: Any, allow_token: bool = True) -> Deferred[User]:
        header = (request.getHeader(b"authorization") or b"").strip()
        if self.anonymous_user is not None and header in (b"", PY_TES_04_NO_CREDENTIALS):
            request.ccserver_user = self.anonymous_user
            return succeed(User(username=self.anonymous_user, is_admin=False))
        result: Deferred[User] = self.auth.authenticate(request, allow_token=allow_token)
        return result


def _arguments(request: Any) -> dict[str, list[str]]:
    try:
        return {k.decode("utf-8"): [v.decode("utf-8") for v in vs] for k, vs in request.args.items()}
    except UnicodeDecodeError:
        raise Invalid("the query string is not UTF-8") from None


def _one(args: dict[str, list[str]], name: str) -> str | None:
    values = args.get(name) or []
    return values[-1] if values else None


def _encode(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def _render_page(docs: list[dict[str, Any]], view: str, legacy: bool, token: str | None) -> bytes:
    render = views.legacy if legacy else views.render
    answer: dict[str, Any] = {"tasks": [render(doc, view) for doc in docs]}
    if token is not None:
        answer["next_page_token"] = token
    # the pure-Python encoder: the C one would hold the GIL (and so the reactor) for all of it
    return "".join(json.JSONEncoder(separators=(",", ":")).iterencode(answer)).encode()


def _prepare(request: Any, username: str, now: float, storage: Storage, defaults: Defaults) -> submission.Prepared:
    body = bodies.read(request)
    return submission.prepare(username, body, now, storage, defaults)


class TesRoutes:
    """One dialect of the TES API: ``legacy`` False for TES 1.1, True for TES 1.0 / py-tes 0.4."""

    app = Klein()
    app.url_map.strict_slashes = False
    app.url_map.merge_slashes = False

    def __init__(
        self,
        tasks: TesTasks,
        auth: Authenticates,
        work: RequestWork,
        clock: Clock,
        storage: Storage,
        defaults: Defaults,
        *,
        legacy: bool,
        openapi: bytes = b"",
    ) -> None:
        self.tasks = tasks
        self.auth = auth
        self.work = work
        self.clock = clock
        self.storage = storage
        self.defaults = defaults
        self.legacy = legacy
        self._openapi = openapi

    def resource(self) -> IResource:
        return self.app.resource()

    @app.handle_errors(Exception)
    def _errors(self, request: Any, failure: Failure) -> bytes:
        if failure.check(RequestRedirect):
            failure = Failure(NoSuchEndpoint("no such endpoint"))
        answer = answer_for(failure.value)
        if answer is None:
            # a 404/405 of the routing (or a 500): the same answer, with "message" too
            body = json.loads(render_failure(request, failure))
            body.setdefault("message", body.get("error"))
            return _encode(body)
        status, message = answer
        return write_json(request, status, {"error": message, "message": message})

    def _json(self, request: Any, body: Any, rendered: bytes | None = None) -> bytes:
        return write_json(request, 200, None, rendered if rendered is not None else _encode(body))

    def _service_info(self) -> dict[str, Any]:
        return {
            "id": SERVICE_ID,
            "name": "ccserver",
            "type": {"group": "org.ga4gh", "artifact": "tes", "version": "1.1.0"},
            "description": "Curious Containers server: GA4GH TES 1.1 beside the CC-Server 0.10 API",
            "organization": {"name": "Curious Containers", "url": "https://github.com/curious-containers"},
            "documentationUrl": "https://github.com/curious-containers",
            "version": __version__,
            "storage": self.storage.schemes(),
            "tesResources_backend_parameters": sorted(submission.BACKEND_PARAMETERS),
        }

    # --- service ------------------------------------------------------------------------

    @app.route("/service-info", methods=["GET"])
    def service_info(self, request: Any) -> bytes:
        if self.legacy:
            raise NoSuchEndpoint("no such endpoint (the legacy service-info is GET /v1/tasks/service-info)")
        return self._json(request, self._service_info())

    @app.route("/tasks/service-info", methods=["GET"])
    async def legacy_service_info(self, request: Any) -> bytes:
        if not self.legacy:
            # in TES 1.1, this path is a task id: the 404 of an unknown task
            user = await self.auth.authenticate(request)
            await self.tasks.get(user, "service-info")
        return self._json(
            request,
            {
                "name": "ccserver",
                "doc": "Curious Containers server (TES 1.0 dialect for py-tes 0.4; TES 1.1 at /ga4gh/tes/v1)",
                "storage": self.storage.schemes(),
            },
        )

    @app.route("/openapi.json", methods=["GET"])
    def openapi_document(self, request: Any) -> bytes:
        if self.legacy:
            raise NoSuchEndpoint("no such endpoint")
        return self._json(request, None, self._openapi)

    # --- tasks --------------------------------------------------------------------------

    @authorized_route(app, "/tasks", methods=["POST"])
    async def create_task(self, request: Any, user: User) -> bytes:
        size = bodies.size(request)
        prepared = await self.work.run(
            size, _prepare, request, user.username, self.clock.seconds(), self.storage, self.defaults
        )
        task_id = await self.tasks.submit(prepared)
        return self._json(request, {"id": task_id})

    @authorized_route(app, "/tasks", methods=["GET"])
    async def list_tasks(self, request: Any, user: User) -> bytes:
        args = _arguments(request)
        view = views.parse_view(_one(args, "view"))
        query = listing.parse(args)
        docs, token = await self.tasks.list(user, query, minimal=view == views.MINIMAL, legacy=self.legacy)
        if view != views.MINIMAL and len(docs) > INLINE_TASKS:
            rendered = await self.work.run_large(_render_page, docs, view, self.legacy, token)
        else:
            rendered = _render_page(docs, view, self.legacy, token)
        return self._json(request, None, rendered)

    @authorized_route(app, "/tasks/<task_id>", methods=["GET"])
    async def get_task(self, request: Any, user: User, task_id: str) -> bytes:
        view = views.parse_view(_one(_arguments(request), "view"))
        doc = await self.tasks.get(user, task_id, minimal=view == views.MINIMAL)
        render = views.legacy if self.legacy else views.render
        return self._json(request, render(doc, view))

    @authorized_route(app, "/tasks/<task_id>:cancel", methods=["POST"])
    async def cancel_task(self, request: Any, user: User, task_id: str) -> bytes:
        await self.tasks.cancel(user, task_id)
        return self._json(request, {})


class TesApi:
    """Both dialects, as the API mounts them."""

    def __init__(
        self,
        tasks: TesTasks,
        auth: Authenticates,
        work: RequestWork,
        clock: Clock,
        storage: Storage,
        defaults: Defaults = Defaults(),
        *,
        anonymous_user: str | None = None,
        prefix: str = "",
    ) -> None:
        guard = AnonymousOrAuthenticated(auth, anonymous_user)
        document = _encode(tes_openapi.document(prefix, storage.schemes()))
        self.current = TesRoutes(tasks, guard, work, clock, storage, defaults, legacy=False, openapi=document)
        self.legacy = TesRoutes(tasks, guard, work, clock, storage, defaults, legacy=True)
        self.current_resource = self.current.resource()
        self.legacy_resource = self.legacy.resource()
