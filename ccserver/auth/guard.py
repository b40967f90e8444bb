"""The guard at the door of every user endpoint (cc-protocol.md §9).

Order of a check, as in CC-Server 0.10: parse ``Authorization: Basic``; look the user up;
where allowed, try the secret as a token (bound to user, client address and age); then the
lockout rule; then the password.  Every failed password check stores a block entry, and a
user with more than ``num_login_attempts`` of them younger than ``block_for_seconds`` is
refused even with the right password.

**Why there is a verification cache.**  0.10 clients commonly send the password with every
request, and PBKDF2 with 100,000 iterations costs tens of milliseconds of CPU by design.
Paying it per request would cap the whole server at a few dozen requests per second.  So a
successful verification is remembered for ``server.auth_cache_seconds`` (0 disables it):

* keyed by HMAC-SHA256(process-random key, username, password), so the memory never holds a
  password or a fast, offline-guessable hash of one, and the key dies with the process;
* the entry remembers the stored ``(password, salt)`` it was checked against, and a hit
  counts only while the user's current stored hash is the same, so ``set-password``,
  ``create-user`` over an existing name or ``delete-user`` (from any process) end it at once;
* failures are never cached, and the lockout rule is checked before the cache, so a cached
  password does not bypass a lockout;
* bounded (LRU) so that many users cannot grow it without limit.

The trade-off: within the cache lifetime, a password that was right stays accepted by this
process until the stored hash changes, and a memory dump of the process could confirm a
guessed password for a cached user (it cannot reveal one).  Identical verifications that
run at the same time share one PBKDF2 run, and hashing happens on its own small thread pool
(``server.password_hash_threads``), so a burst of logins cannot starve Docker or database
work, and the reactor thread never hashes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import os
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from ccserver.auth.passwords import HASH_FUNCTION, KEY_BYTES, SALT_BYTES, verify_password
from ccserver.config import Config, ConfigError
from ccserver.errors import BadCredentials
from ccserver.logs import printable
from ccserver.storage.base import Store
from ccserver.threads import ThreadPoolService

log = Logger(namespace="ccserver.auth")

TOKEN_BYTES = 24
#: the field of a ``tokens`` document holding :func:`token_digest` of the token (never the token)
TOKEN_DIGEST_FIELD = "token_sha256"
#: how many verified (username, password) pairs the cache keeps at most
CACHE_SIZE = 10_000
#: expired tokens and block entries are deleted at most this often (0.10 did it per request)
PURGE_INTERVAL_SECONDS = 60.0
_TOKEN_SHAPE = re.compile(f"[0-9a-fA-F]{{{2 * TOKEN_BYTES}}}")
_DENIED = "invalid username or password"
_LOCKED = "too many failed logins for this user; try again later"

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Clock(Protocol):
    def seconds(self) -> float: ...


@dataclass(frozen=True)
class User:
    username: str
    is_admin: bool


def token_digest(token: str) -> str:
    """What the store keeps of a token: its SHA-256, hex.  A token is 24 random bytes, so a
    plain (unsalted, fast) hash is enough: nobody can guess one from its digest, and a copy of
    the ``tokens`` collection no longer logs anybody in."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def parse_basic(header: bytes | None) -> tuple[str, str]:
    """``(username, secret)`` from an ``Authorization`` header value; anything malformed is
    :class:`~ccserver.errors.BadCredentials`, never an unhandled error."""
    if not header:
        raise BadCredentials("credentials required (HTTP basic authentication)")
    scheme, _, encoded = header.strip().partition(b" ")
    if scheme.lower() != b"basic":
        raise BadCredentials("unsupported authorization scheme; use HTTP basic authentication or a Bearer token")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise BadCredentials("malformed basic credentials (base64 of UTF-8 'user:password')") from None
    username, colon, secret = decoded.partition(":")
    if not colon or not username:
        raise BadCredentials("malformed basic credentials (base64 of UTF-8 'user:password')")
    return username, secret


