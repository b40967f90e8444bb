"""Hostile pipelines on the query endpoints cannot hold up other users, nor grow the daemon.

Everything runs over a real socket against the real API on both stores (the ``store`` fixture):
the embedded store evaluates pipelines in its query worker processes, FerretDB on the server
(where ``$regex`` is RE2 and ``$concat``/``$concatArrays`` are not implemented: 400 at once).
"""

from __future__ import annotations

import os
import stat
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.protocols import portforward

from ccserver.config import ConfigError, EmbeddedConfig, MongoConfig, from_dict
from ccserver.storage.base import QueryTimeout, Store
from ccserver.storage.embedded import EmbeddedStore
from ccserver.storage.mongo import MongoStore
from tests.api import conftest as api_fixtures
from tests.api.conftest import ADMIN, ALICE, BOB, Server

# the real API on a real socket, from the API tests
hash_pool = api_fixtures.hash_pool
accounts = api_fixtures.accounts
start_server = api_fixtures.start_server
api_server = api_fixtures.api_server

TIMEOUT = 3.0
#: an answer at the deadline may come this much later (a loaded machine)
SLACK = 1.0
EVIL_TAG = "a" * 27 + "!"  # ^(a+)+$ backtracks 2**27 ways before it fails


def vm_rss() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))


async def _seed(store: Store) -> None:
    await store.insert_many(
        "tasks",
        [
            {"username": "alice", "state": 0, "created_at": float(i), "tags": [EVIL_TAG] + [f"t{j}" for j in range(63)]}
            for i in range(4)
        ],
    )


async def timed(server: Server, body: Any, user: tuple[str, str] = ALICE) -> tuple[float, Any]:
    began = time.monotonic()
    answer = await server.post("/tasks/query", body, user=user)
    return time.monotonic() - began, answer


REGEX = [{"$match": {"tags": {"$regex": "^(a+)+$"}}}]
EXPLOSION = [
    {"$project": {"a": {"$concatArrays": ["$tags"] * 32}, "b": {"$concatArrays": ["$tags"] * 32}}},
    {"$unwind": "$a"},
    {"$unwind": "$b"},
    {"$count": "n"},
]


@pytest_twisted.ensureDeferred
async def test_hostile_queries_leave_other_users_alone(start_server: Any) -> None:
    server = await start_server(query_timeout_seconds=TIMEOUT, query_cache_seconds=0)
    await _seed(server.store)
    assert (await server.get("/nodes", user=BOB)).status == 200  # warm: BOB's credentials cached
    hostile = [ensureDeferred(timed(server, {"aggregate": p})) for p in (REGEX, EXPLOSION)]
    waits, writes = [], []
    for i in range(30):
        began = time.monotonic()
        answer = await server.get("/nodes", user=BOB)
        waits.append(time.monotonic() - began)
        assert answer.status == 200, answer.raw
        began = time.monotonic()  # the store's own work: a write and a read back
        oid = await server.store.insert_one("task_groups", {"username": "bob", "n": i})
        assert (await server.store.find_one("task_groups", {"_id": oid}))["n"] == i
        writes.append(time.monotonic() - began)
        await sleep(0.05)
    messages = []
    for i, d in enumerate(hostile):
        elapsed, answer = await d
        assert elapsed <= TIMEOUT + SLACK, (elapsed, answer.json)
        if i == 0 and server.store.kind != "embedded":
            assert answer.status == 200, answer.raw  # the server's RE2 does not backtrack
            continue
        assert answer.status in (400, 408), answer.raw
        messages.append(answer.json["error"])
    if server.store.kind == "embedded":
        # both ran into a limit of ours: the regex the deadline, the explosion one of the two
        assert "query_timeout_seconds" in messages[0], messages
        assert "query_timeout_seconds" in messages[1] or "query_memory_mb" in messages[1], messages
    p99 = max(waits)  # of 30 samples, the 99th percentile is the largest
    assert p99 < 0.2, f"GET /nodes waited {p99:.3f} s (p99) while hostile queries ran; all: {waits}"
    assert max(writes) < 0.2, f"a write and read of the store took {max(writes):.3f} s; all: {writes}"
    # the store still answers queries afterwards (workers were replaced)
    answer = await server.post("/tasks/query", {"aggregate": [{"$count": "n"}]}, user=ALICE)
    assert answer.status == 200 and answer.json["tasks"] == [{"n": 4}], answer.raw


