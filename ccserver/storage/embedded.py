"""The embedded store: documents as BSON blobs in one SQLite file, no server needed.

Layout (one file, WAL mode)::

    documents(rowid, collection, id, data)   -- id: the _id's index key, UNIQUE per collection
    idx(collection, field, value, doc)       -- one row per indexed value / array element

``idx`` is a multikey index over the fields of :data:`~ccserver.storage.base.COLLECTIONS`,
written in the same transaction as the document.  Queries use it only to narrow the candidate
rows (see :mod:`ccserver.storage.pipeline`); every filter is then applied in full by mongomock,
so the semantics are MongoDB's.

Threading: one :class:`~twisted.python.threadpool.ThreadPool` with one thread owns the only
read-write connection, so calls are serialized and none touches SQLite on the reactor thread.
Every write is committed before its Deferred fires.  :meth:`EmbeddedStore.aggregate` (the
users' pipelines of the query endpoints) does not use that thread: it runs in the worker
processes of :class:`~ccserver.storage.query_pool.QueryWorkerPool`, each with a read-only
connection, killed at the query's deadline, so that a hostile pipeline holds up nobody else.

Files: the data directories this store creates are 0700, the database file 0600 (and so its
-wal and -shm files, which SQLite creates with the database file's mode), whatever the umask.
"""

from __future__ import annotations

import functools
import itertools
import os
import sqlite3
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import bson
from bson.binary import UuidRepresentation
from bson.codec_options import CodecOptions
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from ccserver.config import EmbeddedConfig
from ccserver.storage import pipeline as pl
from ccserver.storage.base import (
    COLLECTIONS,
    Document,
    Filter,
    OperationObserver,
    Page,
    Pipeline,
    Position,
    QueryError,
    Sort,
    StorageError,
    StorageUnavailable,
    Store,
    Update,
    timed,
    tracks_writes,
)
from ccserver.storage.query_pool import QueryWorkerPool
from ccserver.storage.updates import apply_update, validate_update

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    rowid INTEGER PRIMARY KEY, collection TEXT NOT NULL, id NOT NULL, data BLOB NOT NULL,
    UNIQUE (collection, id));
