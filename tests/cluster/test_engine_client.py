"""The Docker SDK client of a node on a unix socket keeps its connection to the engine.

docker-py keys the connection pools of its unix-socket adapter by the whole request URL, so
the calls of each container (create, start, remove by name) opened a connection of their own
and closed an older one (ccserver.cluster.engine._OnePoolUnixAdapter).  On the real engine:
calls on 40 different containers' URLs, from one thread and from 8 at once, share the
connections of one pool.
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import docker
import pytest
from docker.errors import NotFound
from docker.transport import UnixHTTPAdapter

from ccserver.cluster.engine import UNIX_POOL_SIZE, make_client
from ccserver.config import NodeConfig

LOCAL = NodeConfig(name="local", base_url="unix:///var/run/docker.sock", tls=None)


def _inspect_missing(client: docker.DockerClient) -> None:
    with pytest.raises(NotFound):  # a 404 is a whole HTTP exchange on the connection too
        client.api.inspect_container(f"ccserver-test-nothing-{uuid.uuid4().hex}")


def _sockets(client: docker.DockerClient) -> set[int]:
    adapter = client.api.adapters["http+docker://"]
    assert isinstance(adapter, UnixHTTPAdapter)
    assert len(adapter.pools) == 1, f"{len(adapter.pools)} pools"
    (key,) = adapter.pools.keys()
    pool = adapter.pools[key]
    return {id(conn.sock) for conn in list(pool.pool.queue) if conn is not None and conn.sock is not None}


def test_calls_on_many_containers_urls_reuse_one_connection() -> None:
    client = make_client(LOCAL, 30)
    try:
        _inspect_missing(client)
        first = _sockets(client)
        assert len(first) == 1
        for _ in range(40):
            _inspect_missing(client)
        assert _sockets(client) == first  # the same socket served all 41
    finally:
        client.close()


def test_threads_at_once_keep_their_connections_in_the_one_pool() -> None:
    client = make_client(LOCAL, 30)
    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda _: _inspect_missing(client), range(16)))
        kept = _sockets(client)
        assert 1 <= len(kept) <= 8 <= UNIX_POOL_SIZE
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda _: _inspect_missing(client), range(40)))
        after = _sockets(client)
        # the second burst found the first one's connections (a few more may open, none is lost)
        assert kept & after and len(after) <= 8
    finally:
        client.close()