def parse_bearer(header: bytes | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value; ``None`` for any
    other scheme (or no header)."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return None
    try:
        return token.strip().decode("ascii")
    except UnicodeDecodeError:
        raise BadCredentials("malformed Bearer token") from None


def parse_networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    """``server.trusted_proxies`` (addresses or CIDRs) as networks."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ConfigError(f"server.trusted_proxies: {entry!r} is not an IP address or CIDR") from None
    return tuple(networks)


def parse_address(text: str) -> Address | None:
    """An address as forwarding headers write it (``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``),
    IPv4-mapped IPv6 folded to IPv4; ``None`` when it is not an address."""
    text = text.strip()
    if text.startswith("[") and "]" in text:
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class VerificationCache:
    """Successful verifications by opaque key, each valid until its expiry and only against
    the stored hash it was made with; least recently used entries go first."""

    def __init__(self, lifetime: float, size: int = CACHE_SIZE) -> None:
        self.lifetime = lifetime
        self.size = size
        self._entries: OrderedDict[bytes, tuple[float, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def hit(self, key: bytes, stored: bytes, now: float) -> bool:
        entry = self._entries.get(key)
        if entry is None:
            return False
        expiry, remembered = entry
        if now >= expiry or not hmac.compare_digest(remembered, stored):
            del self._entries[key]
            return False
        self._entries.move_to_end(key)
        return True

    def remember(self, key: bytes, stored: bytes, now: float) -> None:
        if self.lifetime <= 0:
            return
        self._entries[key] = (now + self.lifetime, stored)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)


class Authenticator:
    """Checks HTTP basic credentials (password, or token where allowed) against the store.

    ``authenticate(request, allow_token=True)`` fires with a :class:`User` or fails with
    :class:`ccserver.errors.BadCredentials`; it sets ``request.ccserver_user`` for the
    request log.  ``issue_token(request, user)`` fires with ``(token, valid_for_seconds)``.
    ``client_address(request)`` is the socket peer, or the forwarded address when the peer
    is a trusted proxy.

    ``clock`` is anything with ``seconds()`` (the reactor, or a ``task.Clock`` in tests);
    ``hash_pool`` runs the PBKDF2 work.
    """

    def __init__(
        self,
        store: Store,
        config: Config,
        clock: Clock,
        hash_pool: ThreadPoolService,
        *,
        cache_size: int = CACHE_SIZE,
    ) -> None:
        self.store = store
        self.clock = clock
        self.hash_pool = hash_pool
        self.num_login_attempts = config.defaults.num_login_attempts
        self.block_for_seconds = config.defaults.block_for_seconds
        self.tokens_valid_for_seconds = config.defaults.tokens_valid_for_seconds
        self.trusted_proxies = parse_networks(config.server.trusted_proxies)
        self.cache = VerificationCache(config.server.auth_cache_seconds, cache_size)
        self._cache_secret = os.urandom(32)
        # unknown users are checked against this, so they cost one PBKDF2 like everybody
        self._dummy = (os.urandom(KEY_BYTES), os.urandom(SALT_BYTES))
        self._inflight: dict[tuple[bytes, bytes], list[Deferred[bool]]] = {}
        # username -> {cache key of a password check in flight: how many requests wait on it}
        self._guesses: dict[str, dict[bytes, int]] = {}
        self._last_purge = {"tokens": float("-inf"), "block_entries": float("-inf")}

    # --- the public interface ------------------------------------------------------------

    def authenticate(self, request: Any, allow_token: bool = True) -> Deferred[User]:
        return ensureDeferred(self._authenticate(request, allow_token))

    def issue_token(self, request: Any, user: User) -> Deferred[tuple[str, float]]:
        return ensureDeferred(self._issue_token(request, user))

    def client_address(self, request: Any) -> str:
        peer = request.getClientAddress()
        host = getattr(peer, "host", None)
        address = parse_address(host) if isinstance(host, str) else None
        if address is None:
            # a UNIX socket (or an unusual transport): nothing to bind a token to but "local"
            return str(host) if host else "local"
        if not self._trusted(address):
            return str(address)
        hops = ",".join(h.decode("latin-1") for h in request.requestHeaders.getRawHeaders(b"x-forwarded-for", []))
        if hops.strip():
            # walk from the right: each trusted proxy vouches for the hop left of it; the first
            # hop that is not a trusted proxy is the client.  A hop that is not an address
            # ends the walk at the last proxy that could vouch for anything.
            for hop in reversed(hops.split(",")):
                hop_address = parse_address(hop)
                if hop_address is None:
                    break
                address = hop_address
                if not self._trusted(address):
                    break
            return str(address)
        real_ip = request.getHeader(b"x-real-ip")
        forwarded = parse_address(real_ip.decode("latin-1")) if real_ip else None
        return str(forwarded or address)

    # --- the check -------------------------------------------------------------------------

    async def _authenticate(self, request: Any, allow_token: bool) -> User:
        header = request.getHeader(b"authorization")
        bearer = parse_bearer(header)
        if bearer is not None:
            if not allow_token:
                raise BadCredentials("this endpoint needs a password (HTTP basic authentication), not a token")
            return await self._bearer(request, bearer)
        username, secret = parse_basic(header)
        user = await self.store.find_one("users", {"username": username})
        if allow_token and _TOKEN_SHAPE.fullmatch(secret):
            # also for unknown users, so the answer takes as long either way
            valid = await self._token_valid(username, secret, self.client_address(request))
            if valid and user is not None:
                return self._accept(request, user, "token")
        guess = self._cache_key(username, secret)
        recent = await self._recent_failures(username)
        waiting = self._guesses.get(username, {})
        if recent + len(waiting.keys() - {guess}) > self.num_login_attempts:
            log.warn(
                "login refused for {user} from {ip}: locked out",
                user=printable(username),
                ip=printable(self.client_address(request)),
            )
            raise BadCredentials(_LOCKED)
        stored = _stored_hash(user)
        if stored is not None and self.cache.hit(guess, stored[0] + stored[1], self.clock.seconds()):
            return self._accept(request, user, "cached password")
        waiting = self._guesses.setdefault(username, {})
        waiting[guess] = waiting.get(guess, 0) + 1
        try:
            key, salt = stored or self._dummy
            if await self._verify(guess, secret, key, salt) and stored is not None:
                self.cache.remember(guess, key + salt, self.clock.seconds())
                return self._accept(request, user, "password")
            await self.store.insert_one("block_entries", {"username": username, "timestamp": self.clock.seconds()})
        finally:
            waiting[guess] -= 1
            if not waiting[guess]:
                del waiting[guess]
            if not waiting:
                self._guesses.pop(username, None)
        log.info(
            "failed login for {user} from {ip}", user=printable(username), ip=printable(self.client_address(request))
        )
        raise BadCredentials(_DENIED)

    async def _bearer(self, request: Any, token: str) -> User:
        """``Authorization: Bearer <token>``: a token of ``GET /token``, bound like any token
        to the address that asked for it.  The token carries no user name, so it is looked up
        by its SHA-256: timing can tell nothing about a token from a digest lookup."""
        if not _TOKEN_SHAPE.fullmatch(token):
            raise BadCredentials(_DENIED)
        oldest = self.clock.seconds() - self.tokens_valid_for_seconds
        await self._purge("tokens", oldest)
        ip = self.client_address(request)
        found = await self.store.find_one(
            "tokens", {TOKEN_DIGEST_FIELD: token_digest(token), "ip": ip, "timestamp": {"$gte": oldest}}
        )
        user = await self.store.find_one("users", {"username": found["username"]}) if found else None
        if user is None:
            log.info("failed Bearer login from {ip}", ip=printable(ip))
            raise BadCredentials(_DENIED)
        return self._accept(request, user, "bearer token")

    def _accept(self, request: Any, user: Any, how: str) -> User:
        request.ccserver_user = user["username"]
        return User(username=user["username"], is_admin=bool(user.get("is_admin", False)))

    def _cache_key(self, username: str, secret: str) -> bytes:
        # length-prefixed, so no (username, password) pair can collide with another
        name = username.encode("utf-8")
        message = len(name).to_bytes(4, "big") + name + secret.encode("utf-8")
        return hmac.new(self._cache_secret, message, hashlib.sha256).digest()

    def _verify(self, guess: bytes, secret: str, key: bytes, salt: bytes) -> Deferred[bool]:
        """One PBKDF2 on the hash pool per distinct (password, stored hash) in flight; every
        caller asking for the same verification meanwhile gets the same answer."""
        ident = (guess, key + salt)
        waiters = self._inflight.get(ident)
        if waiters is None:
            waiters = self._inflight[ident] = []

            def done(result: bool | Failure) -> None:
                for waiter in self._inflight.pop(ident):
                    if isinstance(result, Failure):
                        waiter.errback(result)
                    else:
                        waiter.callback(result)

            self.hash_pool.run(verify_password, secret, key, salt).addBoth(done)
        waiter: Deferred[bool] = Deferred()
        waiters.append(waiter)
        return waiter

    async def _token_valid(self, username: str, secret: str, ip: str) -> bool:
        oldest = self.clock.seconds() - self.tokens_valid_for_seconds
        await self._purge("tokens", oldest)
        candidates = await self.store.find("tokens", {"username": username, "ip": ip})
        # looked up by username and address, digests compared here in constant time: a lookup
        # by value would let response times hint at how much of a digest matched
        given = token_digest(secret)
        valid = False
        for doc in candidates:
            digest = doc.get(TOKEN_DIGEST_FIELD)
            timestamp = doc.get("timestamp")
            if not isinstance(digest, str) or not isinstance(timestamp, (int, float)):
                continue  # also a plaintext token of an older ccserver: it no longer works
            matches = hmac.compare_digest(digest.encode("ascii"), given.encode("ascii"))
            valid |= matches and timestamp >= oldest
        return valid

    async def _recent_failures(self, username: str) -> int:
        oldest = self.clock.seconds() - self.block_for_seconds
        await self._purge("block_entries", oldest)
        return await self.store.count("block_entries", {"username": username, "timestamp": {"$gte": oldest}})

    async def _purge(self, collection: str, oldest: float) -> None:
        """Delete aged-out tokens or block entries, as 0.10 did on every check, but at most
        once per :data:`PURGE_INTERVAL_SECONDS`: every query also filters by age, so the
        purge only keeps the collections small."""
        now = self.clock.seconds()
        if now - self._last_purge[collection] < PURGE_INTERVAL_SECONDS:
            return
        self._last_purge[collection] = now
        await self.store.delete_many(collection, {"timestamp": {"$lt": oldest}})
        if collection == "tokens":
            # plaintext tokens stored by an older ccserver: useless now, and secrets at rest
            await self.store.delete_many(collection, {"token": {"$exists": True}})

    async def _issue_token(self, request: Any, user: User) -> tuple[str, float]:
        token = os.urandom(TOKEN_BYTES).hex()
        await self.store.insert_one(
            "tokens",
            {
                "username": user.username,
                "ip": self.client_address(request),
                TOKEN_DIGEST_FIELD: token_digest(token),
                "timestamp": self.clock.seconds(),
            },
        )
        return token, self.tokens_valid_for_seconds

    def _trusted(self, address: Address) -> bool:
        return any(address in network for network in self.trusted_proxies)


def _stored_hash(user: Any) -> tuple[bytes, bytes] | None:
    """``(key, salt)`` of a user document in the 0.10 layout, or ``None`` when there is no
    user or its document is not one we can verify against (then every password fails)."""
    if user is None:
        return None
    key, salt = user.get("password"), user.get("salt")
    if user.get("hash_function", HASH_FUNCTION) != HASH_FUNCTION:
        return None
    if not isinstance(key, bytes) or not isinstance(salt, bytes) or len(key) != KEY_BYTES:
        return None
    return bytes(key), bytes(salt)
