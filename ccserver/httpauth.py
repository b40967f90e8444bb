"""HTTP Digest authentication, client side (RFC 7616), for notifications sent with treq.

treq has basic authentication built in but no digest, and 0.10 (through ``requests``) offered
both to notification receivers.  The handshake is small: send the request, and on a ``401`` with a
``WWW-Authenticate: Digest ...`` challenge send it again with an ``Authorization`` header computed
here.  Supported: algorithms MD5, SHA-256 and SHA-512-256 (each also ``-sess``), ``qop=auth`` and
``qop=auth-int`` (the body is known, so it can be hashed), the RFC 2069 form without qop,
``opaque`` and ``userhash``.

This module is pure: the caller supplies the client nonce (``cnonce``), so tests are exact.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_SEPARATORS = re.compile(r"[\s,]*")
_EQUALS = re.compile(r"\s*=\s*")
_ESCAPE = re.compile(r"\\(.)")


def _sha512_256(data: bytes) -> Any:
    return hashlib.new("sha512_256", data)


# RFC 7616 §3.2 names (upper case) -> hash constructor
HASHES: dict[str, Callable[[bytes], Any]] = {
    "MD5": hashlib.md5,
    "SHA-256": hashlib.sha256,
    "SHA-512-256": _sha512_256,
}


class DigestError(ValueError):
    """The challenge cannot be answered (unknown algorithm, or no qop this client supports)."""


@dataclass(frozen=True)
class DigestChallenge:
    """A parsed ``WWW-Authenticate: Digest`` challenge; ``qop`` holds the offered values, lower case."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    userhash: bool = False
    stale: bool = False


def parse_challenges(header: str) -> list[tuple[str, dict[str, str]]]:
    """Split one ``WWW-Authenticate`` value into (scheme lower case, {param lower case: value}) pairs.

    A value may hold several challenges (``Basic realm="a", Digest realm="b", nonce="c"``); a comma
    separates both challenges and parameters, so a parameter is recognised by its ``=``.
    """
    challenges: list[tuple[str, dict[str, str]]] = []
    pos, end = 0, len(header)
    while True:
        pos = _SEPARATORS.match(header, pos).end()  # type: ignore[union-attr]  # [\s,]* always matches
        if pos >= end:
            return challenges
        token = _TOKEN.match(header, pos)
        if token is None:
            pos += 1  # something unparseable (a token68 tail): skip it, keep looking for Digest
            continue
        name, pos = token.group(), token.end()
        equals = _EQUALS.match(header, pos)
        if equals is None or not challenges:
            challenges.append((name.lower(), {}))
            continue
        pos = equals.end()
        quoted = _QUOTED.match(header, pos)
        if quoted is not None:
            value, pos = _ESCAPE.sub(r"\1", quoted.group(1)), quoted.end()
        else:
            bare = _TOKEN.match(header, pos)
            value, pos = (bare.group(), bare.end()) if bare else ("", pos)
        challenges[-1][1][name.lower()] = value


def find_digest_challenge(values: Iterable[str | bytes]) -> DigestChallenge | None:
    """The first usable Digest challenge among ``WWW-Authenticate`` header values, or ``None``.

    A challenge this client cannot answer (unknown algorithm) is skipped, so a server offering
    SHA-256 and MD5 in two challenges is answered with the one understood.
    """
    for value in values:
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        for scheme, params in parse_challenges(text):
            if scheme != "digest" or "nonce" not in params:
                continue
            algorithm = params.get("algorithm", "MD5").upper()
            if algorithm.removesuffix("-SESS") not in HASHES:
                continue
            return DigestChallenge(
                realm=params.get("realm", ""),
                nonce=params["nonce"],
                algorithm=algorithm,
                qop=tuple(q.strip().lower() for q in params.get("qop", "").split(",") if q.strip()),
                opaque=params.get("opaque"),
                userhash=params.get("userhash", "").lower() == "true",
                stale=params.get("stale", "").lower() == "true",
            )
    return None


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def digest_authorization(
    challenge: DigestChallenge,
    method: str,
    uri: str,
    username: str,
    password: str,
    *,
    cnonce: str,
    nc: int = 1,
    body: bytes = b"",
) -> str:
    """The ``Authorization`` header value answering ``challenge`` for one request.

    ``uri`` is the request target as sent on the request line (path and query).  ``qop=auth`` is
    preferred when offered; ``auth-int`` (which hashes ``body``) is used only when it is the one
    offered; without qop the RFC 2069 response is computed.
    """
    base = challenge.algorithm.removesuffix("-SESS")
    try:
        hash_function = HASHES[base]
    except KeyError:
        raise DigestError(f"unsupported digest algorithm {challenge.algorithm!r}") from None

    def h(text: str | bytes) -> str:
        return str(hash_function(text.encode("utf-8") if isinstance(text, str) else text).hexdigest())

    if not challenge.qop:
        qop = None
    elif "auth" in challenge.qop:
        qop = "auth"
    elif "auth-int" in challenge.qop:
        qop = "auth-int"
    else:
        raise DigestError(f"no supported qop among {', '.join(challenge.qop)}")

    ha1 = h(f"{username}:{challenge.realm}:{password}")
    if challenge.algorithm.endswith("-SESS"):
        ha1 = h(f"{ha1}:{challenge.nonce}:{cnonce}")
    ha2 = h(f"{method}:{uri}:{h(body)}") if qop == "auth-int" else h(f"{method}:{uri}")
    nc_text = f"{nc:08x}"
    if qop is None:
        response = h(f"{ha1}:{challenge.nonce}:{ha2}")
    else:
        response = h(f"{ha1}:{challenge.nonce}:{nc_text}:{cnonce}:{qop}:{ha2}")

    user = h(f"{username}:{challenge.realm}") if challenge.userhash else username
    parts = [
        f"username={_quote(user)}",
        f"realm={_quote(challenge.realm)}",
        f"uri={_quote(uri)}",
        f"algorithm={challenge.algorithm}",
        f"nonce={_quote(challenge.nonce)}",
    ]
    if qop is not None:
        parts += [f"nc={nc_text}", f"cnonce={_quote(cnonce)}", f"qop={qop}"]
    parts.append(f"response={_quote(response)}")
    if challenge.opaque is not None:
        parts.append(f"opaque={_quote(challenge.opaque)}")
    if challenge.userhash:
        parts.append("userhash=true")
    return "Digest " + ", ".join(parts)
