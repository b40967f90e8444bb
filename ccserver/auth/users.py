"""User accounts in the 0.10 layout: ``{username, password, salt, hash_function, is_admin}``.

Used by ``ccserver-admin``; the daemon only reads accounts.  Hashing runs on the given pool,
so these functions are safe to call with the reactor running.

Changing a password (``set_password``, or ``create_user`` over an existing name, which
replaces the account like 0.10's ``create_user`` script did) also revokes the user's tokens:
whoever held the old password should not keep access through a token it bought.  The
daemon's verification cache needs no signal: its entries are bound to the stored hash.
"""

from __future__ import annotations

from ccserver.auth.guard import User
from ccserver.auth.passwords import HASH_FUNCTION, hash_password
from ccserver.storage.base import Store
from ccserver.threads import ThreadPoolService


def check_username(name: str) -> None:
    """Refuse names that HTTP basic authentication cannot carry (``:``) or that would be
    invisible or ambiguous in logs (control characters, surrounding spaces)."""
    if not name:
        raise ValueError("the username is empty")
    if ":" in name:
        raise ValueError("a username cannot contain ':' (HTTP basic authentication splits there)")
    if any(ord(c) < 32 or ord(c) == 127 for c in name) or name != name.strip():
        raise ValueError("a username cannot contain control characters or surrounding spaces")


def check_password(password: str) -> None:
    if not password:
        raise ValueError("the password is empty")
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("the password is not valid UTF-8 text") from None


async def _hashed(pool: ThreadPoolService, password: str) -> dict[str, object]:
    key, salt = await pool.run(hash_password, password)
    return {"password": key, "salt": salt, "hash_function": HASH_FUNCTION}


async def create_user(store: Store, pool: ThreadPoolService, name: str, password: str, is_admin: bool) -> bool:
    """Create the account, or replace it when the name exists (as 0.10 did); fires with
    ``True`` when it was new."""
    check_username(name)
    check_password(password)
    fields = {"username": name, **await _hashed(pool, password), "is_admin": bool(is_admin)}
    # the store has no upsert: update first, insert when nothing matched
    if await store.update_one("users", {"username": name}, {"$set": fields}):
        await store.delete_many("tokens", {"username": name})
        return False
    await store.insert_one("users", dict(fields))
    return True


async def list_users(store: Store) -> list[User]:
    docs = await store.find("users", {}, sort=[("username", 1)], projection={"username": 1, "is_admin": 1})
    return [User(username=d["username"], is_admin=bool(d.get("is_admin", False))) for d in docs]


async def delete_user(store: Store, name: str) -> bool:
    """Delete the account with its tokens and block entries; ``False`` when there was none.
    The user's tasks stay (their documents are history, and admins can still read them)."""
    deleted = await store.delete_many("users", {"username": name})
    await store.delete_many("tokens", {"username": name})
    await store.delete_many("block_entries", {"username": name})
    return bool(deleted)


async def set_password(store: Store, pool: ThreadPoolService, name: str, password: str) -> bool:
    """Give an existing account a new password and revoke its tokens; ``False`` when there
    is no such user."""
    check_password(password)
    if await store.find_one("users", {"username": name}) is None:
        return False
    if not await store.update_one("users", {"username": name}, {"$set": await _hashed(pool, password)}):
        return False
    await store.delete_many("tokens", {"username": name})
    return True