@pytest_twisted.ensureDeferred
async def test_a_query_waiting_for_a_worker_is_answered_at_its_deadline(start_server: Any) -> None:
    """Queue time counts: more regex bombs than workers are all answered by their deadline."""
    server = await start_server(query_timeout_seconds=TIMEOUT, query_cache_seconds=0)
    await _seed(server.store)
    bombs = [{"aggregate": REGEX + [{"$skip": i}]} for i in range(4)]  # distinct: no shared answer
    answers = [ensureDeferred(timed(server, body)) for body in bombs]
    for d in answers:
        elapsed, answer = await d
        assert answer.status in (200, 400, 408), answer.raw  # FerretDB's RE2 answers 200 at once
        assert elapsed <= TIMEOUT + SLACK, (elapsed, answer.json)
        if server.store.kind == "embedded":
            assert answer.status == 400 and "query_timeout_seconds" in answer.json["error"], answer.raw


@pytest_twisted.ensureDeferred
async def test_memory_bomb_is_refused_and_the_daemon_does_not_grow(api_server: Server) -> None:
    await _seed(api_server.store)
    # 1 KiB doubled 19 times: a 512 MiB string, from a request of a few kB
    bomb = [{"$limit": 1}, {"$project": {"s": "x" * 1024}}]
    bomb += [{"$addFields": {"s": {"$concat": ["$s", "$s"]}}}] * 19
    bomb += [{"$project": {"s": 0}}]
    before = vm_rss()
    elapsed, answer = await timed(api_server, {"aggregate": bomb})
    grown = vm_rss() - before
    assert 400 <= answer.status < 500, answer.raw
    assert "error" in answer.json
    if api_server.store.kind == "embedded":
        assert "query_memory_mb" in answer.json["error"], answer.raw
    assert grown < 64 * 1024 * 1024, f"the daemon grew by {grown / 2**20:.0f} MiB"
    answer = await api_server.post("/tasks/query", {"aggregate": [{"$count": "n"}]})
    assert answer.status == 200 and answer.json["tasks"] == [{"n": 4}], answer.raw


@pytest.mark.parametrize("value", [1e19, 1e300, -1, 2.5, "1", True])
@pytest.mark.parametrize("stage", ["$skip", "$limit", "$sample"])
@pytest_twisted.ensureDeferred
async def test_counts_out_of_range_are_400_naming_the_stage(api_server: Server, stage: str, value: Any) -> None:
    spec = {"size": value} if stage == "$sample" else value
    answer = await api_server.post("/tasks/query", {"aggregate": [{stage: spec}]}, user=ADMIN)
    assert answer.status == 400, answer.raw
    assert stage in answer.json["error"] and "expected an integer" in answer.json["error"], answer.raw


@pytest_twisted.ensureDeferred
async def test_largest_counts_are_accepted(api_server: Server) -> None:
    await _seed(api_server.store)
    for pipeline in ([{"$skip": 9223372036854775807}], [{"$skip": 1e18}], [{"$limit": 9223372036854775807}]):
        answer = await api_server.post("/tasks/query", {"aggregate": pipeline}, user=ADMIN)
        assert answer.status == 200, (pipeline, answer.raw)
    answer = await api_server.post("/tasks/query", {"aggregate": [{"$limit": 2.0}]}, user=ADMIN)
    assert answer.status == 200 and len(answer.json["tasks"]) == 2, answer.raw


@pytest_twisted.ensureDeferred
async def test_text_search_is_not_refused_by_the_deny_list(api_server: Server) -> None:
    await _seed(api_server.store)
    answer = await api_server.post("/tasks/query", {"aggregate": [{"$match": {"$text": {"$search": "experiment"}}}]})
    # neither backend here can search text (no text index; FerretDB lacks $text): a clear 400
    # from the store naming $text, not the deny-list
    assert answer.status == 400, answer.raw
    assert "is not allowed" not in answer.json["error"], answer.raw
    assert "$text" in answer.json["error"], answer.raw
    for stage in ("$search", "$searchMeta", "$vectorSearch"):
        answer = await api_server.post("/tasks/query", {"aggregate": [{stage: {}}]})
        assert answer.status == 400 and "is not allowed" in answer.json["error"], answer.raw


