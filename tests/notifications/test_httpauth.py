"""Digest authentication (RFC 7616) computed by ccserver.httpauth, checked against the RFC's examples."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from ccserver.httpauth import (
    DigestChallenge,
    DigestError,
    digest_authorization,
    find_digest_challenge,
    parse_challenges,
)

# RFC 7616 §3.9.1
RFC_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
RFC_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
RFC_HEADER = (
    f'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, nonce="{RFC_NONCE}", '
    f'opaque="{RFC_OPAQUE}", Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=MD5, '
    f'nonce="{RFC_NONCE}", opaque="{RFC_OPAQUE}"'
)


def fields(header: str) -> dict[str, str]:
    assert header.startswith("Digest ")
    return parse_challenges(header)[0][1]


def answer(challenge: DigestChallenge, **kwargs: object) -> dict[str, str]:
    header = digest_authorization(
        challenge,
        "GET",
        "/dir/index.html",
        "Mufasa",
        "Circle of Life",
        cnonce=RFC_CNONCE,
        **kwargs,  # type: ignore[arg-type]
    )
    return fields(header)


def test_rfc_7616_example_sha_256() -> None:
    challenge = find_digest_challenge([RFC_HEADER])
    assert challenge == DigestChallenge(
        realm="http-auth@example.org", nonce=RFC_NONCE, algorithm="SHA-256", qop=("auth", "auth-int"), opaque=RFC_OPAQUE
    )
    got = answer(challenge)
    assert got["response"] == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    assert got == {
        "username": "Mufasa",
        "realm": "http-auth@example.org",
        "uri": "/dir/index.html",
        "algorithm": "SHA-256",
        "nonce": RFC_NONCE,
        "nc": "00000001",
        "cnonce": RFC_CNONCE,
        "qop": "auth",
        "response": got["response"],
        "opaque": RFC_OPAQUE,
    }


def test_rfc_7616_example_md5() -> None:
    challenge = find_digest_challenge(["Digest " + RFC_HEADER.split(", Digest ", 1)[1]])
    assert challenge is not None and challenge.algorithm == "MD5"
    assert answer(challenge)["response"] == "8ca523f5e9506fed4657c9700eebdbec"


def md5(text: str | bytes) -> str:
    return hashlib.md5(text.encode() if isinstance(text, str) else text).hexdigest()


BASE = DigestChallenge(realm="r", nonce="n", algorithm="MD5", qop=("auth",))


def test_sess_variant_hashes_nonce_and_cnonce_into_ha1() -> None:
    got = answer(replace(BASE, algorithm="MD5-SESS"))
    ha1 = md5(f"{md5('Mufasa:r:Circle of Life')}:n:{RFC_CNONCE}")
    assert got["response"] == md5(f"{ha1}:n:00000001:{RFC_CNONCE}:auth:{md5('GET:/dir/index.html')}")
    assert got["algorithm"] == "MD5-SESS"


def test_auth_int_hashes_the_body_and_auth_is_preferred() -> None:
    body = b'{"a": 1}'
    got = answer(replace(BASE, qop=("auth-int",)), body=body)
    ha1 = md5("Mufasa:r:Circle of Life")
    ha2 = md5(f"GET:/dir/index.html:{md5(body)}")
    assert got["qop"] == "auth-int"
    assert got["response"] == md5(f"{ha1}:n:00000001:{RFC_CNONCE}:auth-int:{ha2}")
    assert answer(replace(BASE, qop=("auth-int", "auth")))["qop"] == "auth"


def test_rfc_2069_without_qop() -> None:
    got = answer(replace(BASE, qop=()))
    assert "qop" not in got and "nc" not in got and "cnonce" not in got
    assert got["response"] == md5(f"{md5('Mufasa:r:Circle of Life')}:n:{md5('GET:/dir/index.html')}")


def test_userhash_and_nonce_count() -> None:
    got = answer(replace(BASE, userhash=True), nc=255)
    assert got["username"] == md5("Mufasa:r")
    assert got["userhash"] == "true"
    assert got["nc"] == "000000ff"


def test_quotes_in_values_are_escaped() -> None:
    challenge = replace(BASE, realm='a "quoted" \\ realm')
    header = digest_authorization(challenge, "POST", "/", 'us"er', "pw", cnonce="c")
    assert fields(header)["realm"] == 'a "quoted" \\ realm'
    assert fields(header)["username"] == 'us"er'


def test_unsupported_qop_or_algorithm_is_an_error() -> None:
    with pytest.raises(DigestError, match="qop"):
        answer(replace(BASE, qop=("auth-conf",)))
    with pytest.raises(DigestError, match="algorithm"):
        answer(replace(BASE, algorithm="SHA-1"))


def test_parse_challenges_among_others() -> None:
    header = 'Negotiate abc==, Basic realm="a, b", Digest realm="x\\"y", nonce=abc, qop="auth,auth-int", stale=TRUE'
    assert parse_challenges(header)[1:] == [
        ("basic", {"realm": "a, b"}),
        ("digest", {"realm": 'x"y', "nonce": "abc", "qop": "auth,auth-int", "stale": "TRUE"}),
    ]
    challenge = find_digest_challenge([b'Basic realm="a"', header.encode()])
    assert challenge == DigestChallenge(realm='x"y', nonce="abc", qop=("auth", "auth-int"), stale=True)


def test_unknown_algorithms_and_challenges_without_nonce_are_skipped() -> None:
    assert find_digest_challenge(['Digest realm="a", nonce="n", algorithm=SHA-1']) is None
    assert find_digest_challenge(['Digest realm="a"', 'Basic realm="b"']) is None
    assert find_digest_challenge([]) is None
    got = find_digest_challenge(['Digest realm="a", nonce="n1", algorithm=SHA-1, Digest realm="a", nonce="n2"'])
    assert got is not None and got.nonce == "n2" and got.algorithm == "MD5"
    assert find_digest_challenge(['digest realm="a", nonce="n", algorithm=sha-256-sess']).algorithm == "SHA-256-SESS"
