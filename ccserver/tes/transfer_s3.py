"""``s3://bucket/key`` inputs and outputs with boto3, against the endpoint of
``[tes.storage.s3]`` (any S3-compatible server).  A DIRECTORY is every object under
``key/``; uploads go through boto3's managed transfer without threads, one part in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO, Any, cast

import boto3
import botocore.config
import botocore.exceptions
from boto3.s3.transfer import TransferConfig

from ccserver.config import S3Config
from ccserver.tes.locations import s3_location
from ccserver.tes.transfer_base import Budget, Entry, Readable, TransferError

_ERRORS = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError)
#: one part of 8 MiB in memory at a time, in the calling thread
_UPLOAD = TransferConfig(use_threads=False, multipart_chunksize=8 * 1024 * 1024, multipart_threshold=8 * 1024 * 1024)


def client(s3: S3Config, budget: Budget) -> Any:
    timeout = budget.timeout()
    return boto3.session.Session().client(
        "s3",
        endpoint_url=s3.endpoint_url,
        region_name=s3.region,
        aws_access_key_id=s3.access_key_id,
        aws_secret_access_key=s3.secret_access_key,
        config=botocore.config.Config(
            connect_timeout=min(timeout, 30.0),
            read_timeout=timeout,
            retries={"max_attempts": 2, "mode": "standard"},
            # no credentials configured: anonymous requests instead of a search of the host
            signature_version=botocore.UNSIGNED if s3.access_key_id is None else None,
            s3={"addressing_style": "path"},
        ),
    )


def _describe(e: Exception) -> str:
    if isinstance(e, botocore.exceptions.ClientError):
        error = e.response.get("Error", {})
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return f"S3 {error.get('Code', 'error')}" + (f" ({status})" if status else "")
    return f"S3 {type(e).__name__}"


class _Body:
    def __init__(self, body: Any) -> None:
        self._body = body

    def read(self, size: int = -1, /) -> bytes:
        try:
            return cast(bytes, self._body.read(size))
        except Exception as e:  # botocore's ReadTimeoutError, ResponseStreamingError, ...
            raise TransferError(f"S3 read failed: {type(e).__name__}") from None

    def close(self) -> None:
        self._body.close()

    def __enter__(self) -> _Body:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _get(s3: Any, bucket: str, key: str) -> IO[bytes]:
    try:
        return cast(IO[bytes], _Body(s3.get_object(Bucket=bucket, Key=key)["Body"]))
    except _ERRORS as e:
        raise TransferError(f"{_describe(e)} for s3://{bucket}/{key}") from None


def input_entries(url: str, kind: str, config: S3Config, budget: Budget) -> Iterator[Entry]:
    bucket, key = s3_location(url)
    s3 = client(config, budget)
    if kind == "FILE":
        try:
            size = s3.head_object(Bucket=bucket, Key=key)["ContentLength"]
        except _ERRORS as e:
            raise TransferError(_describe(e)) from None
        yield Entry("", size=size, open=lambda: _get(s3, bucket, key))
        return
    prefix = key.rstrip("/") + "/" if key.strip("/") else ""
    yield Entry("", is_dir=True)
    found = 0
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            budget.check()
            for item in page.get("Contents", ()):
                rel = item["Key"][len(prefix) :]
                if not rel or rel.endswith("/"):
                    continue  # a "directory marker" object
                if any(part in ("", ".", "..") for part in rel.split("/")):
                    raise TransferError(f"object key {item['Key']!r} is not a usable path")
                found += 1
                name = item["Key"]
                yield Entry(rel, size=item["Size"], open=lambda name=name: _get(s3, bucket, name))  # type: ignore[misc]
    except _ERRORS as e:
        raise TransferError(_describe(e)) from None
    if not found:
        raise TransferError(f"no object under s3://{bucket}/{prefix}")


class S3Uploader:
    def __init__(self, config: S3Config, budget: Budget) -> None:
        self._budget = budget
        self._s3 = client(config, budget)

    def put(self, url: str, source: Readable, size: int) -> None:
        bucket, key = s3_location(url)
        budget = self._budget

        class _Checked:
            def read(self, n: int = -1, /) -> bytes:
                budget.check()
                return source.read(n)

        try:
            self._s3.upload_fileobj(_Checked(), bucket, key, Config=_UPLOAD)
        except _ERRORS as e:
            raise TransferError(_describe(e)) from None
        except Exception as e:  # boto3's S3UploadFailedError wraps the ClientError
            cause = e.__cause__ or e.__context__
            if isinstance(cause, TransferError):
                raise cause from None
            raise TransferError(f"S3 upload failed: {e}") from None

    def make_dir(self, url: str) -> None:
        """S3 has no directories: an empty directory uploads nothing."""

    def close(self) -> None:
        self._s3.close()
