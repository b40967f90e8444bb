"""What every transfer scheme shares: the deadline, the entries of an input, bounded reads.

An input is a sequence of :class:`Entry` objects (one for a FILE, the tree for a DIRECTORY)
whose bytes are only opened when the tar stream reaches them, so that nothing larger than
one chunk is held in memory.  Scheme modules raise :class:`TransferError` with a short
reason; :mod:`ccserver.tes.staging` adds which input or output it was.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Protocol

#: bytes read or written at once (the memory one transfer holds)
CHUNK = 1024 * 1024


class TransferError(Exception):
    """A transfer failed; the message is the reason, without the URL."""


class Budget:
    """The deadline of one staging call and the flag that stops its other transfers."""

    def __init__(self, deadline: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.deadline = deadline
        self._clock = clock
        self._aborted = threading.Event()

    def remaining(self) -> float:
        return self.deadline - self._clock()

    def timeout(self, most: float = 60.0) -> float:
        """A socket timeout that ends by the deadline (raises once it has passed)."""
        self.check()
        return max(0.5, min(most, self.remaining()))

    def check(self) -> None:
        if self._aborted.is_set():
            raise TransferError("stopped: another transfer of the task failed")
        if self.remaining() <= 0:
            raise TransferError("deadline passed")

    def abort(self) -> None:
        self._aborted.set()


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class Entry:
    """One member of an input: ``rel`` is its path below the input's path ("" for a FILE)."""

    rel: str
    is_dir: bool = False
    #: bytes, when known before reading (None: spooled to a temporary file first)
    size: int | None = None
    #: opens the bytes (a file-like object; closed after use)
    open: Callable[[], IO[bytes]] | None = None


class BudgetReader:
    """A file-like view of ``source`` that checks the budget on every read and, given
    ``size``, gives exactly that many bytes (a length :mod:`requests` can announce: no
    ``tell``, which would make it guess 0)."""

    def __init__(self, source: Readable, budget: Budget, size: int | None = None) -> None:
        self._source = source
        self._budget = budget
        self._size = size
        self.done = 0

    def __len__(self) -> int:
        return self._size if self._size is not None else 0

    def read(self, size: int = -1, /) -> bytes:
        self._budget.check()
        want = CHUNK if size is None or size < 0 else min(size, CHUNK)
        if self._size is not None:
            want = min(want, self._size - self.done)
            if want <= 0:
                return b""
        data = self._source.read(want)
        if self._size is not None and not data and self.done < self._size:
            raise TransferError(f"ended after {self.done} of {self._size} bytes")
        self.done += len(data)
        return data


class ChunkStream(io.RawIOBase):
    """A file-like object over an iterator of byte chunks (the Docker SDK's archive stream)."""

    def __init__(self, chunks: Iterator[bytes], budget: Budget) -> None:
        self._chunks = chunks
        self._budget = budget
        self._rest = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._rest:
            self._budget.check()
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._rest = chunk
        n = min(len(buffer), len(self._rest))
        buffer[:n] = self._rest[:n]
        self._rest = self._rest[n:]
        return n


def copy(source: Readable, sink: IO[bytes], budget: Budget) -> int:
    """Copy ``source`` to ``sink`` chunk by chunk; the number of bytes."""
    total = 0
    while True:
        budget.check()
        data = source.read(CHUNK)
        if not data:
            return total
        sink.write(data)
        total += len(data)


class Uploader(Protocol):
    """Where the files of one output go (one connection for all of them where it matters)."""

    def put(self, url: str, source: Readable, size: int) -> None: ...

    def make_dir(self, url: str) -> None: ...

    def close(self) -> None: ...
