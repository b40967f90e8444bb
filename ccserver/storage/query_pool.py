"""The daemon's side of the query workers (:mod:`ccserver.storage.query_worker`).

The embedded store has one database thread; a user's pipeline evaluated there (a catastrophic
``$regex``, a ``$concatArrays`` + ``$unwind`` explosion) held every other request behind it, and
a cooperative clock check cannot interrupt a regular expression running in C.  So the pipelines
of the query endpoints run in a few separate processes instead, and this pool:

* talks to them with ``spawnProcess`` and length-prefixed BSON frames, never a blocking read;
* starts a deadline when a query is *submitted* (queue time counts): at the deadline the query
  fails with :class:`QueryTimeout` at once, and the worker that runs it is killed (``SIGKILL``)
  and replaced;
* refuses an answer frame larger than ``memory_mb`` before reading it (and the worker caps its
  own address space, see :func:`~ccserver.storage.query_worker.limit_memory`).
"""

from __future__ import annotations

import os
import struct
import sys
from collections import deque
from dataclasses import dataclass
from typing import Any

import bson
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from ccserver.storage.base import Document, Pipeline, QueryError, QueryTimeout, StorageError, StorageUnavailable

#: a frame: this 4-byte big-endian length, then a BSON document
HEADER = struct.Struct(">I")
MIB = 1024 * 1024

#: how long stopping waits for the killed workers to be reaped
STOP_WAIT_SECONDS = 5.0
#: a worker that ended sooner than this after its start is replaced only when a query needs one
#: (so a worker that cannot start does not respawn in a loop)
WARM_RESPAWN_AFTER_SECONDS = 1.0
#: answers up to this size are decoded on the reactor thread; larger ones in a thread
INLINE_DECODE_BYTES = 256 * 1024
STDERR_KEEP_BYTES = 4096


@dataclass(eq=False)
class _Job:
    request: bytes
    timeout: float
    deferred: Deferred[list[Document]]
    timer: Any = None
    worker: _Worker | None = None

    @property
    def done(self) -> bool:
        return self.deferred.called


class _Worker(ProcessProtocol):
    def __init__(self, pool: QueryWorkerPool) -> None:
        self.pool = pool
        self.job: _Job | None = None
        self.buffer = bytearray()
        self.stderr = bytearray()
        self.ended = False
        self.started_at = pool.reactor.seconds()
        self.exit: Failure | None = None
        self.killed = False
        self.on_end: Deferred[None] | None = None

    def send(self, job: _Job) -> None:
        self.job = job
        job.worker = self
        assert self.transport is not None  # jobs go only to workers whose process started
        self.transport.write(job.request)

    def kill(self) -> None:
        self.killed = True
        if self.transport is None:
            return
        try:
            self.transport.signalProcess("KILL")
        except (ProcessExitedAlready, OSError):
            pass

    def childDataReceived(self, fd: int, data: bytes) -> None:
        if fd == 2:
            self.stderr += data
            del self.stderr[:-STDERR_KEEP_BYTES]
            return
        if self.killed:
            return  # its query was given up: what it still writes is for nobody
        self.buffer += data
        while len(self.buffer) >= HEADER.size:
            (size,) = HEADER.unpack_from(self.buffer)
            if size > self.pool.max_frame:
                self._give_up(QueryError(f"the answer is larger than query_memory_mb ({self.pool.memory_mb} MiB)"))
                return
            if len(self.buffer) < HEADER.size + size:
                return
            payload = bytes(self.buffer[HEADER.size : HEADER.size + size])
            del self.buffer[: HEADER.size + size]
            job, self.job = self.job, None
            small = len(payload) <= INLINE_DECODE_BYTES
            message = _decode(payload) if small else None
            if isinstance(message, dict) and message.get("retire"):
                self.kill()  # it exits after this answer (its memory ran out): no next query for it
            if job is not None:
                job.worker = None
                if small:
                    self.pool._decoded(job, message)
                else:
                    self.pool._answered(job, payload)
            self.pool._dispatch()

    def _give_up(self, error: Exception) -> None:
        job, self.job = self.job, None
        self.buffer.clear()
        self.kill()
        if job is not None:
            job.worker = None
            self.pool._finish(job, error)

    def processEnded(self, reason: Failure) -> None:
        self.ended = True
        self.exit = reason
        job, self.job = self.job, None
        if job is not None:
            job.worker = None
            detail = self.stderr.decode(errors="replace").strip().splitlines()[-1:] or [str(reason.value)]
            self.pool._finish(
                job,
                QueryError(
                    f"the query worker ended while running the query (over query_memory_mb = "
                    f"{self.pool.memory_mb} MiB?): {detail[0]}"
                ),
            )
        self.pool._ended(self)


