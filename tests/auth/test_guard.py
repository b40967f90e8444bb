"""The guard: header parsing, client addresses, and the full check against both stores.

Time is a ``task.Clock`` (lockout windows, token lifetimes, cache lifetimes); the store and
the hash pool are real, and the pool counts its PBKDF2 runs.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.defer import DeferredList
from twisted.internet.task import Clock

from ccserver.auth import users
from ccserver.auth.guard import (
    PURGE_INTERVAL_SECONDS,
    Authenticator,
    User,
    VerificationCache,
    parse_basic,
    parse_networks,
)
from ccserver.config import ConfigError
from ccserver.errors import BadCredentials
from ccserver.storage import Store
from tests.auth import CountingPool, make_config, make_request, within

PASSWORD = "correct horse"


# --- parsing the header (pure) ---------------------------------------------------------------


@pytest.mark.parametrize(
    "header, message",
    [
        (None, "credentials required"),
        (b"", "credentials required"),
        (b"Bearer abc", "unsupported authorization scheme"),
        (b"Basic", "malformed"),
        (b"Basic !!!not-base64", "malformed"),
        (b"Basic " + base64.b64encode(b"\xff\xfe:pw"), "malformed"),  # not UTF-8
        (b"Basic " + base64.b64encode(b"no-colon"), "malformed"),
        (b"Basic " + base64.b64encode(b":pw"), "malformed"),
    ],
)
def test_bad_headers_are_unauthorized(header: bytes | None, message: str) -> None:
    with pytest.raises(BadCredentials, match=message):
        parse_basic(header)


def test_header_parsing_keeps_colons_in_the_password_and_any_case_of_basic() -> None:
    assert parse_basic(b"bAsIc " + base64.b64encode("ä:pw:with:colons".encode())) == ("ä", "pw:with:colons")


@given(st.binary(max_size=64))
def test_any_header_is_credentials_or_unauthorized(raw: bytes) -> None:
    for header in (raw, b"Basic " + raw, b"Basic " + base64.b64encode(raw)):
        try:
            username, secret = parse_basic(header)
        except BadCredentials:
            continue
        assert username and isinstance(secret, str)


# --- the client address (pure) ---------------------------------------------------------------


def address(peer: str, trusted: tuple[str, ...] = (), **headers: str) -> str:
    auth = Authenticator(None, make_config(server={"trusted_proxies": list(trusted)}), Clock(), None)  # type: ignore[arg-type]
    raw = {name.replace("_", "-").encode(): [value.encode()] for name, value in headers.items()}
    return auth.client_address(make_request(ip=peer, headers=raw))


def test_forwarding_headers_are_ignored_unless_the_peer_is_trusted() -> None:
    assert address("203.0.113.7", x_forwarded_for="1.1.1.1", x_real_ip="2.2.2.2") == "203.0.113.7"
    assert address("203.0.113.7", ("10.0.0.0/8",), x_forwarded_for="1.1.1.1") == "203.0.113.7"


def test_forwarded_for_is_walked_from_the_right_past_trusted_proxies() -> None:
    trusted = ("10.0.0.0/8", "192.0.2.1")
    assert address("10.0.0.2", trusted, x_forwarded_for="1.1.1.1") == "1.1.1.1"
    # a client cannot choose its address by sending a header of its own: the leftmost is forged
    assert address("10.0.0.2", trusted, x_forwarded_for="6.6.6.6, 1.1.1.1, 192.0.2.1") == "1.1.1.1"
    # only proxies: the leftmost one is the best we know
    assert address("10.0.0.2", trusted, x_forwarded_for="10.1.1.1, 10.2.2.2") == "10.1.1.1"
    # garbage ends the walk at the last hop a trusted proxy vouched for
    assert address("10.0.0.2", trusted, x_forwarded_for="1.1.1.1, nonsense, 10.3.3.3") == "10.3.3.3"
    assert address("10.0.0.2", trusted, x_forwarded_for="1.1.1.1:5555") == "1.1.1.1"
    assert address("10.0.0.2", trusted, x_forwarded_for="[2001:db8::1]:443") == "2001:db8::1"


def test_real_ip_counts_from_a_trusted_proxy_without_forwarded_for() -> None:
    assert address("10.0.0.2", ("10.0.0.0/8",), x_real_ip="1.1.1.1") == "1.1.1.1"
    assert address("10.0.0.2", ("10.0.0.0/8",), x_real_ip="garbage") == "10.0.0.2"


def test_ipv6_peers_and_ipv4_mapped_peers() -> None:
    assert address("::ffff:10.0.0.2", ("10.0.0.0/8",), x_forwarded_for="1.1.1.1") == "1.1.1.1"
    assert address("::ffff:203.0.113.7") == "203.0.113.7"
    assert address("2001:db8::5", ("2001:db8::/64",), x_forwarded_for="1.1.1.1") == "1.1.1.1"


def test_a_bad_trusted_proxy_entry_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="trusted_proxies"):
        parse_networks(("10.0.0.0/8", "proxy.example.org"))


# --- the verification cache (pure) -------------------------------------------------------------


def test_cache_entries_expire_are_bound_to_the_stored_hash_and_are_bounded() -> None:
    cache = VerificationCache(lifetime=10, size=2)
    cache.remember(b"a", b"hash-1", now=0)
    assert cache.hit(b"a", b"hash-1", now=9.9)
    assert not cache.hit(b"a", b"hash-2", now=1)  # password changed: entry gone
    assert not cache.hit(b"a", b"hash-1", now=1)
    cache.remember(b"a", b"h", now=0)
    assert not cache.hit(b"a", b"h", now=10)
    for key in (b"x", b"y", b"z"):
        cache.remember(key, b"h", now=0)
    assert len(cache) == 2 and not cache.hit(b"x", b"h", now=1)
    off = VerificationCache(lifetime=0)
    off.remember(b"a", b"h", now=0)
    assert len(off) == 0


# --- the full check, on both storage backends ----------------------------------------------------


@pytest.fixture
def hash_pool() -> Iterator[CountingPool]:
    pool = CountingPool(reactor)
    pool.startService()
    yield pool
    pool.pool.stop()


class Env:
    def __init__(self, store: Store, pool: CountingPool, **settings: Any) -> None:
        self.store, self.pool, self.clock = store, pool, Clock()
        server = {"auth_cache_seconds": settings.pop("cache", 60)}
        server.update(settings.pop("server", {}))
        self.auth = Authenticator(store, make_config(server=server, **settings), self.clock, pool)

    async def login(self, password: str = PASSWORD, user: str = "alice", **kwargs: Any) -> User:
        allow_token = kwargs.pop("allow_token", True)
        return await within(self.auth.authenticate(make_request((user, password), **kwargs), allow_token))

    async def refused(self, password: str = PASSWORD, user: str = "alice", **kwargs: Any) -> str:
        with pytest.raises(BadCredentials) as info:
            await self.login(password, user, **kwargs)
        return info.value.message


async def env_with_alice(store: Store, pool: CountingPool, **settings: Any) -> Env:
    await within(users.create_user(store, pool, "alice", PASSWORD, False))
    await within(users.create_user(store, pool, "root", "toor", True))
    pool.verifications = 0
    return Env(store, pool, **settings)


@pytest_twisted.ensureDeferred
async def test_password_login_and_failures(store: Store, hash_pool: CountingPool) -> None:
    env = await env_with_alice(store, hash_pool)
    request = make_request(("alice", PASSWORD))
    assert await within(env.auth.authenticate(request)) == User("alice", False)
    assert request.ccserver_user == "alice"
    assert await env.login("toor", "root") == User("root", True)
    wrong = await env.refused("wrong")
    unknown = await env.refused(PASSWORD, "mallory")
    assert wrong == unknown  # no hint whether the user exists
    assert hash_pool.verifications == 4  # the unknown user cost a PBKDF2 too
    assert hash_pool.on_reactor_thread == 0
    assert await within(store.count("block_entries", {})) == 2
    with pytest.raises(BadCredentials, match="credentials required"):
        await within(env.auth.authenticate(make_request(None)))


@pytest_twisted.ensureDeferred
async def test_lockout_refuses_the_right_password_until_entries_age_out(store: Store, hash_pool: CountingPool) -> None:
    env = await env_with_alice(store, hash_pool, num_login_attempts=3, block_for_seconds=120)
    for _ in range(3):
        await env.refused("wrong")
        env.clock.advance(1)
    assert await env.login() == User("alice", False)  # 3 entries: not more than 3
    await env.refused("wrong")
    message = await env.refused()  # 4 entries: refused even with the right password
    assert "too many failed logins" in message
    verifications = hash_pool.verifications
    await env.refused()
    assert hash_pool.verifications == verifications  # a locked-out check does not hash
    assert await env.login("toor", "root")  # other users are not affected
    env.clock.advance(120 - 3)
    assert "too many" in await env.refused()  # at exactly 120 s the first entry still counts
    env.clock.advance(0.5)  # now it has aged out: 3 left
    assert await env.login() == User("alice", False)


@pytest_twisted.ensureDeferred
async def test_concurrent_guesses_cannot_outrun_the_lockout(store: Store, hash_pool: CountingPool) -> None:
    env = await env_with_alice(store, hash_pool, num_login_attempts=3)
    guesses = [env.auth.authenticate(make_request(("alice", f"guess-{i}"))) for i in range(12)]
    results = await within(DeferredList(guesses, consumeErrors=True))
    messages = [failure.value.message for ok, failure in results]
    assert all(not ok for ok, _ in results)
    assert hash_pool.verifications == 4  # num_login_attempts + 1, as if they came one by one
    assert messages.count("too many failed logins for this user; try again later") == 8


@pytest_twisted.ensureDeferred
async def test_cache_hit_skips_pbkdf2_until_it_expires(store: Store, hash_pool: CountingPool) -> None:
    env = await env_with_alice(store, hash_pool, cache=60)
    for _ in range(5):
        assert await env.login()
    assert hash_pool.verifications == 1
    await env.refused("wrong")
    await env.refused("wrong")
    assert hash_pool.verifications == 3  # failures are never cached
    env.clock.advance(61)
    assert await env.login()
    assert hash_pool.verifications == 4


@pytest_twisted.ensureDeferred
async def test_cache_disabled_with_zero(store: Store, hash_pool: CountingPool) -> None:
    env = await env_with_alice(store, hash_pool, cache=0)
    assert await env.login() and await env.login()
    assert hash_pool.verifications == 2


@pytest_twisted.ensureDeferred
async def test_password_change_and_deletion_end_cached_logins(store: Store, hash_pool: CountingPool) -> None:
    env = await env_with_alice(store, hash_pool)
    assert await env.login()
    assert await within(users.set_password(store, hash_pool, "alice", "new password"))
    await env.refused(PASSWORD)
    assert await env.login("new password")
    assert await within(users.delete_user(store, "alice"))
    await env.refused("new password")


@pytest_twisted.ensureDeferred
async def test_identical_concurrent_logins_share_one_pbkdf2(store: Store, hash_pool: CountingPool) -> None:
    env = await env_with_alice(store, hash_pool)
    logins = [env.auth.authenticate(make_request(("alice", PASSWORD))) for _ in range(32)]
    results = await within(DeferredList(logins, fireOnOneErrback=True, consumeErrors=True))
    assert [user for _, user in results] == [User("alice", False)] * 32
    assert hash_pool.verifications == 1


@pytest_twisted.ensureDeferred
async def test_token_bound_to_address_and_lifetime(store: Store, hash_pool: CountingPool) -> None:
    env = await env_with_alice(store, hash_pool, tokens_valid_for_seconds=3600)
    token, valid_for = await within(env.auth.issue_token(make_request(ip="192.0.2.10"), User("alice", False)))
    assert len(token) == 48 and int(token, 16) >= 0 and valid_for == 3600
    doc = await within(store.find_one("tokens", {"username": "alice"}))
    assert doc is not None and (doc["ip"], doc["timestamp"]) == ("192.0.2.10", 0) and token not in str(doc)
    assert await env.login(token) == User("alice", False)
    assert hash_pool.verifications == 0  # a token costs no PBKDF2
    await env.refused(token, ip="192.0.2.99")  # another address
    await env.refused(token, allow_token=False)  # GET /token wants the password
    await env.refused(token, user="root")  # another user's token
    env.clock.advance(3600)
    assert await env.login(token)  # still valid at exactly its lifetime
    env.clock.advance(max(1, PURGE_INTERVAL_SECONDS))
    await env.refused(token)
    assert await within(store.count("tokens", {})) == 0  # expired tokens are deleted


@pytest_twisted.ensureDeferred
async def test_token_works_during_a_lockout_like_0_10(store: Store, hash_pool: CountingPool) -> None:
    env = await env_with_alice(store, hash_pool, num_login_attempts=1)
    token, _ = await within(env.auth.issue_token(make_request(), User("alice", False)))
    await env.refused("wrong")
    await env.refused("wrong")
    assert "too many" in await env.refused()
    assert await env.login(token)


@pytest_twisted.ensureDeferred
async def test_token_via_trusted_proxy_is_bound_to_the_forwarded_address(store: Store, hash_pool: CountingPool) -> None:
    env = await env_with_alice(store, hash_pool, server={"trusted_proxies": ["127.0.0.1"]})
    via_proxy = {b"x-forwarded-for": [b"198.51.100.4"]}
    token, _ = await within(env.auth.issue_token(make_request(ip="127.0.0.1", headers=via_proxy), User("alice", False)))
    assert await env.login(token, ip="127.0.0.1", headers=via_proxy)
    await env.refused(token, ip="127.0.0.1", headers={b"x-forwarded-for": [b"198.51.100.5"]})
    await env.refused(token, ip="127.0.0.1")


@pytest_twisted.ensureDeferred
async def test_a_user_document_we_cannot_verify_refuses_every_password(store: Store, hash_pool: CountingPool) -> None:
    odd = {"username": "odd", "password": "not bytes", "salt": None, "is_admin": True}
    await within(store.insert_one("users", odd))
    env = Env(store, hash_pool)
    await env.refused("anything", user="odd")


def test_bearer_headers_give_their_token_and_other_schemes_none() -> None:
    from ccserver.auth.guard import parse_bearer

    assert parse_bearer(b"Bearer " + b"ab" * 24) == "ab" * 24
    assert parse_bearer(b"bearer  tok ") == "tok"
    assert parse_bearer(None) is None
    assert parse_bearer(b"Basic abc") is None
    with pytest.raises(BadCredentials, match="malformed Bearer token"):
        parse_bearer(b"Bearer \xff")
