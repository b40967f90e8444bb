"""The password format must stay byte-for-byte what CC-Server 0.10 stored."""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from ccserver.auth.passwords import ITERATIONS, derive_key, hash_password, verify_password


def test_hash_has_the_0_10_sizes_and_a_fresh_salt_each_time() -> None:
    key, salt = hash_password("s3cret")
    again_key, again_salt = hash_password("s3cret")
    assert (len(key), len(salt)) == (32, 16)
    assert salt != again_salt and key != again_key
    assert verify_password("s3cret", key, salt)
    assert verify_password("s3cret", again_key, again_salt)


def test_wrong_password_and_wrong_salt_fail() -> None:
    key, salt = hash_password("s3cret")
    assert not verify_password("s3cret ", key, salt)
    assert not verify_password("", key, salt)
    assert not verify_password("s3cret", key, bytes(16))


def test_a_key_made_the_0_10_way_verifies() -> None:
    # 0.10 derived keys with the cryptography package; the same bytes must verify here
    salt = bytes(range(16))
    password = "pässwörd ☃"
    kdf = PBKDF2HMAC(algorithm=SHA256(), length=32, salt=salt, iterations=100000)
    key = kdf.derive(password.encode("utf-8"))
    assert ITERATIONS == 100000
    assert derive_key(password, salt) == key
    assert verify_password(password, key, salt)


def test_matches_hashlib_directly() -> None:
    salt = b"0123456789abcdef"
    assert derive_key("x", salt) == hashlib.pbkdf2_hmac("sha256", b"x", salt, 100000, 32)


def test_binary_subclasses_from_the_database_are_accepted() -> None:
    from bson.binary import Binary

    key, salt = hash_password("pw")
    assert verify_password("pw", Binary(key), Binary(salt))
