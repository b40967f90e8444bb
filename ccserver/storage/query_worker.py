"""A query worker process: evaluates the pipelines of the query endpoints for the embedded store.

Started by :class:`~ccserver.storage.query_pool.QueryWorkerPool` as
``python -m ccserver.storage.query_worker DB_PATH MEMORY_MB``.  It lowers its priority, caps its
address space (``RLIMIT_AS``: its size after start-up plus ``MEMORY_MB``), opens the database
file read-only (WAL lets it read while the daemon writes) and then answers requests from stdin
on stdout, one at a time, with the same planning and evaluation code as the daemon
(:func:`ccserver.storage.embedded.aggregate_rows`).

A frame is a 4-byte big-endian length and a BSON document.  Request:
``{"collection", "pipeline", "max_documents", "timeout"}``; answer ``{"docs": [...]}`` or
``{"error": "query" | "timeout" | "memory" | "storage", "message": ...}``.  The daemon kills the
process at the deadline, so nothing here needs to be interruptible (a catastrophic regular
expression runs in C and never looks at the clock).  At EOF on stdin it exits.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from typing import Any, BinaryIO
from urllib.parse import quote

import bson

from ccserver.storage.base import QueryError, QueryTimeout, StorageError
from ccserver.storage.embedded import CODEC, aggregate_rows
from ccserver.storage.query_pool import HEADER, MIB

#: how much lower than the daemon a worker runs
NICENESS = 10


def frame(message: dict[str, Any]) -> bytes:
    data = bson.encode(message, codec_options=CODEC)
    return HEADER.pack(len(data)) + data


def read_frame(stream: BinaryIO) -> dict[str, Any] | None:
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    (size,) = HEADER.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        return None
    return bson.decode(data, codec_options=CODEC)


def limit_memory(memory_mb: int) -> None:
    """Cap the address space at its present size plus ``memory_mb`` (Linux; elsewhere no cap)."""
    try:
        import resource

        with open("/proc/self/status") as status:
            size_kb = next(int(line.split()[1]) for line in status if line.startswith("VmSize:"))
    except (ImportError, OSError, StopIteration, ValueError):
        return
    limit = size_kb * 1024 + memory_mb * MIB
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def open_read_only(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True, isolation_level=None, timeout=5.0)
    conn.execute("PRAGMA query_only = 1")
    return conn


def answer(conn: sqlite3.Connection, request: dict[str, Any], memory_mb: int) -> bytes:
    try:
        docs = aggregate_rows(
            conn, request["collection"], request["pipeline"], request["max_documents"], request["timeout"]
        )
        data = frame({"docs": docs})
    except QueryTimeout as e:
        return frame({"error": "timeout", "message": str(e)})
    except QueryError as e:
        return frame({"error": "query", "message": str(e)})
    except (StorageError, sqlite3.Error) as e:
        return frame({"error": "storage", "message": str(e)})
    except (bson.errors.BSONError, OverflowError, TypeError, ValueError) as e:
        return frame({"error": "query", "message": f"the answer cannot be encoded: {e}"})
    if len(data) > memory_mb * MIB:
        return frame({"error": "memory", "message": f"the answer is larger than {memory_mb} MiB"})
    return data


def serve(path: str, memory_mb: int, stdin: BinaryIO, stdout: BinaryIO) -> None:
    # built before the cap, so that it can still be sent when memory has run out
    out_of_memory = frame({"error": "memory", "message": f"the query needs more than {memory_mb} MiB", "retire": True})
    try:
        os.nice(NICENESS)
    except OSError:
        pass
    limit_memory(memory_mb)
    conn = open_read_only(path)
    while True:
        request = read_frame(stdin)
        if request is None:
            return
        try:
            data = answer(conn, request, memory_mb)
        except MemoryError:
            data = None
        if data is None:
            stdout.write(out_of_memory)
            stdout.flush()
            return  # a heap that ran out is not trusted with the next query: the pool starts another
        stdout.write(data)
        stdout.flush()


def main(argv: list[str]) -> int:
    path, memory_mb = argv[1], int(argv[2])
    serve(path, memory_mb, sys.stdin.buffer, sys.stdout.buffer)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
