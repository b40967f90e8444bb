"""Staging of TES tasks: inputs into a task's volumes before its first executor, outputs
out of them after its last.

Both go through the engine's archive API on a created (not started) container that mounts
the task's volumes: inputs are one tar stream per input, made on the fly from the source
and sent with ``put_archive``; outputs are read with ``get_archive`` member by member and
each file is uploaded while it is read.  Nothing is held whole in memory, no image of ours is
needed, and it works on every engine the daemon reaches, remote TLS ones included.

The functions block: the runner calls them on a thread pool, never on the reactor.  Up to
``[tes.storage] transfer_threads`` inputs (outputs) of one task move at once.
"""

from __future__ import annotations

import posixpath
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any, TypeVar, cast
from urllib.parse import urlsplit

import docker
import docker.errors

from ccserver.config import StorageConfig
from ccserver.tes import transfer_file, transfer_ftp, transfer_http, transfer_s3
from ccserver.tes.locations import check_url, redact
from ccserver.tes.output_archive import WILDCARD, collect, engine_reason
from ccserver.tes.tarstream import Tally, tar_chunks
from ccserver.tes.transfer_base import Budget, Entry, TransferError, Uploader

__all__ = ["StagingError", "check_url", "stage_in", "stage_out"]

_T = TypeVar("_T")


class StagingError(Exception):
    """Staging failed; the message names the input or output and its URL (no password)."""


def _label(kind: str, index: int, item: dict[str, Any]) -> str:
    url = item.get("url")
    return f"{kind}[{index}] ({redact(url)})" if url else f"{kind}[{index}]"


def _container_path(value: Any, label: str) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise StagingError(f"{label}: path must be an absolute path in the container, got {value!r}")
    path = posixpath.normpath(value)
    if path == "/":
        raise StagingError(f"{label}: path must not be /")
    return path


# --- inputs ---------------------------------------------------------------------------------


def _input_entries(item: dict[str, Any], storage: StorageConfig, budget: Budget) -> Iterator[Entry]:
    kind = item.get("type") or "FILE"
    if _is_content(item):
        data = (item.get("content") or "").encode("utf-8")
        yield Entry("", size=len(data), open=lambda: cast(IO[bytes], _BytesSource(data)))
        return
    url: str = item["url"]
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("http", "https"):
        yield from transfer_http.input_entries(url, kind, budget)
    elif scheme == "ftp":
        yield from transfer_ftp.input_entries(url, kind, budget)
    elif scheme == "s3":
        assert storage.s3 is not None  # checked before
        yield from transfer_s3.input_entries(url, kind, storage.s3, budget)
    else:
        yield from transfer_file.input_entries(url, kind, storage, budget)


def _is_content(item: dict[str, Any]) -> bool:
    """TES 1.1: a non-empty ``content`` wins over ``url``; an empty one with a url is unset."""
    return bool(item.get("content")) or (item.get("content") is not None and not item.get("url"))


class _BytesSource:
    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._at = 0

    def read(self, size: int = -1, /) -> bytes:
        end = len(self._data) if size is None or size < 0 else self._at + size
        chunk = bytes(self._data[self._at : end])
        self._at += len(chunk)
        return chunk

    def __enter__(self) -> _BytesSource:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def _check_inputs(inputs: list[dict[str, Any]], storage: StorageConfig) -> list[str]:
    paths = []
    for index, item in enumerate(inputs):
        label = _label("inputs", index, item)
        paths.append(_container_path(item.get("path"), label))
        kind = item.get("type") or "FILE"
        if kind not in ("FILE", "DIRECTORY"):
            raise StagingError(f"{label}: type must be FILE or DIRECTORY, got {kind!r}")
        if _is_content(item):
            if kind != "FILE":
                raise StagingError(f"{label}: a content input must be of type FILE")
            continue
        if not item.get("url"):
            raise StagingError(f"{label}: needs url or content")
        reason = check_url(item["url"], storage, kind=kind)
        if reason:
            raise StagingError(f"{label}: {reason}")
    return paths


def stage_in(
    client: docker.DockerClient, container: str, inputs: list[dict[str, Any]], storage: StorageConfig, deadline: float
) -> list[str]:
    """Write ``inputs`` (TES 1.1 Input dicts, real values) into ``container``'s volumes.

    Every input is checked before anything is fetched (an unsupported or refused URL fails
    at once, without reaching out).  Returns one log line per input; raises
    :class:`StagingError` naming the first input that failed."""
    paths = _check_inputs(inputs, storage)
    budget = Budget(deadline)

    def one(index: int) -> str:
        item = inputs[index]
        started = time.monotonic()
        tally = Tally()
        failure: list[BaseException] = []

        def chunks() -> Iterator[bytes]:
            try:
                yield from tar_chunks(paths[index], _input_entries(item, storage, budget), budget, tally)
            except Exception as e:  # not GeneratorExit: the engine may stop reading first
                failure.append(e)
                raise

        try:
            client.api.put_archive(container, "/", chunks())
        except Exception as e:
            if failure:
                raise failure[0] from None
            raise TransferError(f"the engine refused the archive: {engine_reason(e)}") from None
        if failure:
            raise failure[0]
        what = "content" if _is_content(item) else redact(item["url"])
        files = f"{tally.files} file{'s' if tally.files != 1 else ''}"
        return (
            f"inputs[{index}] {what} -> {paths[index]}: {files}, {tally.bytes} bytes "
            f"in {time.monotonic() - started:.2f} s"
        )

    return _run_all("inputs", inputs, one, storage.transfer_threads, budget)