@pytest_twisted.ensureDeferred
async def test_embedded_files_are_private_whatever_the_umask(tmp_path: Any) -> None:
    data_dir = tmp_path / "data" / "curious-containers"
    path = data_dir / "ccserver.sqlite3"
    given = stat.S_IMODE(os.stat(tmp_path).st_mode)
    old = os.umask(0o022)
    try:
        store = EmbeddedStore(EmbeddedConfig(path=str(path), synchronous="normal"), reactor)
        await store.startService()
        try:
            await store.insert_one("tasks", {"state": 0})
            for directory in (data_dir, data_dir.parent):
                assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700, directory
            for name in ("ccserver.sqlite3", "ccserver.sqlite3-wal", "ccserver.sqlite3-shm"):
                assert stat.S_IMODE(os.stat(data_dir / name).st_mode) == 0o600, name
        finally:
            await store.stopService()
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path).st_mode) == given  # an existing directory is left alone


def sleep(seconds: float) -> Deferred[None]:
    d: Deferred[None] = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


def test_query_worker_keys_are_read_and_checked(tmp_path: Any) -> None:
    config = from_dict({"embedded": {"query_workers": 3, "query_memory_mb": 64}}, "c.toml", env={"HOME": str(tmp_path)})
    assert (config.embedded.query_workers, config.embedded.query_memory_mb) == (3, 64)
    defaults = from_dict({}, None, env={"HOME": str(tmp_path)}).embedded
    assert (defaults.query_workers, defaults.query_memory_mb) == (2, 256)
    for key, value in (("query_workers", 0), ("query_memory_mb", 1), ("query_workers", "2")):
        with pytest.raises(ConfigError) as info:
            from_dict({"embedded": {key: value}}, "c.toml", env={"HOME": str(tmp_path)})
        assert "c.toml" in str(info.value) and key in str(info.value), str(info.value)


class _StallingClient(portforward.ProxyClient):
    """Server → client bytes are dropped once the factory's ``stalled`` is set: a database
    that accepts the query and never answers."""

    def dataReceived(self, data: bytes) -> None:
        if not self.peer.factory.stalled:
            super().dataReceived(data)


class _StallingClientFactory(portforward.ProxyClientFactory):
    protocol = _StallingClient


class _StallingServer(portforward.ProxyServer):
    clientProtocolFactory = _StallingClientFactory


@pytest_twisted.ensureDeferred
async def test_mongodb_query_gives_up_at_its_deadline(ferretdb: Any) -> None:
    """The client-side deadline on MongoDB is the query's own, not query + timeout_seconds."""
    host, port = urlsplit(ferretdb.uri).hostname, urlsplit(ferretdb.uri).port
    factory = portforward.ProxyFactory(host, port)
    factory.protocol = _StallingServer
    factory.stalled = False
    listener = reactor.listenTCP(0, factory, interface="127.0.0.1")
    uri = f"mongodb://127.0.0.1:{listener.getHost().port}/"
    store = MongoStore(MongoConfig(uri=uri, db="cctest_" + uuid.uuid4().hex[:16], timeout_seconds=10.0), reactor)
    store.startService()
    try:
        await store.when_indexed().addTimeout(30, reactor)
        await store.insert_one("tasks", {"username": "alice", "state": 0})
        assert len(await store.aggregate("tasks", [], max_documents=10, timeout=5)) == 1
        factory.stalled = True
        began = time.monotonic()
        with pytest.raises(QueryTimeout, match="query_timeout_seconds"):
            await store.aggregate("tasks", [{"$match": {"state": 0}}], max_documents=10, timeout=1.0)
        elapsed = time.monotonic() - began
        assert elapsed < 1.0 + SLACK, elapsed
    finally:
        factory.stalled = False
        await store.stopService()
        await listener.stopListening()