class QueryWorkerPool(Service):
    """``size`` worker processes over the database file at ``path``; see the module docstring."""

    log = Logger()

    def __init__(self, path: str, size: int, memory_mb: int, reactor: Any, *, executable: str = sys.executable) -> None:
        if size < 1:
            raise ValueError(f"query_workers: expected at least 1, got {size}")
        self.path = path
        self.size = size
        self.memory_mb = memory_mb
        self.max_frame = memory_mb * MIB + MIB
        self.reactor = reactor
        self.executable = executable
        self.workers: list[_Worker] = []
        self.queue: deque[_Job] = deque()
        self._stopping = False

    # --- service ------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._stopping = False
        while len(self.workers) < self.size:
            self._spawn()

    def stopService(self) -> Deferred[Any]:
        """Fail the queued and running queries and kill the workers: they hold nothing but a
        read-only connection, so a kill loses nothing (and does not wait for one still
        importing its modules)."""
        super().stopService()
        self._stopping = True
        while self.queue:
            self._finish(self.queue.popleft(), StorageUnavailable("the embedded store is stopping"))
        if not self.workers:
            return succeed(None)
        ends = []
        for worker in list(self.workers):
            ended: Deferred[None] = Deferred()
            worker.on_end = ended
            ends.append(ended)
            worker._give_up(StorageUnavailable("the embedded store is stopping"))

        def done(result: Any) -> None:
            if isinstance(result, Failure):
                self.log.warn("query workers did not end within {seconds:g} s", seconds=STOP_WAIT_SECONDS)

        d = DeferredList(ends)
        d.addTimeout(STOP_WAIT_SECONDS, self.reactor)
        d.addBoth(done)
        return d

    # --- queries ------------------------------------------------------------------------

    def aggregate(
        self, collection: str, pipeline: Pipeline, *, max_documents: int, timeout: float
    ) -> Deferred[list[Document]]:
        if not self.running or self._stopping:
            return fail(StorageUnavailable("the embedded store's query workers are not running"))
        message = {
            "collection": collection,
            "pipeline": [dict(stage) for stage in pipeline],
            "max_documents": max_documents,
            "timeout": timeout,
        }
        try:
            data = bson.encode(message)
        except (bson.errors.BSONError, OverflowError, TypeError, ValueError) as e:
            return fail(QueryError(f"the pipeline cannot be encoded: {e}"))
        job = _Job(HEADER.pack(len(data)) + data, timeout, Deferred(lambda d: self._cancelled(job)))
        job.timer = self.reactor.callLater(timeout, self._expire, job)
        self.queue.append(job)
        self._dispatch()
        return job.deferred

    def _dispatch(self) -> None:
        while self.queue and not self._stopping:
            live = [w for w in self.workers if not (w.ended or w.killed)]
            worker = next((w for w in live if w.job is None), None)
            if worker is None:
                if len(live) >= self.size:  # a killed worker that has not ended yet is not counted
                    return
                worker = self._spawn()
            worker.send(self.queue.popleft())

    def _spawn(self) -> _Worker:
        worker = _Worker(self)
        args = [self.executable, "-m", "ccserver.storage.query_worker", self.path, str(self.memory_mb)]
        fds = {0: "w", 1: "r", 2: "r"}
        self.reactor.spawnProcess(worker, self.executable, args, env=dict(os.environ), childFDs=fds)
        self.workers.append(worker)
        return worker

    def _ended(self, worker: _Worker) -> None:
        if worker in self.workers:
            self.workers.remove(worker)
        if worker.on_end is not None and not worker.on_end.called:
            worker.on_end.callback(None)
        if self._stopping or not self.running:
            return
        lived = self.reactor.seconds() - worker.started_at
        live = [w for w in self.workers if not (w.ended or w.killed)]
        if lived >= WARM_RESPAWN_AFTER_SECONDS and len(live) < self.size:
            self._spawn()
        elif lived < WARM_RESPAWN_AFTER_SECONDS and not worker.killed:
            self.log.warn(
                "a query worker ended {seconds:.1f} s after its start: {stderr}",
                seconds=lived,
                stderr=worker.stderr.decode(errors="replace").strip()[-500:],
            )
        self._dispatch()

    def _expire(self, job: _Job) -> None:
        job.timer = None
        worker = job.worker
        if worker is not None:
            worker.job, job.worker = None, None
            worker.buffer.clear()
            worker.kill()
        elif job in self.queue:
            self.queue.remove(job)
        self._finish(job, QueryTimeout(f"the query ran longer than query_timeout_seconds ({job.timeout:g} s)"))

    def _cancelled(self, job: _Job) -> None:
        if job.timer is not None and job.timer.active():
            job.timer.cancel()
        job.timer = None
        if job.worker is not None:
            worker, job.worker = job.worker, None
            worker.job = None
            worker.buffer.clear()
            worker.kill()
        elif job in self.queue:
            self.queue.remove(job)

    def _finish(self, job: _Job, result: Any) -> None:
        if job.done:
            return
        if job.timer is not None and job.timer.active():
            job.timer.cancel()
        job.timer = None
        if isinstance(result, BaseException):
            job.deferred.errback(Failure(result))
        else:
            job.deferred.callback(result)

    def _answered(self, job: _Job, payload: bytes) -> None:
        if job.done:
            return
        d = deferToThreadPool(self.reactor, self.reactor.getThreadPool(), _decode, payload)
        d.addBoth(lambda result: self._decoded(job, result))

    def _decoded(self, job: _Job, result: Any) -> None:
        if isinstance(result, Failure):
            result = result.value
        if isinstance(result, BaseException):
            self._finish(job, result)
            return
        if "docs" in result:
            self._finish(job, result["docs"])
            return
        kind, message = result.get("error"), str(result.get("message"))
        if kind == "timeout":
            error: Exception = QueryTimeout(f"{message} (query_timeout_seconds)")
        elif kind == "memory":
            error = QueryError(f"{message} (query_memory_mb = {self.memory_mb})")
        elif kind == "storage":
            error = StorageError(message)
        else:
            error = QueryError(message)
        self._finish(job, error)


def _decode(payload: bytes) -> Any:
    from ccserver.storage.embedded import CODEC

    try:
        return bson.decode(payload, codec_options=CODEC)
    except bson.errors.BSONError as e:
        return StorageError(f"a query worker sent a broken answer: {e}")
