"""Where a TES input comes from or an output goes: URL schemes, file roots, redaction.

Everything here is pure (no network, no file system), so the API can call :func:`check_url`
when a task is submitted; staging checks ``file://`` paths again with symlinks resolved.
"""

from __future__ import annotations

import os
import posixpath
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from ccserver.config import StorageConfig

SCHEMES = ("http", "https", "ftp", "s3", "file")


def redact(url: str) -> str:
    """``url`` without the password of its userinfo (for messages and logs)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username}@{host}" if parts.username else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def file_path(url: str) -> str:
    """The host path of a ``file://`` URL, normalized (``..`` collapsed); ValueError if it
    names another host or no absolute path."""
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise ValueError(f"file:// URL names host {parts.netloc!r}; only local paths are allowed")
    path = unquote(parts.path)
    if not path.startswith("/") or "\0" in path:
        raise ValueError("file:// URL needs an absolute path")
    return posixpath.normpath(path).replace("//", "/", 1)


def under_roots(path: str, roots: tuple[str, ...]) -> bool:
    """Whether ``path`` is one of ``roots`` or below one (lexically)."""
    for root in roots:
        root = os.path.normpath(root)
        if path == root or path.startswith(root.rstrip("/") + "/"):
            return True
    return False


def s3_location(url: str) -> tuple[str, str]:
    """Bucket and key of ``s3://bucket/key``."""
    parts = urlsplit(url)
    if not parts.netloc:
        raise ValueError("s3:// URL names no bucket")
    return parts.netloc, unquote(parts.path.lstrip("/"))


def check_url(url: str, storage: StorageConfig, *, kind: str = "FILE", output: bool = False) -> str | None:
    """Why ``url`` cannot be an input (or, with ``output``, an output) of ``kind``
    (FILE or DIRECTORY) under ``storage``; None when it can.  No I/O: symlinks are
    resolved when the task is staged."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as e:
        return f"not a valid URL: {e}"
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        return f"unsupported URL scheme {scheme + '://' if scheme else '(none)'}; supported: " + ", ".join(
            s + "://" for s in SCHEMES
        )
    if scheme in ("http", "https", "ftp") and not parts.hostname:
        return f"{scheme}:// URL names no host"
    if scheme in ("http", "https") and kind == "DIRECTORY" and not output:
        return (
            "DIRECTORY inputs cannot come from http(s):// (HTTP has no directory listing); use s3://, ftp:// or file://"
        )
    if scheme == "s3":
        if storage.s3 is None:
            return "s3:// is not configured on this server ([tes.storage.s3])"
        try:
            bucket, key = s3_location(url)
        except ValueError as e:
            return str(e)
        if not key and kind == "FILE":
            return "s3:// URL names no object key"
    if scheme == "file":
        try:
            path = file_path(url)
        except ValueError as e:
            return str(e)
        if not storage.file_roots:
            return "file:// is not allowed on this server ([tes.storage] file_roots is empty)"
        if not under_roots(path, storage.file_roots):
            return f"{path} is outside the allowed directories ([tes.storage] file_roots)"
    return None


def advertised_storage(storage: StorageConfig) -> list[str]:
    """What inputs and outputs may use, for the ``storage`` list of TES service-info: the
    schemes, and each allowed ``file://`` root."""
    found = ["http://", "https://", "ftp://"]
    if storage.s3 is not None:
        found.append("s3://")
    found.extend(f"file://{root}" for root in storage.file_roots)
    return found


def join_url(url: str, rel: str) -> str:
    """``url`` with the relative path ``rel`` appended (one slash between them)."""
    if not rel:
        return url
    parts = urlsplit(url)
    quoted = "/".join(_quote(p) for p in rel.strip("/").split("/"))
    path = parts.path.rstrip("/") + "/" + quoted
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


def _quote(segment: str) -> str:
    return quote(segment, safe="!$&'()*+,;=:@-._~")
