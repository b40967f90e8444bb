"""``file://`` inputs and outputs: host directories under ``[tes.storage] file_roots``.

Paths are checked twice: lexically by :func:`ccserver.tes.locations.check_url` (at
submission) and here with every symlink resolved, so that a link inside a root cannot reach
a file outside the roots.  Files are opened with ``O_NOFOLLOW`` on the resolved path.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from typing import IO

from ccserver.config import StorageConfig
from ccserver.tes.locations import file_path, under_roots
from ccserver.tes.transfer_base import Budget, Entry, Readable, TransferError

_READ = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_WRITE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def _roots(storage: StorageConfig) -> tuple[str, ...]:
    return tuple(os.path.realpath(r) for r in storage.file_roots)


def resolve(path: str, storage: StorageConfig) -> str:
    """``path`` with symlinks resolved; TransferError if that is outside the roots."""
    real = os.path.realpath(path)
    if not under_roots(real, _roots(storage)):
        raise TransferError(f"{path} resolves to {real}, outside the allowed directories ([tes.storage] file_roots)")
    return real


def _opener(real: str) -> IO[bytes]:
    try:
        return os.fdopen(os.open(real, _READ), "rb", buffering=0)
    except OSError as e:
        raise TransferError(f"cannot read {real}: {e.strerror}") from None


def input_entries(url: str, kind: str, storage: StorageConfig, budget: Budget) -> Iterator[Entry]:
    real = resolve(file_path(url), storage)
    try:
        info = os.stat(real)
    except OSError as e:
        raise TransferError(f"{real}: {e.strerror}") from None
    if kind == "FILE":
        if not stat.S_ISREG(info.st_mode):
            raise TransferError(f"{real} is not a regular file")
        yield Entry("", size=info.st_size, open=lambda: _opener(real))
        return
    if not stat.S_ISDIR(info.st_mode):
        raise TransferError(f"{real} is not a directory")
    yield Entry("", is_dir=True)
    yield from _tree(real, "", storage, budget)


def _tree(directory: str, rel: str, storage: StorageConfig, budget: Budget) -> Iterator[Entry]:
    budget.check()
    try:
        names = sorted(os.listdir(directory))
    except OSError as e:
        raise TransferError(f"cannot list {directory}: {e.strerror}") from None
    for name in names:
        path = os.path.join(directory, name)
        sub = f"{rel}/{name}" if rel else name
        real = resolve(path, storage)
        info = os.stat(real)
        if stat.S_ISDIR(info.st_mode):
            if real != path:
                raise TransferError(f"{path} is a symbolic link to a directory; not followed")
            yield Entry(sub, is_dir=True)
            yield from _tree(real, sub, storage, budget)
        elif stat.S_ISREG(info.st_mode):
            yield Entry(sub, size=info.st_size, open=lambda real=real: _opener(real))  # type: ignore[misc]


class FileUploader:
    """Writes output files below the allowed directories."""

    def __init__(self, storage: StorageConfig, budget: Budget) -> None:
        self._storage = storage
        self._budget = budget

    def _target(self, url: str) -> str:
        path = file_path(url)
        # the nearest existing ancestor must already resolve inside the roots, so that
        # creating the missing parents never follows a link out of them
        ancestor = os.path.dirname(path)
        while not os.path.exists(ancestor) and ancestor != "/":
            ancestor = os.path.dirname(ancestor)
        resolve(ancestor, self._storage)
        return path

    def make_dir(self, url: str) -> None:
        path = self._target(url)
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as e:
            raise TransferError(f"cannot create {path}: {e.strerror}") from None
        resolve(path, self._storage)

    def put(self, url: str, source: Readable, size: int) -> None:
        path = self._target(url)
        parent = os.path.dirname(path)
        try:
            os.makedirs(parent, exist_ok=True)
            resolve(parent, self._storage)
            fd = os.open(path, _WRITE, 0o644)
        except OSError as e:
            raise TransferError(f"cannot write {path}: {e.strerror}") from None
        with os.fdopen(fd, "wb") as sink:
            while True:
                self._budget.check()
                data = source.read(1024 * 1024)
                if not data:
                    break
                sink.write(data)

    def close(self) -> None:
        pass
