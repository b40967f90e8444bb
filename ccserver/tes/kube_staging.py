"""The staging of TES tasks on a Kubernetes cluster: the daemon's side of the exchange with a
pod's staging steps (docs/kubernetes.rst, "TES tasks on a cluster").

A pod cannot be reached through an archive API as a Docker container can, and it should not
hold the credentials of the task's storage.  So the daemon fetches and uploads, as on a
Docker node, and the pod's two staging steps (:mod:`ccserver.kubernetes.tes_jobs`) only move
tar streams to and from the daemon, over the callback address, in pieces of bounded size:

* before the pod exists, :func:`ccserver.tes.staging.stage_in` writes each input's tar
  stream into the attempt's :class:`Spool` (a directory on the daemon's disk) through
  :class:`SpoolClient`, which stands for the engine's client; the pod's first init
  container reads them back piece by piece and unpacks them into the task's volumes;
* the pod's last container packs each output path into a tar stream and sends it piece by
  piece; once the pod has succeeded, :func:`ccserver.tes.staging.stage_out` reads those
  streams through :class:`SpoolClient` as it would read an engine's ``get_archive`` and
  uploads every file.

A spool is named by a random token (the capability the pod is given); the web layer maps
the routes ``/tes-staging/TOKEN/...`` to :class:`StagingExchange`.  Every file operation runs
on the staging thread pool, never on the reactor.
"""

from __future__ import annotations

import posixpath
import secrets
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker.errors

from ccserver.errors import Invalid, NotFound
from ccserver.tes.output_archive import MODE_DIR

#: the largest piece of a tar stream one request carries (below the listener's body limit)
PIECE_BYTES = 4 * 1024 * 1024
#: what a piece request may carry on top of its data (headers are not counted in the body)
PIECE_MARGIN = 1024
#: seconds a file operation may wait for a thread of the staging pool
QUEUE_SECONDS = 60.0


def piece_bytes(max_body_bytes: int) -> int:
    """The piece size for a listener whose bodies may have ``max_body_bytes``."""
    return max(64 * 1024, min(PIECE_BYTES, max_body_bytes - PIECE_MARGIN))


@dataclass
class Received:
    """An output path's tar stream as the pod sent it."""

    path: Path
    size: int = 0
    complete: bool = False
    missing: bool = False
    is_dir: bool = False
    name: str = ""


class Spool:
    """One attempt's staging files (BLOCKING methods: the staging pool runs them)."""

    def __init__(self, root: Path, archive_paths: list[str]) -> None:
        self.root = root
        #: the output paths the pod sends, by index (see ``tes_jobs.archive_paths``)
        self.archive_paths = archive_paths
        self.inputs: list[tuple[str, Path, int]] = []
        self.outputs: dict[int, Received] = {}
        self._lock = threading.Lock()

    # --- inputs (written by stage_in, read by the pod) ------------------------------------

    def add_input(self, directory: str, chunks: Any) -> None:
        with self._lock:
            index = len(self.inputs)
            path = self.root / f"in-{index}.tar"
            self.inputs.append((directory, path, -1))
        size = 0
        with open(path, "wb") as out:
            for chunk in [chunks] if isinstance(chunks, bytes | bytearray) else chunks:
                out.write(chunk)
                size += len(chunk)
        with self._lock:
            self.inputs[index] = (directory, path, size)

    def manifest(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{"dir": d, "size": size} for d, _, size in self.inputs if size >= 0]

    def input_piece(self, index: int, offset: int, size: int) -> bytes:
        with self._lock:
            if not 0 <= index < len(self.inputs) or self.inputs[index][2] < 0:
                raise NotFound(f"no input {index} in this staging area")
            _, path, total = self.inputs[index]
        if offset < 0 or offset > total:
            raise Invalid(f"offset {offset} is outside input {index} ({total} bytes)")
        with open(path, "rb") as source:
            source.seek(offset)
            return source.read(size)

    # --- outputs (written by the pod, read by stage_out) -----------------------------------

    def output_piece(
        self, index: int, offset: int, source: Any, limit: int, last: bool, is_dir: bool, name: str, missing: bool
    ) -> int:
        """Append the piece read from ``source`` (a request's body: at most ``limit`` bytes)
        at ``offset`` (a piece sent again is taken once); the size so far."""
        if not 0 <= index < len(self.archive_paths):
            raise NotFound(f"no output {index} in this staging area")
        data = source.read(limit + 1) if not isinstance(source, bytes) else source
        if len(data) > limit:
            raise Invalid(f"output {index}: a piece may have at most {limit} bytes")
        with self._lock:
            got = self.outputs.get(index)
            if got is None:
                got = self.outputs[index] = Received(self.root / f"out-{index}.tar")
                got.path.touch()
            if got.complete:
                return got.size
            if offset != got.size and not (offset < got.size and offset + len(data) <= got.size):
                raise Invalid(f"output {index}: piece at offset {offset}, but {got.size} bytes have come")
            if offset == got.size and data:
                with open(got.path, "ab") as out:
                    out.write(data)
                got.size += len(data)
            if last:
                got.complete, got.missing, got.is_dir, got.name = True, missing, is_dir, name
            return got.size

    def complete(self) -> bool:
        """Every output path has come whole."""
        with self._lock:
            got = [self.outputs.get(i) for i in range(len(self.archive_paths))]
        return all(g is not None and g.complete for g in got)

    def archive(self, path: str, chunk_size: int) -> tuple[_Chunks, dict[str, Any]]:
        """The tar stream of output path ``path`` and its stat, as an engine's ``get_archive``."""
        normal = posixpath.normpath(path)
        with self._lock:
            index = self.archive_paths.index(normal) if normal in self.archive_paths else -1
            got = self.outputs.get(index)
        if got is None or not got.complete:
            raise docker.errors.NotFound(f"{path} was not sent by the pod")
        if got.missing:
            raise docker.errors.NotFound(f"{path} does not exist")
        stat: dict[str, Any] = {"name": got.name, "mode": MODE_DIR if got.is_dir else 0o644, "linkTarget": ""}
        return _Chunks(got.path, chunk_size), stat

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


