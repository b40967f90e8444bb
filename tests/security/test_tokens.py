"""Tokens at rest: the store keeps only a SHA-256 of each token, never the token itself.

Over a real socket (``GET /token`` on a real ``CCSite``) and on both storage backends: the
issued token is nowhere in the ``tokens`` collection, it still logs its user in, and a
plaintext token left by an older ccserver neither works nor stays in the store.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.task import Clock

from ccserver.auth.guard import PURGE_INTERVAL_SECONDS, Authenticator, User
from ccserver.errors import BadCredentials
from ccserver.storage.base import Store
from tests.api.conftest import ALICE, Server, accounts, api_server, hash_pool, start_server  # noqa: F401
from tests.auth import make_config, make_request, within


def _everything(docs: list[dict[str, Any]]) -> str:
    return json.dumps(docs, default=repr)


@pytest_twisted.ensureDeferred
async def test_the_store_holds_no_token_only_its_digest(api_server: Server) -> None:  # noqa: F811
    answer = await api_server.get("/token")
    assert answer.status == 200
    token = answer.json["token"]
    docs = await within(api_server.store.find("tokens", {}))
    assert len(docs) == 1
    stored = _everything(docs)
    assert token not in stored and token.upper() not in stored
    assert docs[0]["token_sha256"] == hashlib.sha256(token.encode()).hexdigest()
    assert "token" not in docs[0]
    # and the token still works, over the same socket
    assert (await api_server.get("/nodes", user=(ALICE[0], token))).status == 200
    # its digest is not a token: sent as the secret, it is refused
    assert (await api_server.get("/nodes", user=(ALICE[0], docs[0]["token_sha256"][:48]))).status == 401


@pytest_twisted.ensureDeferred
async def test_a_plaintext_token_of_an_older_ccserver_stops_working_and_is_purged(
    accounts: Store,  # noqa: F811
    hash_pool: Any,  # noqa: F811
) -> None:
    clock = Clock()
    clock.advance(1000)
    auth = Authenticator(accounts, make_config(), clock, hash_pool)
    old = "ab" * 24
    await within(
        accounts.insert_one(
            "tokens", {"username": ALICE[0], "ip": "192.0.2.10", "token": old, "timestamp": clock.seconds()}
        )
    )
    with pytest.raises(BadCredentials):
        await within(auth.authenticate(make_request((ALICE[0], old))))
    assert await within(accounts.count("tokens", {"token": {"$exists": True}})) == 0
    # a new token works, and the purge keeps it
    new, _ = await within(auth.issue_token(make_request(), User(ALICE[0], False)))
    clock.advance(PURGE_INTERVAL_SECONDS + 1)
    assert await within(auth.authenticate(make_request((ALICE[0], new)))) == User(ALICE[0], False)
    assert await within(accounts.count("tokens", {})) == 1