_USERINFO_PASSWORD = re.compile(r"(://[^/\s:@]*):[^@\s/]*@")


def _reason(e: Exception) -> str:
    """The message of a failure, without any password of a URL it may quote."""
    if isinstance(e, (TransferError, StagingError)):
        text = str(e)
    elif isinstance(e, OSError) and e.strerror:
        text = f"{type(e).__name__}: {e.strerror}"
    elif isinstance(e, docker.errors.APIError):
        text = f"the engine answered: {e.explanation or e}"
    else:  # requests', urllib3's, tarfile's errors from the archive stream
        text = f"{type(e).__name__}: {e}"
    return _USERINFO_PASSWORD.sub(r"\1@", text)


def _run_all(
    kind: str, items: list[dict[str, Any]], one: Callable[[int], _T], threads: int, budget: Budget
) -> list[_T]:
    """``one`` for each index on up to ``threads`` threads; the first failure stops the
    others and is raised as a StagingError naming its item."""
    if not items:
        return []
    lock = threading.Lock()
    first: list[StagingError] = []

    def guarded(index: int) -> _T | None:
        try:
            return one(index)
        except Exception as e:
            with lock:
                if not first:
                    first.append(StagingError(f"{_label(kind, index, items[index])}: {_reason(e)}"))
            budget.abort()
            return None

    if threads <= 1 or len(items) == 1:
        results = [guarded(i) for i in range(len(items))]
    else:
        with ThreadPoolExecutor(max_workers=min(threads, len(items)), thread_name_prefix="tes-staging") as pool:
            results = list(pool.map(guarded, range(len(items))))
    if first:
        raise first[0]
    return [r for r in results if r is not None]


# --- outputs --------------------------------------------------------------------------------


def _check_outputs(outputs: list[dict[str, Any]], storage: StorageConfig) -> list[str]:
    paths = []
    for index, item in enumerate(outputs):
        label = _label("outputs", index, item)
        path = item.get("path")
        wildcard = isinstance(path, str) and bool(WILDCARD.search(path))
        paths.append(_container_path(path, label))
        kind = item.get("type") or "FILE"
        if kind not in ("FILE", "DIRECTORY"):
            raise StagingError(f"{label}: type must be FILE or DIRECTORY, got {kind!r}")
        if not item.get("url"):
            raise StagingError(f"{label}: url is required")
        reason = check_url(item["url"], storage, kind="DIRECTORY" if wildcard else kind, output=True)
        if reason:
            raise StagingError(f"{label}: {reason}")
    return paths


def _uploader(url: str, storage: StorageConfig, budget: Budget) -> Uploader:
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("http", "https"):
        return transfer_http.HttpUploader(budget)
    if scheme == "ftp":
        return transfer_ftp.FtpUploader(budget)
    if scheme == "s3":
        assert storage.s3 is not None
        return transfer_s3.S3Uploader(storage.s3, budget)
    return transfer_file.FileUploader(storage, budget)


def stage_out(
    client: docker.DockerClient, container: str, outputs: list[dict[str, Any]], storage: StorageConfig, deadline: float
) -> tuple[list[dict[str, Any]], list[str]]:
    """Upload ``outputs`` (TES 1.1 Output dicts, real values) from ``container``'s volumes.

    Returns the OutputFileLog dicts (``size_bytes`` a string, as TES has it) of every file
    uploaded and one log line per output; raises :class:`StagingError` naming the first
    output that failed (a missing FILE output among them)."""
    paths = _check_outputs(outputs, storage)
    budget = Budget(deadline)

    def one(index: int) -> tuple[list[dict[str, Any]], str]:
        item = outputs[index]
        started = time.monotonic()
        uploader = _uploader(item["url"], storage, budget)
        try:
            logs, note = collect(client, container, item, paths[index], uploader, budget)
        finally:
            uploader.close()
        size = sum(int(log["size_bytes"]) for log in logs)
        line = (
            f"outputs[{index}] {paths[index] if not WILDCARD.search(item['path']) else item['path']} -> "
            f"{redact(item['url'])}: {len(logs)} file{'s' if len(logs) != 1 else ''}, {size} bytes "
            f"in {time.monotonic() - started:.2f} s{note}"
        )
        return logs, line

    results = _run_all("outputs", outputs, one, storage.transfer_threads, budget)
    return [log for logs, _ in results for log in logs], [line for _, line in results]
