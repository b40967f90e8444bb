"""Password hashing in the CC-Server 0.10 format (cc-protocol.md §9).

0.10 stored ``password`` = PBKDF2-HMAC-SHA256(password as UTF-8, salt, 100,000 iterations,
32 bytes) and ``salt`` = 16 random bytes, both as raw bytes (BSON binary), next to
``hash_function = 'SHA256'``.  Keeping exactly that format is what lets an existing 0.10
database keep its accounts.

These functions are pure and deliberately slow (tens of milliseconds): callers run them on
the password-hash thread pool, never on the reactor thread.  ``hashlib.pbkdf2_hmac`` releases
the GIL while it works, so hashing threads do not stall the reactor either.
"""

from __future__ import annotations

import hashlib
import hmac
import os

HASH_FUNCTION = "SHA256"
ITERATIONS = 100_000
KEY_BYTES = 32
SALT_BYTES = 16


def derive_key(password: str, salt: bytes) -> bytes:
    """The 32-byte PBKDF2 key of ``password`` (encoded as UTF-8, like 0.10) under ``salt``."""
    return hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, ITERATIONS, dklen=KEY_BYTES)


def hash_password(password: str) -> tuple[bytes, bytes]:
    """A fresh ``(key, salt)`` pair for storing ``password``."""
    salt = os.urandom(SALT_BYTES)
    return derive_key(password, salt), salt


def verify_password(password: str, key: bytes, salt: bytes) -> bool:
    """Whether ``password`` hashes to ``key`` under ``salt``; the comparison is constant-time
    so the answer's timing says nothing about how much of the key matched."""
    return hmac.compare_digest(derive_key(password, bytes(salt)), bytes(key))
