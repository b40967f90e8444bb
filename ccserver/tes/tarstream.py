"""Tar streams made on the fly for the engine's archive upload (``put_archive``).

Each member's header is written when the stream reaches it and its bytes follow chunk by
chunk, so an input of any size passes through one chunk of memory.  A source whose size is
not known in advance (an HTTP answer without Content-Length) is spooled to a temporary file
first: a tar header needs the size.
"""

from __future__ import annotations

import tarfile
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass

from ccserver.tes.transfer_base import CHUNK, Budget, BudgetReader, Entry, TransferError, copy

BLOCK = 512


@dataclass
class Tally:
    """What one tar stream carried (for the log line)."""

    files: int = 0
    dirs: int = 0
    bytes: int = 0


def _header(name: str, *, size: int = 0, is_dir: bool = False) -> bytes:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if is_dir else tarfile.REGTYPE
    info.mode = 0o755 if is_dir else 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.size = size
    info.mtime = int(time.time())
    return info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")


def member_name(path: str, rel: str) -> str:
    """The tar member name of ``rel`` below the container path ``path`` (extracted at /)."""
    base = path.strip("/")
    return f"{base}/{rel}" if rel else base


def tar_chunks(path: str, entries: Iterable[Entry], budget: Budget, tally: Tally) -> Iterator[bytes]:
    """The tar stream putting ``entries`` at ``path`` when extracted at ``/``."""
    for entry in entries:
        budget.check()
        name = member_name(path, entry.rel)
        if entry.is_dir:
            tally.dirs += 1
            yield _header(name, is_dir=True)
            continue
        assert entry.open is not None
        with ExitStack() as stack:
            source = stack.enter_context(entry.open())
            size = entry.size
            if size is None:
                spool = stack.enter_context(tempfile.TemporaryFile(prefix="ccserver-tes-"))
                size = copy(source, spool, budget)
                spool.seek(0)
                source = spool
            yield _header(name, size=size)
            reader = BudgetReader(source, budget, size)
            while True:
                data = reader.read(CHUNK)
                if not data:
                    break
                yield data
            if source.read(1):
                raise TransferError(f"more bytes than the {size} announced")
            if size % BLOCK:
                yield b"\0" * (BLOCK - size % BLOCK)
        tally.files += 1
        tally.bytes += size
    yield b"\0" * (2 * BLOCK)
