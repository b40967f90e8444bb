"""The MongoDB store: txmongo against MongoDB (or a server speaking its protocol, e.g. FerretDB).

Every call is bounded by ``MongoConfig.timeout_seconds``: txmongo waits for a connection when
the server is down, so without a bound a request would hang; when the bound is reached (or the
connection fails) the call fails with :class:`StorageUnavailable`, which the web layer answers
with 503.  txmongo keeps reconnecting in the background.

Indexes (one per field of :data:`~ccserver.storage.base.COLLECTIONS`) are created in
``startService``.  A database that is down at start must not keep the daemon from starting:
the attempt is logged and repeated every ``INDEX_RETRY_SECONDS``, at most
``INDEX_MAX_ATTEMPTS`` times.

FerretDB 1.24 implements only part of the aggregation language (see the report in
``tests/storage/test_contract.py``); what it refuses is a :class:`QueryError` like any other
pipeline the server rejects.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import bson
from pymongo.errors import (
    AutoReconnect,
    ConnectionFailure,
    DuplicateKeyError,
    ExecutionTimeout,
    OperationFailure,
    PyMongoError,
)
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredList,
    TimeoutError,
    fail,
    maybeDeferred,
    succeed,
)
from twisted.internet.error import ConnectError, ConnectionClosed
from twisted.logger import Logger
from twisted.python.failure import Failure
from txmongo import filter as qf
from txmongo.connection import ConnectionPool
from txmongo.errors import TimeExceeded

from ccserver.config import MongoConfig
from ccserver.storage.base import (
    COLLECTIONS,
    Document,
    Filter,
    OperationObserver,
    Pipeline,
    QueryError,
    QueryTimeout,
    Sort,
    StorageError,
    StorageUnavailable,
    Store,
    Update,
    timed,
    tracks_writes,
)
from ccserver.storage.updates import validate_update

INDEX_RETRY_SECONDS = 30.0
INDEX_MAX_ATTEMPTS = 20
#: MongoDB's error code for an operation that exceeded maxTimeMS
MAX_TIME_MS_EXPIRED = 50
_UNAVAILABLE = (AutoReconnect, ConnectionFailure, ConnectError, ConnectionClosed, TimeExceeded)


class MongoStore(Store):
    kind = "mongodb"
    log = Logger()

    def __init__(self, config: MongoConfig, reactor: Any, observer: OperationObserver | None = None) -> None:
        self.observer = observer
        self.config = config
        self._reactor = reactor
        self._pool: ConnectionPool | None = None
        self._index_call: Any = None
        self._index_attempts = 0
        #: True once every index exists (tests and health reports may look)
        self.indexes_ready = False
        self._index_waiters: list[Deferred[None]] = []

    # --- service ------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        # retry_delay/max_delay: how fast txmongo reconnects after the server went away
        self._pool = ConnectionPool(self.config.uri, retry_delay=0.5, max_delay=5.0)
        self._index_attempts = 0
        self._create_indexes()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._index_call is not None and self._index_call.active():
            self._index_call.cancel()
        self._index_call = None
        pool, self._pool = self._pool, None
        if pool is None:
            return succeed(None)
        d: Deferred[None] = maybeDeferred(pool.disconnect)
        d.addErrback(lambda f: self.log.failure("disconnecting from MongoDB", f))
        return d

    def _create_indexes(self) -> None:
        self._index_call = None
        self._index_attempts += 1
        steps = [
            self._guard(  # ignore: mypy cannot type a lambda with default arguments
                lambda c=collection, f=name: self._collection(c).create_index(qf.sort(qf.ASCENDING(f)))  # type: ignore[misc]
            )
            for collection, fields in COLLECTIONS.items()
            for name in fields
        ]
        d = _all(steps)

        def done(_: Any) -> None:
            self.indexes_ready = True
            waiters, self._index_waiters = self._index_waiters, []
            for waiter in waiters:
                waiter.callback(None)

        def failed(failure: Failure) -> None:
            if not self.running:
                return
            if self._index_attempts >= INDEX_MAX_ATTEMPTS:
                self.log.error(
                    "giving up creating MongoDB indexes after {n} attempts: {e}",
                    n=self._index_attempts,
                    e=failure.getErrorMessage(),
                )
                return
            self.log.warn(
                "cannot create MongoDB indexes yet ({e}); retrying in {s} s",
                e=failure.getErrorMessage(),
                s=INDEX_RETRY_SECONDS,
            )
            self._index_call = self._reactor.callLater(INDEX_RETRY_SECONDS, self._create_indexes)

        d.addCallbacks(done, failed)

    def when_indexed(self) -> Deferred[None]:
        """Fire once the indexes exist (never, if creating them is given up; add a timeout)."""
        if self.indexes_ready:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._index_waiters.append(d)
        return d

    def drop_database(self) -> Deferred[None]:
        """Remove the configured database (for tests that use a throw-away database)."""
        # ignore: only called on a started store, whose pool is set
        d = self._guard(lambda: self._pool[self.config.db].command("dropDatabase"))  # type: ignore[index]
        d.addCallback(lambda _: None)
        return d

    # --- plumbing -----------------------------------------------------------------------

    def _collection(self, name: str) -> Any:
        if self._pool is None:
            raise StorageUnavailable("the MongoDB store is not running")
        return self._pool[self.config.db][name]

    def _guard(self, call: Callable[[], Any], timeout: float | None = None) -> Deferred[Any]:
        """Run ``call`` (which returns a Deferred) bounded in time, with errors mapped."""
        d = maybeDeferred(call)
        seconds = timeout or self.config.timeout_seconds
        d.addTimeout(seconds, self._reactor)
        d.addErrback(self._map_error, seconds)
        return d

    def _map_error(self, failure: Failure, seconds: float) -> Failure:
        e = failure.value
        if isinstance(e, StorageError):
            return failure
        if isinstance(e, (TimeoutError, CancelledError)):
            return Failure(StorageUnavailable(f"MongoDB did not answer within {seconds:g} s"))
        if isinstance(e, _UNAVAILABLE):
            return Failure(StorageUnavailable(f"MongoDB is unavailable: {e}"))
        if isinstance(e, DuplicateKeyError):
            return Failure(QueryError(f"duplicate key: {_message(e)}"))
        if isinstance(e, ExecutionTimeout) or getattr(e, "code", None) == MAX_TIME_MS_EXPIRED:
            return Failure(QueryTimeout(f"the query ran longer than its time limit: {_message(e)}"))
        if isinstance(e, OperationFailure):
            return Failure(QueryError(_message(e)))
        if isinstance(e, (PyMongoError, bson.errors.BSONError, TypeError, ValueError)):
            return Failure(QueryError(f"{type(e).__name__}: {e}"))
        return failure

    # --- the Store interface ------------------------------------------------------------

    @tracks_writes
    @timed
    def insert_many(self, collection: str, docs: Sequence[Document]) -> Deferred[list[Any]]:
        for doc in docs:
            if "_id" not in doc:
                doc["_id"] = bson.ObjectId()
        ids = [doc["_id"] for doc in docs]
        if not docs:
            return succeed([])
        d = self._guard(lambda: self._collection(collection).insert_many(list(docs)))
        d.addCallback(lambda _: ids)
        return d

    @timed
    def find(
        self,
        collection: str,
        filter: Filter,
        *,
        sort: Sort | None = None,
        limit: int = 0,
        projection: Mapping[str, Any] | None = None,
    ) -> Deferred[list[Document]]:
        def call() -> Any:
            order = qf.sort([(name, direction) for name, direction in sort]) if sort else None
            return self._collection(collection).find(
                dict(filter), projection=dict(projection) if projection else None, limit=limit, sort=order
            )

        return self._guard(call)

    @timed
    def count(self, collection: str, filter: Filter) -> Deferred[int]:
        return self._guard(lambda: self._collection(collection).count_documents(dict(filter)))

    @tracks_writes
    @timed
    def update_one(self, collection: str, filter: Filter, update: Update) -> Deferred[int]:
        return self._update("update_one", collection, filter, update)

    @tracks_writes
    @timed
    def update_many(self, collection: str, filter: Filter, update: Update) -> Deferred[int]:
        return self._update("update_many", collection, filter, update)

    def _update(self, method: str, collection: str, filter: Filter, update: Update) -> Deferred[int]:
        try:
            validate_update(update)  # the same subset as the embedded store, so both agree
        except QueryError as e:
            return fail(e)
        d = self._guard(lambda: getattr(self._collection(collection), method)(dict(filter), dict(update)))
        d.addCallback(lambda result: result.matched_count)
        return d

    @tracks_writes
    @timed
    def delete_many(self, collection: str, filter: Filter) -> Deferred[int]:
        d = self._guard(lambda: self._collection(collection).delete_many(dict(filter)))
        d.addCallback(lambda result: result.deleted_count)
        return d

    @timed
    def aggregate(
        self, collection: str, pipeline: Pipeline, *, max_documents: int, timeout: float
    ) -> Deferred[list[Document]]:
        # The server stops at maxTimeMS; the client gives up at the same moment (waiting for a
        # connection included), so the answer comes at the deadline even when the server is
        # slow to notice its own.
        stages = [dict(stage) for stage in pipeline] + [{"$limit": max_documents}]
        d = maybeDeferred(
            lambda: self._collection(collection).aggregate(stages, max_time_ms=max(1, int(timeout * 1000)))
        )
        d.addTimeout(timeout, self._reactor)

        def timed_out(failure: Failure) -> Failure:
            if failure.check(TimeoutError, CancelledError):
                return Failure(QueryTimeout(f"the query ran longer than query_timeout_seconds ({timeout:g} s)"))
            return self._map_error(failure, timeout)

        d.addErrback(timed_out)
        d.addCallback(lambda docs: list(docs)[:max_documents])
        return d

    def ping(self) -> Deferred[None]:
        def call() -> Any:
            if self._pool is None:
                raise StorageUnavailable("the MongoDB store is not running")
            return self._pool[self.config.db].command("ping")

        d = self._guard(call)
        d.addCallback(lambda _: None)
        return d


def _message(e: Exception) -> str:
    details = getattr(e, "details", None) or {}
    return str(details.get("errmsg") or e)


def _all(deferreds: list[Deferred[Any]]) -> Deferred[Any]:
    """Fire when all fired; fail with the first failure (after all have finished)."""
    d = DeferredList(deferreds, consumeErrors=True)

    def check(results: list[tuple[bool, Any]]) -> Any:
        for ok, value in results:
            if not ok:
                return value
        return None

    d.addCallback(check)
    return d
