"""``http(s)://`` inputs (GET) and outputs (PUT) with :mod:`requests`, streamed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO, Any, cast

import requests

from ccserver.tes.transfer_base import CHUNK, Budget, BudgetReader, Entry, Readable, TransferError

#: the bytes are counted against Content-Length, so they must arrive as sent
_HEADERS = {"Accept-Encoding": "identity", "User-Agent": "ccserver-tes"}


def _reason(response: requests.Response) -> str:
    return f"{response.status_code} {response.reason}".strip()


def input_entries(url: str, kind: str, budget: Budget) -> Iterator[Entry]:
    if kind != "FILE":
        raise TransferError("DIRECTORY inputs cannot come from http(s):// (HTTP has no directory listing)")
    timeout = budget.timeout()
    try:
        response = requests.get(url, stream=True, timeout=(min(timeout, 30.0), timeout), headers=_HEADERS)
    except requests.RequestException as e:
        raise TransferError(f"GET failed: {type(e).__name__}") from None
    if response.status_code != 200:
        response.close()
        raise TransferError(_reason(response))
    encoded = response.headers.get("Content-Encoding", "identity").lower() not in ("", "identity")
    length = response.headers.get("Content-Length")
    size = int(length) if length and length.isdigit() and not encoded else None
    raw = response.raw
    if encoded:
        raw.decode_content = True

    def opener() -> IO[bytes]:
        return cast(IO[bytes], _Closing(raw, response))

    yield Entry("", size=size, open=opener)


class _Closing:
    """The response body, closing the response with it.  Reads give what has arrived
    (``read1``), so that a server sending a byte at a time cannot hold a read, and with it
    the deadline check, for longer than one socket timeout."""

    def __init__(self, raw: Any, response: requests.Response) -> None:
        self._raw = raw
        self._response = response

    def read(self, size: int = -1, /) -> bytes:
        try:
            return cast(bytes, self._raw.read1(size if size and size > 0 else CHUNK))
        except (requests.RequestException, OSError) as e:
            raise TransferError(f"GET failed while reading: {type(e).__name__}") from None
        except Exception as e:  # urllib3's ProtocolError, ReadTimeoutError
            raise TransferError(f"GET failed while reading: {type(e).__name__}") from None

    def close(self) -> None:
        self._response.close()

    def __enter__(self) -> _Closing:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class HttpUploader:
    """PUTs each output file to its URL."""

    def __init__(self, budget: Budget) -> None:
        self._budget = budget
        self._session = requests.Session()

    def put(self, url: str, source: Readable, size: int) -> None:
        timeout = self._budget.timeout()
        body = BudgetReader(source, self._budget, size)
        try:
            response = self._session.put(
                url,
                data=body if size else b"",
                timeout=(min(timeout, 30.0), timeout),
                headers={"User-Agent": "ccserver-tes", "Content-Type": "application/octet-stream"},
            )
        except TransferError:
            raise
        except requests.RequestException as e:
            raise TransferError(f"PUT failed: {type(e).__name__}") from None
        response.close()
        if not 200 <= response.status_code < 300:
            raise TransferError(f"PUT answered {_reason(response)}")

    def make_dir(self, url: str) -> None:
        """HTTP has no directories: an empty directory uploads nothing."""

    def close(self) -> None:
        self._session.close()
