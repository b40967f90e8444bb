"""``ftp://`` inputs (RETR, directory trees by MLSD) and outputs (STOR) with :mod:`ftplib`.

One control connection per input or output; each file has its own data connection,
opened only when the tar stream (or the upload) reaches it.
"""

from __future__ import annotations

import ftplib
import posixpath
import socket
from collections.abc import Iterator
from typing import IO, cast
from urllib.parse import unquote, urlsplit

from ccserver.tes.transfer_base import Budget, Entry, Readable, TransferError

_ERRORS = (ftplib.Error, OSError, EOFError)


def _connect(url: str, budget: Budget) -> tuple[ftplib.FTP, str]:
    parts = urlsplit(url)
    ftp = ftplib.FTP(timeout=budget.timeout(30.0))
    try:
        ftp.connect(parts.hostname or "", parts.port or 21)
        ftp.login(unquote(parts.username or "anonymous"), unquote(parts.password or "anonymous@"))
        ftp.voidcmd("TYPE I")
    except _ERRORS as e:
        ftp.close()
        raise TransferError(f"FTP: {_describe(e)}") from None
    return ftp, unquote(parts.path) or "/"


def _describe(e: BaseException) -> str:
    if isinstance(e, ftplib.Error):
        return str(e).strip()
    if isinstance(e, socket.timeout):
        return "timed out"
    return type(e).__name__ + (f": {e.strerror}" if isinstance(e, OSError) and e.strerror else "")


class _Retrieval:
    """The bytes of one RETR; closing it ends the transfer."""

    def __init__(self, ftp: ftplib.FTP, path: str) -> None:
        self._ftp = ftp
        try:
            ftp.voidcmd("TYPE I")  # a listing (MLSD) leaves the session in ASCII mode
            self._conn = ftp.transfercmd(f"RETR {path}")
        except _ERRORS as e:
            raise TransferError(f"FTP RETR {path}: {_describe(e)}") from None
        self._file = self._conn.makefile("rb")
        self._finished = False

    def read(self, size: int = -1, /) -> bytes:
        try:
            data = self._file.read1(size)  # what has arrived: a trickle cannot outlast the deadline
        except _ERRORS as e:
            raise TransferError(f"FTP read: {_describe(e)}") from None
        if not data and not self._finished:
            self._finish()
        return data

    def _finish(self) -> None:
        self._finished = True
        self._file.close()
        self._conn.close()
        try:
            self._ftp.voidresp()
        except _ERRORS as e:
            raise TransferError(f"FTP RETR: {_describe(e)}") from None

    def close(self) -> None:
        if not self._finished:
            self._finished = True
            self._file.close()
            self._conn.close()
            try:  # the server answers 226 or 426 for an aborted transfer
                self._ftp.voidresp()
            except _ERRORS:
                pass

    def __enter__(self) -> _Retrieval:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def input_entries(url: str, kind: str, budget: Budget) -> Iterator[Entry]:
    ftp, path = _connect(url, budget)
    try:
        if kind == "FILE":
            try:
                size: int | None = ftp.size(path)
            except ftplib.error_perm as e:
                raise TransferError(f"FTP: {path}: {_describe(e)}") from None
            except _ERRORS:
                size = None
            yield Entry("", size=size, open=lambda: cast(IO[bytes], _Retrieval(ftp, path)))
            return
        files = list(_walk(ftp, path.rstrip("/") or "/", "", budget))
        yield Entry("", is_dir=True)
        for rel, is_dir, size in files:
            full = posixpath.join(path, rel)
            yield Entry(rel, is_dir=is_dir, size=size, open=None if is_dir else _opener(ftp, full))
    finally:
        try:
            ftp.quit()
        except _ERRORS:
            ftp.close()


def _opener(ftp: ftplib.FTP, path: str):  # noqa: ANN202 - a closure over the path
    return lambda: cast(IO[bytes], _Retrieval(ftp, path))


def _walk(ftp: ftplib.FTP, directory: str, rel: str, budget: Budget) -> Iterator[tuple[str, bool, int | None]]:
    budget.check()
    try:
        listing = sorted(ftp.mlsd(directory, facts=["type", "size"]))
    except ftplib.error_perm as e:
        raise TransferError(f"FTP: cannot list {directory}: {_describe(e)}") from None
    except _ERRORS as e:
        raise TransferError(f"FTP: cannot list {directory}: {_describe(e)}") from None
    for name, facts in listing:
        kind = facts.get("type", "").lower()
        if kind in ("cdir", "pdir") or name in (".", ".."):
            continue
        sub = f"{rel}/{name}" if rel else name
        if kind == "dir":
            yield sub, True, None
            yield from _walk(ftp, posixpath.join(directory, name), sub, budget)
        elif kind == "file":
            size = facts.get("size")
            yield sub, False, int(size) if size and size.isdigit() else None


class FtpUploader:
    """STORs each output file, creating missing directories (one connection per server)."""

    def __init__(self, budget: Budget) -> None:
        self._budget = budget
        self._connections: dict[str, ftplib.FTP] = {}
        self._made: set[str] = set()

    def _ftp(self, url: str) -> tuple[ftplib.FTP, str]:
        parts = urlsplit(url)
        key = parts.netloc
        if key not in self._connections:
            self._connections[key], _ = _connect(url, self._budget)
        return self._connections[key], unquote(parts.path)

    def _mkdirs(self, ftp: ftplib.FTP, directory: str) -> None:
        if directory in ("", "/") or directory in self._made:
            return
        self._mkdirs(ftp, posixpath.dirname(directory))
        try:
            ftp.mkd(directory)
        except ftplib.error_perm:
            pass  # exists (or not allowed: STOR will say so)
        except _ERRORS as e:
            raise TransferError(f"FTP MKD {directory}: {_describe(e)}") from None
        self._made.add(directory)

    def put(self, url: str, source: Readable, size: int) -> None:
        ftp, path = self._ftp(url)
        self._mkdirs(ftp, posixpath.dirname(path))
        budget = self._budget

        class _Checked:
            def read(self, n: int = -1, /) -> bytes:
                budget.check()
                return source.read(n)

        try:
            ftp.storbinary(f"STOR {path}", cast(IO[bytes], _Checked()), blocksize=256 * 1024)
        except _ERRORS as e:
            raise TransferError(f"FTP STOR {path}: {_describe(e)}") from None

    def make_dir(self, url: str) -> None:
        ftp, path = self._ftp(url)
        self._mkdirs(ftp, path.rstrip("/"))

    def close(self) -> None:
        for ftp in self._connections.values():
            try:
                ftp.quit()
            except _ERRORS:
                ftp.close()
        self._connections.clear()
