"""The REST API of cc-protocol.md §4 as a Klein application.

Every route reads the same way: authenticate (the guard of :func:`ccserver.web.routes.authorized_route`, before
the handler runs) → parse and validate the body → one domain call → JSON with ids as hex
strings and secrets masked.  Errors are exceptions (:mod:`ccserver.errors` from the domain);
``_errors`` hands every one of them to :func:`ccserver.web.errors.render_failure`, the one
place they become answers.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable
from typing import Any, Protocol

from klein import Klein
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import IResource
from werkzeug.routing import RequestRedirect

from ccserver import __version__, queries, tasks
from ccserver.auth.guard import Authenticator, User
from ccserver.collector import CollectorPause
from ccserver.config import Config
from ccserver.document_checks import check_storable, convert_ids
from ccserver.documents import to_client
from ccserver.errors import DomainError, Invalid, QueryRefused, Unavailable
from ccserver.livelogs import task_logs
from ccserver.storage.base import StorageError, Store
from ccserver.tes import kube_staging
from ccserver.tes.kube_staging import StagingExchange
from ccserver.vault import Vault
from ccserver.web import bodies, dashboard, dashboard_files, openapi
from ccserver.web.cors import CORSPolicy, CORSResource
from ccserver.web.errors import NoSuchEndpoint, WebError, render_failure, write_json
from ccserver.web.offload import RequestWork
from ccserver.web.query_cache import QueryCache
from ccserver.web.root import build_root
from ccserver.web.routes import authorized_route
from ccserver.web.tes_routes import TesApi

log = Logger(namespace="ccserver.http")

#: query answers with more documents than this are encoded in the request pool
INLINE_ANSWER_DOCUMENTS = 1000


class Cluster(Protocol):
    def nodes_status(self) -> Deferred[dict[str, Any]]: ...

    def node_names(self) -> list[str]: ...

    def recheck(self, names: list[str]) -> Deferred[Any]: ...


class Scheduler(Protocol):
    def wake(self) -> None: ...


class CallbackHandler(Protocol):
    """``ccserver.callbacks.Callbacks``: checks the callback key, records, answers."""

    def handle(self, collection: str, body: dict[str, Any]) -> Awaitable[dict[str, Any]]: ...


class API:
    """Routes of cc-protocol.md §4; one instance per daemon."""

    app = Klein()
    # no redirects: "/tasks/" and "//tasks" are the same route as "/tasks" (a client that
    # POSTs a body must not be sent elsewhere)
    app.url_map.strict_slashes = False
    app.url_map.merge_slashes = False

    def __init__(
        self,
        config: Config,
        store: Store,
        auth: Authenticator,
        cluster: Cluster,
        scheduler: Scheduler,
        clock: tasks.Timer,
        vault: Vault,
        callbacks: CallbackHandler | None = None,
        work: RequestWork | None = None,
        collector: CollectorPause | None = None,
        lifecycle: tasks.Canceller | None = None,
        tes: TesApi | None = None,
        logs: task_logs.Logs | None = None,
        staging: StagingExchange | None = None,
    ) -> None:
        """``lifecycle`` cancels tasks (:class:`ccserver.lifecycle.Lifecycle`; without one,
        cancels are answered 503, as callbacks are without ``callbacks``).  ``logs``: the live
        logs of running containers (without it, only kept tails).  ``staging``: the staging
        areas of TES tasks on Kubernetes clusters, which their pods read and fill (without it,
        ``/tes-staging`` answers 404)."""
        self.config = config
        self.store = store
        self.auth = auth
        self.cluster = cluster
        self.scheduler = scheduler
        self.clock = clock
        self.query_cache = QueryCache(clock, config.server.query_cache_seconds)
        #: the callback handler (None: callbacks answered 503, as in API-only tests)
        self.callbacks = callbacks
        self.lifecycle = lifecycle
        self.vault = vault
        self.submitter = tasks.Submitter(store, clock, vault)
        self.cors = CORSPolicy(config.server.cors_origins)
        #: where parsing, validation and answer encoding of large requests run
        self.work = work or RequestWork(None, config.server.inline_body_bytes)
        #: paused while a large request's documents are alive (see ccserver.collector)
        self.collector = collector
        self.logs = logs if logs is not None else task_logs.NoLogs()
        self._openapi = json.dumps(openapi.document(config.server.api_prefix)).encode()
        #: the GA4GH TES routes (None: ``[tes] enabled = false``, or an API-only test)
        self.tes = tes
        self.staging = staging
        self._dashboard_files = dashboard_files.DashboardFiles(dashboard_files.load())
        self._activity = dashboard.ActivityCache(clock)

    def resource(self) -> IResource:
        """The site root: CORS around the Klein app, mounted under the prefix, static files
        around that (see :mod:`ccserver.web.root`)."""
        api = CORSResource(self.app.resource(), self.cors)
        segments = {rule.rule.strip("/").split("/")[0] for rule in self.app.url_map.iter_rules()}
        server = self.config.server
        return build_root(api, server.api_prefix, server.static_dir, segments - {""})

    @app.handle_errors(Exception)
    def _errors(self, request: Any, failure: Failure) -> bytes:
        if failure.check(RequestRedirect):
            failure = Failure(NoSuchEndpoint("no such endpoint"))
        return render_failure(request, failure)

    # --- helpers --------------------------------------------------------------------------

    def _answer(self, request: Any, body: Any, mask: bool = True) -> bytes:
        data = write_json(request, 200, to_client(body, mask))
        # a known length spares the client the chunked encoding
        request.setHeader(b"content-length", b"%d" % len(data))
        return data

    async def _answer_sized(self, request: Any, body: Any, large: bool, mask: bool = True) -> bytes:
        """:meth:`_answer`, encoded in the request pool when ``large`` (a batch's answer holds
        an id per task)."""
        if not large or self.work.pool is None:
            return self._answer(request, body, mask)
        data = await self.work.run_large(_encode, body, mask)
        return write_json(request, 200, None, data)

    async def _body(self, request: Any, schema: str, then: Any = None) -> dict[str, Any]:
        """The body, parsed and validated against ``schema`` (and passed through ``then``),
        in the request pool when it is large."""
        return await self.work.run(bodies.size(request), _read_body, request, schema, then)

    def _pause_collector(self, size: int) -> Any:
        """Hold the collector off while a large request's documents live; the release."""
        if self.collector is None or not self.work.large(size):
            return lambda: None
        return self.collector.hold()

    # --- server ---------------------------------------------------------------------------

    @app.route("/", methods=["GET"])
    def root(self, request: Any) -> bytes:
        return write_json(request, 200, {"version": __version__})

    @app.route("/openapi.json", methods=["GET"])
    def openapi_document(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        return self._openapi

    @authorized_route(app, "/token", methods=["GET"], tokens=False)
    async def token(self, request: Any, user: User) -> bytes:
        token, valid_for = await self.auth.issue_token(request, user)
        seconds = int(valid_for) if float(valid_for).is_integer() else valid_for
        return self._answer(request, {"token": token, "valid_for_seconds": seconds})

    # --- nodes ----------------------------------------------------------------------------

    @authorized_route(app, "/nodes", methods=["GET"])
    async def nodes(self, request: Any, user: User) -> bytes:
        return self._answer(request, await self.cluster.nodes_status())

    @authorized_route(app, "/nodes", methods=["POST"], admin_only="re-check nodes")
    async def recheck_nodes(self, request: Any, user: User) -> bytes:
        body = await self._body(request, "Nodes")
        names = list(dict.fromkeys(node["name"] for node in body["nodes"]))
        known = set(self.cluster.node_names())
        unknown = [name for name in names if name not in known]
        if unknown:
            raise Invalid(f"unknown node: {unknown[0]}")
        await self.cluster.recheck(names)
        return self._answer(request, {})

    # --- tasks ----------------------------------------------------------------------------

    @authorized_route(app, "/tasks", methods=["POST"])
    async def submit_tasks(self, request: Any, user: User) -> bytes:
        size = bodies.size(request)
        release = self._pause_collector(size)
        try:
            submission = await self.work.run(size, _submission, request, user, self.clock.seconds(), self.vault)
            answer = await self.submitter.enqueue(submission)
            del submission
            self.scheduler.wake()
            return await self._answer_sized(request, answer, self.work.large(size))
        finally:
            release()

    @authorized_route(app, "/tasks/cancel", methods=["POST"])
    async def cancel_tasks(self, request: Any, user: User) -> bytes:
        size = bodies.size(request)
        release = self._pause_collector(size)
        try:
            batch, ids = await self.work.run(size, _cancellation, request)
            if self.lifecycle is None:
                raise Unavailable("tasks cannot be cancelled: this server has no scheduler")
            # the life cycle wakes the scheduler when it cancelled something
            result = await tasks.cancel(self.store, user, ids, self.lifecycle)
            answer = {"tasks": result} if batch else result[0]
            return await self._answer_sized(request, answer, self.work.large(size))
        finally:
            release()

    @authorized_route(app, "/tasks/<task_id>/logs", methods=["GET"])
    async def task_logs(self, request: Any, user: User, task_id: str) -> bytes:
        """Live logs (an extension beyond 0.10): the task's application container output."""
        since, tail = task_logs.parse_query(request.args)
        answer = await task_logs.task_logs(self.store, self.logs, user, task_id, since, tail)
        return self._answer(request, answer, mask=False)

    # --- queries --------------------------------------------------------------------------

    async def _query(self, request: Any, user: User, collection: str) -> bytes:
        body = await self._body(request, "Query")
        pipeline = queries.vet(body["aggregate"], _scope(user))
        key = self.query_cache.key(collection, _scope(user), pipeline)
        generation = self.store.generation(collection)
        cached = self.query_cache.get(key, generation)
        if cached is None:
            running = self.query_cache.join(key, generation)
            if running is not None:
                try:
                    cached = await running
                except (DomainError, WebError):
                    raise
                except Exception:
                    # the other request broke off (its client left, say): run it here
                    self.query_cache.join(key, generation)
        if cached is not None:
            return write_json(request, 200, None, cached)
        limit = self.config.server.query_max_documents
        try:
            docs = await self.store.aggregate(
                collection,
                pipeline,
                max_documents=limit + 1,
                timeout=self.config.server.query_timeout_seconds,
            )
            if len(docs) > limit:
                raise QueryRefused(f"query returns more than {limit} documents; add $limit")
        except BaseException as e:
            self.query_cache.fail(key, generation, e)
            raise
        answer = await self._answer_sized(request, {collection: docs}, len(docs) > INLINE_ANSWER_DOCUMENTS)
        self.query_cache.put(key, generation, answer)
        return answer

    @authorized_route(app, "/tasks/query", methods=["POST"])
    def query_tasks(self, request: Any, user: User) -> Any:
        return self._query(request, user, "tasks")

    @authorized_route(app, "/task-groups/query", methods=["POST"])
    def query_task_groups(self, request: Any, user: User) -> Any:
        return self._query(request, user, "task_groups")

    @authorized_route(app, "/application-containers/query", methods=["POST"])
    def query_application_containers(self, request: Any, user: User) -> Any:
        return self._query(request, user, "application_containers")

    @authorized_route(app, "/data-containers/query", methods=["POST"])
    def query_data_containers(self, request: Any, user: User) -> Any:
        return self._query(request, user, "data_containers")

    # --- GA4GH TES (ccserver.web.tes_routes) ------------------------------------------------

    @app.route("/ga4gh/tes/v1/", branch=True)
    def tes_current(self, request: Any) -> IResource:
        if self.tes is None:
            raise NoSuchEndpoint("no such endpoint (the TES API is not enabled)")
        return self.tes.current_resource

    @app.route("/v1/", branch=True)
    def tes_legacy(self, request: Any) -> IResource:
        if self.tes is None:
            raise NoSuchEndpoint("no such endpoint (the TES API is not enabled)")
        return self.tes.legacy_resource

    # --- the dashboard (docs/dashboard.rst) ---------------------------------------------

    @app.route("/ui/", branch=True, methods=["GET", "HEAD"])
    def dashboard_page(self, request: Any) -> IResource:
        # public: the page itself holds no data; it logs in with GET /token
        return self._dashboard_files

    @authorized_route(app, "/dashboard/me", methods=["GET"])
    def dashboard_me(self, request: Any, user: User) -> bytes:
        return self._answer(request, {"username": user.username, "is_admin": user.is_admin})

    @authorized_route(app, "/activity", methods=["GET"])
    async def activity(self, request: Any, user: User) -> bytes:
        answer = await dashboard.activity(self.store, user, self._activity, request.args)
        return self._answer(request, answer)

    @authorized_route(app, "/dashboard/tasks", methods=["GET"])
    async def dashboard_tasks(self, request: Any, user: User) -> bytes:
        return self._answer(request, await dashboard.tasks(self.store, user, request.args))

    @authorized_route(app, "/dashboard/tasks/<kind>/<task_id>", methods=["GET"])
    async def dashboard_task(self, request: Any, user: User, kind: str, task_id: str) -> bytes:
        return self._answer(request, await dashboard.task(self.store, user, kind, task_id))

    # --- container callbacks (cc-protocol.md §7) -------------------------------------------

    async def _callback(self, request: Any, collection: str) -> bytes:
        # no user authentication: the callback key in the body is checked by the handler
        body = await self._body(request, "Callback", _storable_with_ids)
        if self.callbacks is None:
            raise Unavailable("container callbacks are not being accepted yet")
        gone: list[Any] = []
        request.notifyFinish().addBoth(gone.append)
        try:
            answer = await self.callbacks.handle(collection, body)
        except StorageError:
            if gone:
                # the worker gave up waiting (the database was slow or away) and will send the
                # callback again; nobody is left to answer
                log.info("a callback's answer was no longer awaited by its container")
                return b""
            raise
        # unmasked: the worker needs the real input file keys and connector credentials
        return self._answer(request, answer, mask=False)

    @app.route("/application-containers/callback", methods=["POST"])
    def application_container_callback(self, request: Any) -> Any:
        return self._callback(request, "application_containers")

    @app.route("/data-containers/callback", methods=["POST"])
    def data_container_callback(self, request: Any) -> Any:
        return self._callback(request, "data_containers")

    # --- the staging steps of TES tasks' pods (ccserver.tes.kube_staging) -----------------
    # no user: the token in the path is the capability, made for one attempt and known only
    # to its pod

    def _staging(self) -> StagingExchange:
        if self.staging is None:
            raise NoSuchEndpoint("no such staging area")
        return self.staging

    @app.route("/tes-staging/<token>/inputs", methods=["GET"])
    async def staging_inputs(self, request: Any, token: str) -> bytes:
        return self._answer(request, await self._staging().manifest(token), mask=False)

    @app.route("/tes-staging/<token>/inputs/<int:index>", methods=["GET"])
    async def staging_input_piece(self, request: Any, token: str, index: int) -> bytes:
        offset = _offset(request)
        data = await self._staging().input_piece(token, index, offset, kube_staging.PIECE_BYTES)
        request.setHeader(b"content-type", b"application/octet-stream")
        request.setHeader(b"content-length", b"%d" % len(data))
        return data

    @app.route("/tes-staging/<token>/outputs/<int:index>", methods=["POST"])
    async def staging_output_piece(self, request: Any, token: str, index: int) -> bytes:
        args = request.args
        size = await self._staging().output_piece(
            token,
            index,
            _offset(request),
            request.content,
            kube_staging.piece_bytes(self.config.server.max_body_bytes),
            last=args.get(b"last") == [b"1"],
            is_dir=args.get(b"dir") == [b"1"],
            name=_arg_text(args.get(b"name", [b""])[0]),
            missing=args.get(b"missing") == [b"1"],
        )
        return self._answer(request, {"size": size}, mask=False)


def _offset(request: Any) -> int:
    raw = request.args.get(b"offset", [b"0"])[0]
    if not raw.isdigit() or len(raw) > 18:
        raise Invalid(f"offset must be a whole number of bytes, got {_arg_text(raw)[:40]!r}")
    return int(raw)


def _arg_text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Invalid("a query argument is not UTF-8") from None


def _scope(user: User) -> str | None:
    """The user name a query is restricted to; ``None`` for admins (they see everything)."""
    return None if user.is_admin else user.username


# --- the CPU work of requests: the same functions inline and in the request pool ----------


def _read_body(request: Any, schema: str, then: Any = None) -> Any:
    body = bodies.read(request)
    bodies.validate(schema, body)
    return then(body) if then is not None else body


def _storable_with_ids(body: dict[str, Any]) -> dict[str, Any]:
    check_storable(body, "")
    return convert_ids(body)


def _submission(request: Any, user: User, now: float, vault: Vault) -> tasks.Submission:
    body = bodies.read(request)
    bodies.validate("Tasks" if "tasks" in body else "Task", body)
    return tasks.prepare(user, body, now, vault)


def _cancellation(request: Any) -> tuple[bool, list[Any]]:
    body = bodies.read(request)
    batch = "tasks" in body
    bodies.validate("CancelMany" if batch else "CancelOne", body)
    body = convert_ids(body)
    return batch, [t["_id"] for t in body["tasks"]] if batch else [body["_id"]]


def _encode(body: Any, mask: bool) -> bytes:
    """What ``json.dumps`` writes, by its pure-Python encoder: the C one would hold the GIL
    for all of a large answer, and so stop the reactor thread too."""
    return "".join(json.JSONEncoder().iterencode(to_client(body, mask))).encode()
