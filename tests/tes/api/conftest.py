"""Fixtures of the TES API tests: a real ``CCSite`` on a real socket with the TES routes
mounted, the real authenticator and accounts, the store of every backend; fakes only for
the cluster and the scheduler (a TES task stays QUEUED here: nothing runs it).

``tes_server`` is the default server; ``start_tes_server(tes={...}, storage=Storage(...))``
starts one with ``[tes]`` settings and accepted storage of a test's own.  ``py_tes`` gives the
interpreter of a virtualenv with py-tes of a lock file (``requirements/py-tes-*.txt``).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.web.client import Agent, HTTPConnectionPool

from ccserver.auth.guard import Authenticator
from ccserver.config import from_dict
from ccserver.storage.base import Store
from ccserver.tes.submission import Storage
from ccserver.tes.tasks import TesTasks
from ccserver.testing.fakes import FakeCluster, FakeScheduler
from ccserver.threads import ThreadPoolService
from ccserver.vault import Vault
from ccserver.web.api import API
from ccserver.web.offload import RequestWork
from ccserver.web.site import CCSite
from ccserver.web.tes_routes import TesApi
from ccserver.wiring import Wakeup
from tests.api.conftest import ADMIN, ALICE, BOB, KeyCheckingCallbacks, Server, accounts, hash_pool  # noqa: F401

__all__ = ["ADMIN", "ALICE", "BOB", "accounts", "hash_pool"]

REPO = Path(__file__).resolve().parents[3]
TES = "/ga4gh/tes/v1"
LEGACY = "/v1"
#: environment variables naming ready virtualenvs' interpreters (scripts/test sets them)
PY_TES_ENV = {"1.1": "CCSERVER_PY_TES_1_1", "0.4": "CCSERVER_PY_TES_0_4"}

StartTesServer = Callable[..., Awaitable[Server]]


@pytest_twisted.async_yield_fixture
async def start_tes_server(
    accounts: Store,  # noqa: F811
    hash_pool: ThreadPoolService,  # noqa: F811
    tmp_path: Any,
) -> AsyncIterator[StartTesServer]:
    started: list[Server] = []
    pools: list[ThreadPoolService] = []
    pool = HTTPConnectionPool(reactor, persistent=True)
    http = HTTPClient(Agent(reactor, pool=pool))

    async def start(tes: dict[str, Any] | None = None, storage: Storage | None = None, **server: Any) -> Server:
        config = from_dict({"server": server, "tes": tes or {}}, None, env={"HOME": str(tmp_path)})
        body_pool = ThreadPoolService(reactor, "request-bodies", 1)
        body_pool.startService()
        pools.append(body_pool)
        work = RequestWork(body_pool, config.server.inline_body_bytes)
        wakeups: list[float] = []
        wakeup = Wakeup()
        wakeup.subscribe(lambda: wakeups.append(reactor.seconds()))
        vault = Vault(accounts, b"k" * 32)
        auth = Authenticator(accounts, config, reactor, hash_pool)
        tes_api = None
        if config.tes.enabled:
            tes_api = TesApi(
                TesTasks(accounts, vault, reactor, wakeup),
                auth,
                work,
                reactor,
                storage or Storage(),
                anonymous_user=config.tes.anonymous_user,
                prefix=config.server.api_prefix,
            )
        cluster, scheduler = FakeCluster(), FakeScheduler()
        api = API(
            config,
            accounts,
            auth,
            cluster,
            scheduler,
            reactor,
            vault,
            KeyCheckingCallbacks(accounts),
            work=work,
            tes=tes_api,
        )
        site = CCSite(api.resource(), max_body_bytes=config.server.max_body_bytes)
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        url = f"http://127.0.0.1:{port.getHost().port}"
        srv = Server(url, url + config.server.api_prefix, config, accounts, api, cluster, scheduler, http, port)
        srv.extra.update(wakeups=wakeups, vault=vault)
        started.append(srv)
        return srv

    yield start
    await pool.closeCachedConnections()
    for srv in started:
        await srv.port.stopListening()
    for body_pool in pools:
        await body_pool.stopService()


@pytest_twisted.async_fixture
async def tes_server(start_tes_server: StartTesServer) -> Server:
    return await start_tes_server()


def sample_tes_task(**overrides: Any) -> dict[str, Any]:
    task: dict[str, Any] = {
        "name": "hello",
        "description": "says hello",
        "inputs": [
            {"path": "/data/script.sh", "content": "echo hello > /out/greeting\n"},
            {"path": "/data/in.txt", "url": "https://user:in-secret-pw@example.org/in.txt", "type": "FILE"},
        ],
        "outputs": [{"path": "/out/greeting", "url": "ftp://u:out-secret-pw@example.org/greeting", "type": "FILE"}],
        "resources": {"cpu_cores": 2, "ram_gb": 1.5, "disk_gb": 10, "preemptible": False, "zones": ["a"]},
        "executors": [
            {
                "image": "ccserver-test/busybox:1",
                "command": ["sh", "/data/script.sh"],
                "workdir": "/data",
                "env": {"AWS_SECRET_ACCESS_KEY": "env-secret-value", "GREETING": "hi"},
                "ignore_error": True,
            }
        ],
        "volumes": ["/out"],
        "tags": {"project": "p1", "owner": "alice"},
    }
    task.update(overrides)
    return task


# --- py-tes in virtualenvs of their own ---------------------------------------------------


def _venv_for(version: str) -> Path:
    """The interpreter of a virtualenv with requirements/py-tes-<version>.txt, made once per
    lock file content (cached beside the project's other tools)."""
    given = os.environ.get(PY_TES_ENV[version])
    if given:
        return Path(given)
    lock = REPO / "requirements" / f"py-tes-{version}.txt"
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()[:16]
    cache = Path(os.environ.get("CCSERVER_CACHE", "/var/cache/ccserver-dev"))
    if not os.access(cache, os.W_OK):
        cache = REPO / ".cache"
    venv = cache / "py-tes" / f"{version}-{digest}"
    python = venv / "bin" / "python"
    if (venv / ".complete").exists():
        return python
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, timeout=300)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--require-hashes"]
        + ["--only-binary", ":all:", "-r", str(lock)],
        check=True,
        timeout=600,
    )
    (venv / ".complete").touch()
    return python


@pytest.fixture(scope="session")
def py_tes_1_1() -> Path:
    return _venv_for("1.1")


@pytest.fixture(scope="session")
def py_tes_0_4() -> Path:
    return _venv_for("0.4")