CREATE INDEX IF NOT EXISTS documents_by_collection ON documents (collection);
CREATE TABLE IF NOT EXISTS idx (collection TEXT NOT NULL, field TEXT NOT NULL, value NOT NULL,
    doc INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS idx_lookup ON idx (collection, field, value, doc);
CREATE INDEX IF NOT EXISTS idx_by_doc ON idx (doc);
PRAGMA user_version = 1;
"""
MAX_BSON_SIZE = 16 * 1024 * 1024
#: stay well under SQLite's limit on bound parameters; larger $in lists are not pushed down
MAX_SQL_PARAMETERS = 10000
BUSY_TIMEOUT_SECONDS = 5.0
STOP_TIMEOUT_SECONDS = 30.0
#: the same codec options txmongo uses, so both backends hand out the same Python types
CODEC: CodecOptions[Any] = CodecOptions(uuid_representation=UuidRepresentation.STANDARD)


class EmbeddedStore(Store):
    kind = "embedded"
    log = Logger()

    def __init__(
        self,
        config: EmbeddedConfig,
        reactor: Any,
        *,
        busy_timeout: float = BUSY_TIMEOUT_SECONDS,
        observer: OperationObserver | None = None,
    ) -> None:
        self.observer = observer
        if config.synchronous not in ("normal", "full"):
            raise ValueError(f"embedded.synchronous: expected 'normal' or 'full', got {config.synchronous!r}")
        self.config = config
        self.path = Path(config.path)
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name="ccserver-sqlite")
        self._conn: sqlite3.Connection | None = None  # used only in the pool's thread
        self._busy_timeout = busy_timeout
        self._stopped = False
        self._queries = QueryWorkerPool(str(self.path), config.query_workers, config.query_memory_mb, reactor)

    # --- service ------------------------------------------------------------------------

    def startService(self) -> Deferred[None]:
        super().startService()
        self._stopped = False
        self._pool.start()
        d = self._call(self._open)
        d.addCallback(lambda _: self._queries.startService())
        return d

    def stopService(self) -> Deferred[None]:
        """Close after the work already queued is done (bounded), then stop the thread."""
        super().stopService()
        self._stopped = True
        if not self._pool.started:
            return succeed(None)
        d = self._queries.stopService() if self._queries.running else succeed(None)
        d.addCallback(lambda _: deferToThreadPool(self._reactor, self._pool, self._close))
        d.addTimeout(STOP_TIMEOUT_SECONDS, self._reactor)

        def stopped(result: Any) -> None:
            if isinstance(result, Failure):
                self.log.failure("closing the embedded database {path}", result, path=str(self.path))
            self._pool.stop()

        d.addBoth(stopped)
        return d

    def _open(self) -> None:
        private_file(self.path)
        conn = sqlite3.connect(str(self.path), isolation_level=None, timeout=self._busy_timeout)
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StorageError(f"{self.path}: cannot switch the embedded database to WAL mode ({mode})")
            conn.execute(f"PRAGMA synchronous={self.config.synchronous.upper()}")
            conn.executescript(SCHEMA)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _call(self, f: Callable[..., T], *args: Any) -> Deferred[T]:
        if self._stopped:
            return fail(StorageUnavailable("the embedded store is stopped"))
        return deferToThreadPool(self._reactor, self._pool, self._guarded, f, *args)

    def _guarded(self, f: Callable[..., T], *args: Any) -> T:
        """Run ``f`` in the pool thread, turning SQLite errors into :class:`StorageError` s."""
        try:
            return f(*args)
        except StorageError:
            raise
        except sqlite3.IntegrityError as e:
            raise QueryError(f"duplicate key: {e}") from None
        except sqlite3.OperationalError as e:
            message = str(e)
            if "locked" in message or "busy" in message:
                raise StorageUnavailable(
                    f"the embedded database {self.path} is locked (another process is using it?): {message}"
                ) from None
            raise StorageError(f"embedded database {self.path}: {message}") from None
        except (sqlite3.Error, OSError) as e:
            raise StorageError(f"embedded database {self.path}: {e}") from None

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StorageUnavailable(f"the embedded database {self.path} is not open")
        return self._conn

    def _write(self, f: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``f`` in one IMMEDIATE transaction, committed before returning."""
        conn = self._db
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = f(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    # --- the Store interface ------------------------------------------------------------

    @tracks_writes
    @timed
    def insert_many(self, collection: str, docs: Sequence[Document]) -> Deferred[list[Any]]:
        # Ids are set here, in the caller's thread.  A few documents are encoded here too: the
        # stored data is then a snapshot of the call.  Many (a batch of 70,000 tasks costs over
        # a second of BSON and index keys) are encoded in a thread of the reactor's own bounded
        # pool instead, so that neither the reactor thread nor the store's single SQLite thread
        # is held up by it: the caller must then leave the documents alone until the Deferred
        # fires (the submitter does: the documents belong to the request being answered).
        inline_documents = 64

        def rows_of(documents: Sequence[Document]) -> list[Any]:
            return [(d["_id"], _id_key(d["_id"]), _encode(d), _keys(collection, d)) for d in documents]

        try:
            for doc in docs:
                if "_id" not in doc:
                    doc["_id"] = bson.ObjectId()
            if len(docs) <= inline_documents:
                rows = rows_of(docs)
                return self._call(self._write, functools.partial(_insert, collection, rows))
        except StorageError as e:
            return fail(e)
        if self._stopped:
            return fail(StorageUnavailable("the embedded store is stopped"))
        # Written in transactions of ``chunk`` documents, so that other store calls (a
        # GET /nodes, a callback) wait for one of them, not for all: as on MongoDB, a failure
        # part-way keeps the documents before it (ccserver.tasks removes an unanswered batch).
        chunk = 5000
        ids: list[Any] = []

        def write(rows: list[Any], start: int = 0) -> Any:
            if start >= len(rows):
                return ids
            d = self._call(self._write, functools.partial(_insert, collection, rows[start : start + chunk]))
            d.addCallback(ids.extend)
            d.addCallback(lambda _: write(rows, start + chunk))
            return d

        d = deferToThreadPool(self._reactor, self._reactor.getThreadPool(), rows_of, list(docs))
        d.addCallback(write)
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
        return self._call(self._find, collection, filter, sort, limit, projection)

    @timed
    def count(self, collection: str, filter: Filter) -> Deferred[int]:
        return self._call(self._count, collection, filter)

    @tracks_writes
    @timed
    def update_one(self, collection: str, filter: Filter, update: Update) -> Deferred[int]:
        return self._call(self._update, collection, filter, update, 1)

    @tracks_writes
    @timed
    def update_many(self, collection: str, filter: Filter, update: Update) -> Deferred[int]:
        return self._call(self._update, collection, filter, update, None)

    @tracks_writes
    @timed
    def delete_many(self, collection: str, filter: Filter) -> Deferred[int]:
        return self._call(self._delete, collection, filter)

    @timed
    def aggregate(
        self, collection: str, pipeline: Pipeline, *, max_documents: int, timeout: float
    ) -> Deferred[list[Document]]:
        if self._stopped:
            return fail(StorageUnavailable("the embedded store is stopped"))
        return self._queries.aggregate(collection, pipeline, max_documents=max_documents, timeout=timeout)

    def newest(
        self,
        collection: str,
        filter: Filter,
        *,
        field: str,
        before: Position | None,
        limit: int,
        scan_limit: int,
        since: Any = None,
    ) -> Deferred[Page]:
        return self._call(newest_rows, self._db, collection, filter, field, before, limit, scan_limit, since)

    def ping(self) -> Deferred[None]:
        return self._call(self._ping)

    # --- in the pool thread -------------------------------------------------------------

    def _ping(self) -> None:
        self._db.execute("SELECT 1").fetchone()

    def _matching(
        self, collection: str, filter: Filter, deadline: pl.Deadline | None = None
    ) -> Iterator[tuple[int, Document]]:
        return matching(self._db, collection, filter, deadline)

    def _find(
        self,
        collection: str,
        filter: Filter,
        sort: Sort | None,
        limit: int,
        projection: Mapping[str, Any] | None,
    ) -> list[Document]:
        docs = (doc for _, doc in self._matching(collection, filter))
        if sort:
            result = pl.sort_documents(list(docs), sort)
            result = result[:limit] if limit else result
        else:
            result = list(itertools.islice(docs, limit or None))
        return pl.project(result, projection)

    def _count(self, collection: str, filter: Filter) -> int:
        prefilter = pl.plan_filter(filter, COLLECTIONS.get(collection, ()))
        if prefilter.exact and _pushable(prefilter):
            sql, params = _candidates_sql(collection, prefilter, "count(DISTINCT d.rowid)", ordered=False)
            return int(self._db.execute(sql, params).fetchone()[0])
        return sum(1 for _ in self._matching(collection, filter))

    def _update(self, collection: str, filter: Filter, update: Update, limit: int | None) -> int:
        validate_update(update)
        fields = COLLECTIONS.get(collection, ())

        def work(conn: sqlite3.Connection) -> int:
            found = list(itertools.islice(self._matching(collection, filter), limit))
            for rowid, doc in found:
                before = {name: pl.index_keys(doc, name) for name in fields}
                apply_update(doc, update)
                conn.execute("UPDATE documents SET data = ? WHERE rowid = ?", (_encode(doc), rowid))
                for name in fields:
                    after = pl.index_keys(doc, name)
                    if after != before[name]:
                        conn.execute("DELETE FROM idx WHERE doc = ? AND field = ?", (rowid, name))
                        conn.executemany(
                            "INSERT INTO idx (collection, field, value, doc) VALUES (?, ?, ?, ?)",
                            [(collection, name, key, rowid) for key in after],
                        )
            return len(found)

        return self._write(work)

    def _delete(self, collection: str, filter: Filter) -> int:
        def work(conn: sqlite3.Connection) -> int:
            rowids = [(rowid,) for rowid, _ in self._matching(collection, filter)]
            conn.executemany("DELETE FROM idx WHERE doc = ?", rowids)
            conn.executemany("DELETE FROM documents WHERE rowid = ?", rowids)
            return len(rowids)

        return self._write(work)


def private_dir(path: Path) -> None:
    """Create ``path`` and its missing parents 0700 whatever the umask (existing ones are
    left as the administrator made them)."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            continue
        os.chmod(directory, 0o700)


def private_file(path: Path) -> None:
    """Make sure the database file exists and is 0600 before SQLite opens it: SQLite gives the
    -wal and -shm files the mode of the database file."""
    private_dir(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


# --- queries, shared with the query worker processes ----------------------------------


def matching(
    conn: sqlite3.Connection, collection: str, filter: Filter, deadline: pl.Deadline | None = None
) -> Iterator[tuple[int, Document]]:
    """``(rowid, document)`` of the matches of ``filter``, in insertion order, lazily."""
    pl.check_filter(filter)
    deadline = deadline or pl.Deadline(None)
    for i, (rowid, data) in enumerate(_candidates(conn, collection, filter)):
        if i % pl.CLOCK_EVERY == 0:
            deadline.check()
        doc = bson.decode(data, codec_options=CODEC)
        if not filter or pl.matches(filter, doc):
            yield rowid, doc


def newest_rows(
    conn: sqlite3.Connection,
    collection: str,
    filter: Filter,
    field: str,
    before: Position | None,
    limit: int,
    scan_limit: int,
    since: Any = None,
) -> Page:
    """:meth:`Store.newest` on the index table: the rows of ``field`` in descending order
    (``idx_lookup`` yields them so; only equal values are sorted by ``_id``), the indexed
    equality conditions of ``filter`` as index probes, the rest of it applied by mongomock to
    at most ``scan_limit`` decoded candidates."""
    pl.check_filter(filter)
    if field not in COLLECTIONS.get(collection, ()):
        raise QueryError(f"{collection}.{field} has no index to page by")
    prefilter = pl.plan_filter(filter, COLLECTIONS.get(collection, ()))
    if prefilter.empty or limit <= 0:
        return Page([])
    if not _pushable(prefilter):
        prefilter = pl.Prefilter(exact=False)
    sql = (
        "SELECT i.value, d.id, d.data FROM idx i JOIN documents d ON d.rowid = i.doc"
        " WHERE i.collection = ? AND i.field = ? AND typeof(i.value) IN ('integer', 'real')"
    )
    params: list[Any] = [collection, field]
    if before is not None:
        value, oid = before
        sql += " AND (i.value < ? OR (i.value = ? AND d.id < ?))"
        params += [value, value, _id_key(oid)]
    else:
        sql += " AND i.value <= ?"
        params.append(float("inf"))
    if since is not None:
        sql += " AND i.value >= ?"
        params.append(since)
    for c in prefilter.constraints:
        marks = ", ".join("?" * len(c.keys))
        if c.field == "_id":
            sql += f" AND d.id IN ({marks})"
            params += c.keys
        else:
            sql += (
                " AND EXISTS (SELECT 1 FROM idx j WHERE j.collection = ? AND j.field = ?"
                f" AND j.value IN ({marks}) AND j.doc = d.rowid)"
            )
            params += [collection, c.field, *c.keys]
    sql += " ORDER BY i.value DESC, d.id DESC"
    docs: list[Document] = []
    scanned = 0
    for value, _key, data in conn.execute(sql, params):
        doc = bson.decode(data, codec_options=CODEC)
        scanned += 1
        if prefilter.exact or pl.matches(filter, doc):
            docs.append(doc)
            if len(docs) >= limit:
                return Page(docs)
        if scanned >= scan_limit:
            return Page(docs, (value, doc["_id"]))
    return Page(docs)


def aggregate_rows(
    conn: sqlite3.Connection, collection: str, pipeline: Pipeline, max_documents: int, timeout: float
) -> list[Document]:
    """Run ``pipeline`` over ``collection`` of ``conn``: the leading ``$match`` narrowed by SQL."""
    plan = pl.plan_pipeline(pipeline)
    deadline = pl.Deadline(timeout)
    docs = (doc for _, doc in matching(conn, collection, plan.match, deadline))
    if plan.window is not None:
        skip, limit = plan.window
        count = max_documents if limit is None else min(limit, max_documents)
        return list(itertools.islice(docs, min(skip, sys.maxsize), min(skip + count, sys.maxsize)))
    return pl.run_stages(list(docs), plan.rest, deadline)[:max_documents]


# --- SQL ------------------------------------------------------------------------------


def _id_key(value: Any) -> Any:
    key = pl.index_key(value)
    if key is None or isinstance(value, float):
        raise QueryError(f"_id must be an ObjectId, a string or an integer, not {value!r}")
    return key


def _encode(doc: Mapping[str, Any]) -> bytes:
    try:
        data = bson.encode(doc, codec_options=CODEC)
    except (bson.errors.InvalidDocument, TypeError, ValueError, OverflowError) as e:
        raise QueryError(f"cannot store document: {e}") from None
    if len(data) > MAX_BSON_SIZE:
        raise QueryError(f"document too large: {len(data)} bytes (at most {MAX_BSON_SIZE})")
    return data


def _keys(collection: str, doc: Mapping[str, Any]) -> list[tuple[str, Any]]:
    return [(name, key) for name in COLLECTIONS.get(collection, ()) for key in pl.index_keys(doc, name)]


_Row = tuple[Any, Any, bytes, list[tuple[str, Any]]]  # _id, its key, BSON, index rows


def _insert(collection: str, rows: list[_Row], conn: sqlite3.Connection) -> list[Any]:
    ids = []
    for oid, key, data, index_rows in rows:
        rowid = conn.execute(
            "INSERT INTO documents (collection, id, data) VALUES (?, ?, ?)", (collection, key, data)
        ).lastrowid
        conn.executemany(
            "INSERT INTO idx (collection, field, value, doc) VALUES (?, ?, ?, ?)",
            [(collection, name, value, rowid) for name, value in index_rows],
        )
        ids.append(oid)
    return ids


def _pushable(prefilter: pl.Prefilter) -> bool:
    return sum(len(c.keys) for c in prefilter.constraints) <= MAX_SQL_PARAMETERS


def _candidates_sql(
    collection: str, prefilter: pl.Prefilter, columns: str, ordered: bool = True
) -> tuple[str, list[Any]]:
    """SELECT ``columns`` of the documents the constraints of ``prefilter`` allow.

    One constraint drives the query (``_id`` if present, else the one with fewest keys, so the
    index yields rows in ``rowid`` order); the others become EXISTS probes of the index."""
    constraints = list(prefilter.constraints)
    ids = [c for c in constraints if c.field == "_id"]
    others = [c for c in constraints if c.field != "_id"]
    params: list[Any] = []
    if ids or not others:
        sql = f"SELECT {columns} FROM documents d WHERE d.collection = ?"
        params.append(collection)
        order = "d.rowid"
    else:
        drive = min(others, key=lambda c: len(c.keys))
        others.remove(drive)
        marks = ", ".join("?" * len(drive.keys))
        sql = (
            f"SELECT {columns} FROM idx i JOIN documents d ON d.rowid = i.doc"
            f" WHERE i.collection = ? AND i.field = ? AND i.value IN ({marks})"
        )
        params += [collection, drive.field, *drive.keys]
        order = "i.doc"
    for c in ids:
        sql += f" AND d.id IN ({', '.join('?' * len(c.keys))})"
        params += c.keys
    for c in others:
        sql += (
            " AND EXISTS (SELECT 1 FROM idx j WHERE j.collection = ? AND j.field = ?"
            f" AND j.value IN ({', '.join('?' * len(c.keys))}) AND j.doc = d.rowid)"
        )
        params += [collection, c.field, *c.keys]
    return (sql + f" ORDER BY {order}" if ordered else sql), params


def _candidates(conn: sqlite3.Connection, collection: str, filter: Filter) -> Iterator[tuple[int, bytes]]:
    """``(rowid, data)`` of a superset of the matches of ``filter``, by ascending rowid."""
    prefilter = pl.plan_filter(filter, COLLECTIONS.get(collection, ()))
    if prefilter.empty:
        return
    if not _pushable(prefilter):
        prefilter = pl.Prefilter()
    sql, params = _candidates_sql(collection, prefilter, "d.rowid, d.data")
    last = None
    for rowid, data in conn.execute(sql, params):
        if rowid != last:  # an array may hold several of the keys: rows come in pairs then
            yield rowid, data
        last = rowid