class _Chunks:
    """A file read in chunks, closable like the engine's archive stream."""

    def __init__(self, path: Path, chunk_size: int) -> None:
        self._file = open(path, "rb")  # noqa: SIM115  # closed by close() or at its end
        self._size = chunk_size

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        chunk = self._file.read(self._size) if not self._file.closed else b""
        if not chunk:
            self._file.close()
            raise StopIteration
        return chunk

    def close(self) -> None:
        self._file.close()


class SpoolClient:
    """What :mod:`ccserver.tes.staging` needs of an engine's client (``client.api``'s
    ``put_archive`` and ``get_archive``), on a spool."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self.api = self

    def put_archive(self, container: str, path: str, data: Any) -> bool:
        self.spool.add_input(path, data)
        return True

    def get_archive(self, container: str, path: str, chunk_size: int = 2 * 1024 * 1024) -> Any:
        return self.spool.archive(path, chunk_size)


class StagingExchange:
    """The spools of the attempts under way, by token; what the staging routes call."""

    def __init__(self, pool: Any, directory: str | None = None) -> None:
        """``pool``: a :class:`ccserver.threads.ThreadPoolService` (its ``run``);
        ``directory``: where spools are made (default: the system's temporary directory)."""
        self.pool = pool
        self.directory = directory
        self._spools: dict[str, Spool] = {}

    async def open(self, archive_paths: list[str]) -> tuple[str, Spool]:
        root = Path(
            await self.pool.run_started_within(QUEUE_SECONDS, tempfile.mkdtemp, "", "ccserver-tes-", self.directory)
        )
        token = secrets.token_urlsafe(32)
        spool = Spool(root, archive_paths)
        self._spools[token] = spool
        return token, spool

    async def close(self, token: str) -> None:
        spool = self._spools.pop(token, None)
        if spool is not None:
            await self.pool.run_started_within(QUEUE_SECONDS, spool.remove)

    def _spool(self, token: str) -> Spool:
        spool = self._spools.get(token)
        if spool is None:
            # one answer for every unknown token: nothing tells a guess how close it came
            raise NotFound("no such staging area (it ended, or the address is wrong)")
        return spool

    async def manifest(self, token: str) -> list[dict[str, Any]]:
        return self._spool(token).manifest()

    async def input_piece(self, token: str, index: int, offset: int, size: int) -> bytes:
        spool = self._spool(token)
        result: bytes = await self.pool.run_started_within(QUEUE_SECONDS, spool.input_piece, index, offset, size)
        return result

    async def output_piece(
        self,
        token: str,
        index: int,
        offset: int,
        source: Any,
        limit: int,
        *,
        last: bool = False,
        is_dir: bool = False,
        name: str = "",
        missing: bool = False,
    ) -> int:
        spool = self._spool(token)
        size: int = await self.pool.run_started_within(
            QUEUE_SECONDS, spool.output_piece, index, offset, source, limit, last, is_dir, name, missing
        )
        return size
