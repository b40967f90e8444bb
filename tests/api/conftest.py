"""Fixtures of the API tests: a real ``CCSite`` on a real socket, the real authenticator with
real user accounts, the store of every backend (``store`` of ``tests/conftest.py``), and fakes
only for the cluster and the scheduler.

``api_server`` is the default server; ``start_server(**server_settings)`` starts one with
``[server]`` settings of a test's own (CORS, static files, prefix, limits).
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest_twisted
import treq
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.web.client import Agent, HTTPConnectionPool

from ccserver.auth.guard import Authenticator
from ccserver.auth.users import create_user
from ccserver.config import Config, from_dict
from ccserver.errors import WrongCallbackKey
from ccserver.lifecycle import Lifecycle
from ccserver.storage.base import Store
from ccserver.testing.fakes import FakeCluster, FakeScheduler
from ccserver.threads import ThreadPoolService
from ccserver.vault import Vault
from ccserver.web.api import API
from ccserver.web.site import CCSite

ALICE = ("alice", "alice-secret-1")
BOB = ("bob", "bob-secret-2")
ADMIN = ("root", "admin-secret-3")
#: one request of a test never waits longer than this
REQUEST_TIMEOUT = 60.0


def basic(user: tuple[str, str]) -> bytes:
    return b"Basic " + base64.b64encode(f"{user[0]}:{user[1]}".encode())


@dataclass
class Answer:
    status: int
    headers: Any
    raw: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.raw)

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name.lower())
        return values[0] if values else None


@dataclass
class Server:
    """A listening API: ``url`` is the site root (no prefix), ``api`` the API's base."""

    url: str
    api_url: str
    config: Config
    store: Store
    api: API
    cluster: FakeCluster
    scheduler: FakeScheduler
    http: HTTPClient
    port: Any
    default_user: tuple[str, str] | None = ALICE
    extra: dict[str, Any] = field(default_factory=dict)

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        user: tuple[str, str] | None | str = "default",
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        root: bool = False,
        content_type: str | None = "application/json",
    ) -> Answer:
        """``path`` is relative to the API base (or to the site root with ``root=True``).

        A body (``body`` or ``raw``) goes with ``content_type`` unless ``headers`` name one;
        ``content_type=None`` sends none."""
        all_headers = {k.encode(): [v.encode()] for k, v in (headers or {}).items()}
        who = self.default_user if user == "default" else user
        if who is not None and not isinstance(who, str):
            all_headers[b"authorization"] = [basic(who)]
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
        if data is not None and content_type is not None and b"content-type" not in {k.lower() for k in all_headers}:
            all_headers[b"content-type"] = [content_type.encode()]
        url = (self.url if root else self.api_url) + path
        d = self.http.request(method, url, data=data, headers=all_headers)
        d.addTimeout(REQUEST_TIMEOUT, reactor)
        response = await d
        content = await treq.content(response)
        return Answer(response.code, response.headers, content)

    def get(self, path: str, **kw: Any) -> Awaitable[Answer]:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Awaitable[Answer]:
        return self.request("POST", path, body, **kw)


def make_config(tmp_path: Any, **server: Any) -> Config:
    return from_dict({"server": server}, None, env={"HOME": str(tmp_path)})


@pytest_twisted.async_yield_fixture
async def hash_pool() -> AsyncIterator[ThreadPoolService]:
    pool = ThreadPoolService(reactor, "password-hash", 2)
    pool.startService()
    yield pool
    await pool.stopService()


@pytest_twisted.async_yield_fixture
async def accounts(store: Store, hash_pool: ThreadPoolService) -> AsyncIterator[Store]:
    """Two standard users and an admin, created with the real account code."""
    from twisted.internet.defer import DeferredList, ensureDeferred

    await DeferredList(
        [
            ensureDeferred(create_user(store, hash_pool, *ALICE, is_admin=False)),
            ensureDeferred(create_user(store, hash_pool, *BOB, is_admin=False)),
            ensureDeferred(create_user(store, hash_pool, *ADMIN, is_admin=True)),
        ],
        fireOnOneErrback=True,
        consumeErrors=True,
    )
    yield store


class KeyCheckingCallbacks:
    """Stands in for ``ccserver.callbacks.Callbacks`` (tested on its own): checks the key like
    it does, records the bodies, and answers what ``answer`` holds."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.answer: dict[str, Any] = {}

    async def handle(self, collection: str, body: dict[str, Any]) -> dict[str, Any]:
        container = await self.store.find_one(collection, {"_id": body["container_id"]})
        if container is None or container.get("callback_key") != body["callback_key"]:
            raise WrongCallbackKey("unknown container or wrong callback key")
        self.received.append((collection, body))
        return self.answer


StartServer = Callable[..., Awaitable[Server]]


@pytest_twisted.async_yield_fixture
async def start_server(accounts: Store, hash_pool: ThreadPoolService, tmp_path: Any) -> AsyncIterator[StartServer]:
    started: list[Server] = []
    pool = HTTPConnectionPool(reactor, persistent=True)
    http = HTTPClient(Agent(reactor, pool=pool))

    async def start(staging: Any = None, **server_settings: Any) -> Server:
        config = make_config(tmp_path, **server_settings)
        cluster, scheduler = FakeCluster(), FakeScheduler()
        auth = Authenticator(accounts, config, reactor, hash_pool)
        vault = Vault(accounts, b"k" * 32)
        # the real life cycle cancels; its wake-ups reach the (counting) scheduler
        lifecycle = Lifecycle(accounts, reactor, config.defaults.max_task_trials, vault, wake=scheduler.wake)
        api = API(
            config,
            accounts,
            auth,
            cluster,
            scheduler,
            reactor,
            vault,
            KeyCheckingCallbacks(accounts),
            lifecycle=lifecycle,
            staging=staging,
        )
        site = CCSite(api.resource(), max_body_bytes=config.server.max_body_bytes)
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        url = f"http://127.0.0.1:{port.getHost().port}"
        server = Server(url, url + config.server.api_prefix, config, accounts, api, cluster, scheduler, http, port)
        started.append(server)
        return server

    yield start
    await pool.closeCachedConnections()
    for server in started:
        await server.port.stopListening()


@pytest_twisted.async_fixture
async def api_server(start_server: StartServer) -> Server:
    return await start_server()


def sample_task(**overrides: Any) -> dict[str, Any]:
    """The task of cc-protocol.md §5, secrets included."""
    task: dict[str, Any] = {
        "tags": ["experiment1"],
        "no_cache": False,
        "application_container_description": {
            "image": "docker.io/curiouscontainers/cc-sample-app",
            "container_ram": 1024,
            "registry_auth": {"username": "U", "password": "registry-password"},
            "entry_point": "python3 /opt/container_worker",
            "parameters": ["--arg1", "value1"],
        },
        "input_files": [{"connector_type": "http", "connector_access": {"url": "https://example.org/data.csv"}}],
        "result_files": [
            {
                "local_result_file": "file_a",
                "connector_type": "http",
                "connector_access": {"url": "https://example.org/out", "method": "POST"},
                "add_meta_data": False,
            }
        ],
        "notifications": [
            {
                "connector_access": {
                    "url": "https://example.org/notify",
                    "json_data": {},
                    "ssl_verify": True,
                    "auth": {"auth_type": "basic", "username": "U", "password": "notify-password"},
                },
                "add_meta_data": True,
            }
        ],
    }
    task.update(overrides)
    return task
