"""Storage on S3 (boto3). Keys live under an optional prefix in one bucket.

S3 itself makes every write whole-object. boto3, botocore and s3transfer errors become ``StorageError``
(``ObjectNotFound`` for a missing key), also while a caller reads a body from ``open``.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import boto3
import boto3.exceptions
import botocore.exceptions

from dcc.errors import ObjectNotFound, StorageError
from dcc.storage import Progress, check_key

_MISSING = {"404", "NoSuchKey", "NotFound"}
# ClientError and BotoCoreError from botocore; S3UploadFailedError and RetriesExceededError from boto3's
# transfer manager; OSError for the local file of put_file/download
_ERRORS = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, boto3.exceptions.Boto3Error, OSError)
_DELETE_BATCH = 1000  # the most keys one DeleteObjects request takes


S3_MAX_KEY_BYTES = 1024


def s3_client() -> Any:
    """An S3 client whose presigned URLs work everywhere: SigV4 (botocore still presigns with SigV2 in some regions,
    which S3 is turning off) on the bucket's regional host (the global one answers a new bucket, and every bucket of
    an opt-in region, with a redirect the signature does not survive)."""
    from botocore.config import Config

    return boto3.client("s3", config=Config(signature_version="s3v4", s3={
        "addressing_style": "virtual", "us_east_1_regional_endpoint": "regional"}))


class S3Storage:
    """Job data in ``s3://bucket/prefix``; thread-safe (boto3 clients are)."""

    def __init__(self, bucket: str, *, prefix: str = "", client: Any = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.client = s3_client() if client is None else client
        self.max_key_bytes = S3_MAX_KEY_BYTES - len(self.prefix.encode())
        """The longest key (bytes, before the prefix) S3 takes."""

    def _key(self, key: str) -> str:
        check_key(key)
        if key.endswith("/"):
            raise StorageError(f"storage key {key!r} names a prefix, not an object")
        return self.prefix + key

    def put_bytes(self, key: str, data: bytes, *, content_type: str | None = None) -> None:
        """Store ``data`` under ``key``."""
        full = self._key(key)
        extra = {"ContentType": content_type} if content_type else {}
        try:
            self.client.put_object(Bucket=self.bucket, Key=full, Body=data, **extra)
        except _ERRORS as exc:
            raise _translate(exc, key) from exc

    def put_file(self, key: str, path: Path, *, content_type: str | None = None) -> None:
        """Upload a file, streamed (multipart when large)."""
        full = self._key(key)
        extra = {"ExtraArgs": {"ContentType": content_type}} if content_type else {}
        try:
            self.client.upload_file(str(path), self.bucket, full, **extra)
        except _ERRORS as exc:
            raise _translate(exc, key) from exc

    def open(self, key: str) -> BinaryIO:
        """The object's streaming body (read errors arrive as ``StorageError``); the caller closes it."""
        full = self._key(key)
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=full)["Body"]
        except _ERRORS as exc:
            raise _translate(exc, key) from exc
        return io.BufferedReader(_Body(body, key), 1 << 16)

    def get_bytes(self, key: str) -> bytes:
        """The object under ``key``."""
        with self.open(key) as body:
            return body.read()

    def download(self, key: str, path: Path, *, progress: Progress | None = None) -> None:
        """Download the object to ``path`` (s3transfer writes a temporary file and renames it)."""
        full = self._key(key)
        callback = None
        if progress is not None:  # s3transfer calls back from its threads, with each piece's size
            lock, done = threading.Lock(), [0]

            def callback(size: int) -> None:
                with lock:
                    done[0] += size
                    progress(done[0])
        try:
            self.client.download_file(self.bucket, full, str(path), Callback=callback)
        except _ERRORS as exc:
            raise _translate(exc, key) from exc

    def exists(self, key: str) -> bool:
        """Whether ``key`` holds an object."""
        full = self._key(key)
        try:
            self.client.head_object(Bucket=self.bucket, Key=full)
        except _ERRORS as exc:
            error = _translate(exc, key)
            if isinstance(error, ObjectNotFound):
                return False
            raise error from exc
        return True

    def _pages(self, prefix: str) -> Iterator[list[dict[str, Any]]]:
        if prefix:
            check_key(prefix)
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                yield page.get("Contents", [])
        except _ERRORS as exc:
            raise _translate(exc, prefix) from exc

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        """``(key, size)`` under ``prefix``, in key order (S3 lists in UTF-8 byte order, as ``sorted`` does)."""
        for contents in self._pages(prefix):
            for obj in contents:
                yield obj["Key"][len(self.prefix):], int(obj["Size"])

    def delete_prefix(self, prefix: str) -> None:
        """Delete every object under ``prefix``, one request per listed page (at most a thousand keys)."""
        check_key(prefix)
        for contents in self._pages(prefix):
            keys = [{"Key": obj["Key"]} for obj in contents]
            for start in range(0, len(keys), _DELETE_BATCH):
                batch = keys[start:start + _DELETE_BATCH]
                try:
                    reply = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
                except _ERRORS as exc:
                    raise _translate(exc, prefix) from exc
                errors = reply.get("Errors", [])
                if errors:  # a per-key failure is reported in the 200 reply, not raised
                    first = errors[0]
                    raise StorageError(f"S3 did not delete {len(errors)} object(s) under {prefix!r}, e.g. "
                                       f"{first.get('Key')!r}: {first.get('Code')} {first.get('Message')}")

    def presigned_url(self, key: str, *, expires: int = 900) -> str | None:
        """A GET URL valid for ``expires`` seconds."""
        full = self._key(key)
        try:
            return str(self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": full}, ExpiresIn=expires))
        except _ERRORS as exc:
            raise _translate(exc, key) from exc


class _Body(io.RawIOBase):
    """A botocore ``StreamingBody`` whose read errors are ``StorageError``s."""

    def __init__(self, body: Any, key: str) -> None:
        self._body = body
        self._key = key

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        try:
            data = self._body.read(len(view))
        except _ERRORS as exc:
            raise _translate(exc, self._key) from exc
        view[:len(data)] = data
        return len(data)

    def readall(self) -> bytes:
        try:  # in one call, not RawIOBase's 8 KiB at a time
            return bytes(self._body.read())
        except _ERRORS as exc:
            raise _translate(exc, self._key) from exc

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


def _translate(exc: BaseException, key: str) -> StorageError:
    if isinstance(exc, botocore.exceptions.ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _MISSING:
            return ObjectNotFound(f"no object {key!r}")
    return StorageError(f"S3 failed on {key!r}: {exc}")
