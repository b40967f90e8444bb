"""The storage interface the rest of ccserver uses.

Documents are plain dicts in the CC-Server 0.10 layout (``cc-protocol.md`` §2), ids are
``bson.ObjectId``.  Filters and aggregation pipelines use MongoDB query semantics on both
backends.  Update documents may use ``$set``, ``$unset``, ``$inc`` and ``$push`` (a value, or
``{"$each": [...]}``), with dotted paths; nothing else, so both backends agree.

Every method returns a Deferred and never blocks the reactor thread.  A backend is also a
``twisted.application.service.Service``: it connects in ``startService`` and finishes its
in-flight writes in ``stopService``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred

Document = dict[str, Any]
Filter = Mapping[str, Any]
Update = Mapping[str, Any]
Pipeline = Sequence[Mapping[str, Any]]
Sort = Sequence[tuple[str, int]]

#: Collections and the fields their hot lookups use; each backend creates an index per field.
COLLECTIONS: dict[str, tuple[str, ...]] = {
    "users": ("username",),
    "tokens": ("username",),
    "block_entries": ("username", "timestamp"),
    "task_groups": ("state", "username", "created_at"),
    "tasks": ("state", "username", "created_at", "task_group_id"),
    "application_containers": ("state", "username", "task_id", "cluster_node", "data_container_ids"),
    "data_containers": ("state", "username", "cluster_node"),
    "dead_nodes": ("name",),
    "tes_tasks": ("state", "username", "created_at", "name"),
    # secrets of tasks and data containers, by their ids (see ccserver.vault); never queried
    "secrets": ("task_group_id",),
    #: this daemon's identity (ccserver.identity): one document
    "daemon": (),
}

UPDATE_OPERATORS = frozenset({"$set", "$unset", "$inc", "$push"})


W = TypeVar("W", bound=Callable[..., Deferred[Any]])


def tracks_writes(method: W) -> W:
    """Mark a write method: the collection's generation moves when the write is issued and
    again when it completes, so an answer computed while it ran is never taken as current
    (see :meth:`Store.generation`)."""

    @functools.wraps(method)
    def wrapper(self: Store, collection: str, *args: Any, **kwargs: Any) -> Deferred[Any]:
        self._changed(collection)
        d = method(self, collection, *args, **kwargs)

        def done(result: Any) -> Any:
            self._changed(collection)
            return result

        return d.addBoth(done)

    return wrapper  # type: ignore[return-value]  # the wrapper has the signature of W (functools.wraps)


class OperationObserver(Protocol):
    """What hears how long each store operation took (``ccserver.metrics.Metrics``)."""

    def timer(self) -> Callable[[], float]: ...

    def store_operation(self, operation: str, collection: str, seconds: float) -> None: ...


def timed(method: W) -> W:
    """Time a store operation, from the call to its answer, for the store's ``observer``
    (by the method's name and the collection; nothing else of the call is kept)."""
    operation = method.__name__

    @functools.wraps(method)
    def wrapper(self: Store, collection: str, *args: Any, **kwargs: Any) -> Deferred[Any]:
        observer = self.observer
        if observer is None:
            return method(self, collection, *args, **kwargs)
        elapsed = observer.timer()

        def done(result: Any) -> Any:
            observer.store_operation(operation, collection, elapsed())
            return result

        return method(self, collection, *args, **kwargs).addBoth(done)

    return wrapper  # type: ignore[return-value]  # the wrapper has the signature of W (functools.wraps)


#: a position in a newest-first listing: (value of the ordering field, ``_id``)
Position = tuple[Any, Any]


@dataclass(frozen=True)
class Page:
    """One page of :meth:`Store.newest`: the documents, newest first, and, when the scan stopped
    at its bound before the page was full, the position it reached (the next page starts there)."""

    docs: list[Document]
    scanned_to: Position | None = None


class StorageError(Exception):
    """The store could not do what was asked (database down, disk full, ...)."""


class StorageUnavailable(StorageError):
    """The database cannot be reached right now; the caller may retry later (HTTP 503)."""


class QueryError(StorageError):
    """The filter or pipeline was rejected by the database (bad operator, bad value); a 400."""


class QueryTimeout(QueryError):
    """An aggregation ran past its time limit."""


class Store(Service):
    """Abstract base of the two backends; see the module docstring for the contract."""

    name = "storage"  # type: ignore[assignment]  # Twisted's Service has an untyped `name = None`
    #: a short word for logs and docs: "embedded" or "mongodb"
    kind = "abstract"
    _generations: dict[str, int] | None = None
    #: told how long each operation took (set by the backend's constructor); None: nobody
    observer: OperationObserver | None = None

    def generation(self, collection: str) -> int:
        """A number that changes whenever this daemon writes to ``collection``: a cached
        answer computed at generation g is current as long as the generation is still g."""
        return (self._generations or {}).get(collection, 0)

    def _changed(self, collection: str) -> None:
        if self._generations is None:
            self._generations = {}
        self._generations[collection] = self._generations.get(collection, 0) + 1

    def insert_many(self, collection: str, docs: Sequence[Document]) -> Deferred[list[Any]]:
        """Insert ``docs`` in one atomic step (all or none); missing ``_id`` s are generated
        and set on the given dicts.  Fires with the ids in order."""
        raise NotImplementedError

    def insert_one(self, collection: str, doc: Document) -> Deferred[Any]:
        d = self.insert_many(collection, [doc])
        d.addCallback(lambda ids: ids[0])
        return d

    def find_one(
        self, collection: str, filter: Filter, projection: Mapping[str, Any] | None = None
    ) -> Deferred[Document | None]:
        """The first document matching ``filter``, or None: :meth:`find` with ``limit=1``."""
        d = self.find(collection, filter, limit=1, projection=projection)
        return d.addCallback(lambda docs: docs[0] if docs else None)

    def find(
        self,
        collection: str,
        filter: Filter,
        *,
        sort: Sort | None = None,
        limit: int = 0,
        projection: Mapping[str, Any] | None = None,
    ) -> Deferred[list[Document]]:
        raise NotImplementedError

    def count(self, collection: str, filter: Filter) -> Deferred[int]:
        raise NotImplementedError

    def update_one(self, collection: str, filter: Filter, update: Update) -> Deferred[int]:
        """Apply ``update`` to the first document matching ``filter``; fires with the number
        of documents matched (0 or 1), so a filter on ``state`` works as compare-and-set."""
        raise NotImplementedError

    def update_many(self, collection: str, filter: Filter, update: Update) -> Deferred[int]:
        raise NotImplementedError

    def delete_many(self, collection: str, filter: Filter) -> Deferred[int]:
        raise NotImplementedError

    def aggregate(
        self,
        collection: str,
        pipeline: Pipeline,
        *,
        max_documents: int,
        timeout: float,
    ) -> Deferred[list[Document]]:
        """Run a (already vetted) pipeline; at most ``max_documents`` results are returned,
        :class:`QueryTimeout` after ``timeout`` seconds, :class:`QueryError` for a pipeline
        the engine refuses."""
        raise NotImplementedError

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
        """Keyset paging: the ``limit`` newest documents matching ``filter`` that come after
        ``before`` in the order (``field`` descending, ``_id`` descending).  ``field`` must be an
        indexed scalar number field of the collection (``created_at``): the index yields the
        order, so a page costs the same at the first and at the ten-thousandth.  At most
        ``scan_limit`` candidates are looked at (a filter on a field without index may match
        rarely), none whose ``field`` is below ``since``; when that bound ends the scan,
        :attr:`Page.scanned_to` says where.

        This default (the MongoDB backend) lets the server do it with ``sort`` and ``limit`` on
        its index of ``field``; the embedded store walks its own index."""
        conditions: list[Any] = [dict(filter)] if filter else []
        if before is not None:
            value, oid = before
            conditions.append({"$or": [{field: {"$lt": value}}, {field: value, "_id": {"$lt": oid}}]})
        else:
            conditions.append({field: {"$type": "number"}})
        if since is not None:
            conditions.append({field: {"$gte": since}})
        query = {"$and": conditions} if len(conditions) > 1 else conditions[0]
        d = self.find(collection, query, sort=[(field, -1), ("_id", -1)], limit=limit)
        return d.addCallback(Page)

    def ping(self) -> Deferred[None]:
        """Fire when the database answers; fail with :class:`StorageUnavailable` otherwise."""
        raise NotImplementedError
