"""Shared fixtures of the ccserver test suite."""

from __future__ import annotations

# --- storage fixtures ---------------------------------------------------------------------
# `ferretdb`: one FerretDB server for the session (fails, never skips, when the binary is
# missing).  `store`: a started store per test, once per backend: "embedded" (a fresh SQLite
# file), "ferretdb" (a fresh random database on the session's FerretDB) and, when
# CCSERVER_TEST_MONGODB_URI is set, "mongodb-env" (a fresh random database there).
# `store_backend`: the name of the backend the `store` of this test runs on.
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred

from ccserver.config import EmbeddedConfig, MongoConfig
from ccserver.storage import Store
from ccserver.testing.ferretdb import FerretDB, FerretDBError

MONGODB_URI_ENV = "CCSERVER_TEST_MONGODB_URI"
STORE_BACKENDS = ["embedded", "ferretdb"] + (["mongodb-env"] if os.environ.get(MONGODB_URI_ENV) else [])
STORE_WAIT_SECONDS = 30.0


@pytest.fixture(scope="session")
def ferretdb() -> Iterator[FerretDB]:
    try:
        server = FerretDB()
        server.start()
    except FerretDBError as e:
        pytest.fail(f"cannot run the FerretDB tests: {e}", pytrace=False)
    yield server
    server.cleanup()


def make_store(backend: str, request: pytest.FixtureRequest, directory: Any, observer: Any = None) -> Store:
    """A backend's store, not started; ``observer`` hears how long each operation took."""
    from twisted.internet import reactor

    from ccserver.storage.embedded import EmbeddedStore
    from ccserver.storage.mongo import MongoStore

    if backend == "embedded":
        path = str(directory / "db" / "ccserver.sqlite3")
        return EmbeddedStore(EmbeddedConfig(path=path, synchronous="normal"), reactor, observer=observer)
    uri = request.getfixturevalue("ferretdb").uri if backend == "ferretdb" else os.environ[MONGODB_URI_ENV]
    db = "cctest_" + uuid.uuid4().hex[:16]
    return MongoStore(MongoConfig(uri=uri, db=db, timeout_seconds=10.0), reactor, observer=observer)


async def _wait(d: Any) -> Any:
    from twisted.internet import reactor

    if isinstance(d, Deferred):
        return await d.addTimeout(STORE_WAIT_SECONDS, reactor)
    return d


@pytest_twisted.async_yield_fixture(params=STORE_BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[Store]:
    instance = make_store(request.param, request, tmp_path)
    await _wait(instance.startService())
    if hasattr(instance, "when_indexed"):
        await _wait(instance.when_indexed())
    try:
        yield instance
    finally:
        if hasattr(instance, "drop_database"):
            await _wait(instance.drop_database())
        await _wait(instance.stopService())


@pytest.fixture
def store_backend(request: pytest.FixtureRequest, store: Store) -> str:
    return str(request.node.callspec.params["store"])


# --- end of storage fixtures ----------------------------------------------------------------
