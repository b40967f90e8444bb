"""Where ccserver keeps its documents: MongoDB (via txmongo) or an embedded SQLite file.

:func:`open_store` picks the backend from the configuration: ``[mongo]`` present means
:class:`~ccserver.storage.mongo.MongoStore`, otherwise
:class:`~ccserver.storage.embedded.EmbeddedStore`.  Both implement :class:`Store`.
"""

from __future__ import annotations

from typing import Any

from ccserver.config import Config
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
)

__all__ = [
    "COLLECTIONS",
    "Document",
    "Filter",
    "OperationObserver",
    "Pipeline",
    "QueryError",
    "QueryTimeout",
    "Sort",
    "StorageError",
    "StorageUnavailable",
    "Store",
    "Update",
    "open_store",
]


def open_store(config: Config, reactor: Any, observer: OperationObserver | None = None) -> Store:
    """The configured backend, not yet started (it is a service: start it with the tree);
    ``observer`` hears how long each operation took (the daemon's metrics)."""
    if config.mongo is not None:
        from ccserver.storage.mongo import MongoStore

        return MongoStore(config.mongo, reactor, observer=observer)
    from ccserver.storage.embedded import EmbeddedStore

    return EmbeddedStore(config.embedded, reactor, observer=observer)
