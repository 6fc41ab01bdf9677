"""Storage on S3 (boto3). Keys live under an optional prefix in one bucket."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import boto3
import botocore.exceptions

from dcc.errors import ObjectNotFound, StorageError
from dcc.storage import check_key

_MISSING = {"404", "NoSuchKey", "NotFound"}


class S3Storage:
    """Job data in ``s3://bucket/prefix``; thread-safe (boto3 clients are)."""

    def __init__(self, bucket: str, *, prefix: str = "", client: Any = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.client = client or boto3.client("s3")

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _translate(self, exc: Exception, key: str) -> StorageError:
        if isinstance(exc, botocore.exceptions.ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _MISSING:
                return ObjectNotFound(f"no object {key!r}")
        return StorageError(f"S3 failed on {key!r}: {exc}")

    def put_bytes(self, key: str, data: bytes, *, content_type: str | None = None) -> None:
        """Store ``data`` under ``key``."""
        extra = {"ContentType": content_type} if content_type else {}
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **extra)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise self._translate(exc, key) from exc

    def put_file(self, key: str, path: Path, *, content_type: str | None = None) -> None:
        """Upload a file (multipart when large)."""
        extra = {"ExtraArgs": {"ContentType": content_type}} if content_type else {}
        try:
            self.client.upload_file(str(path), self.bucket, self._key(key), **extra)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError,
                boto3.exceptions.S3UploadFailedError) as exc:
            raise self._translate(exc, key) from exc

    def get_bytes(self, key: str) -> bytes:
        """The object under ``key``."""
        with self.open(key) as body:
            return body.read()

    def open(self, key: str) -> BinaryIO:
        """The object's streaming body."""
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise self._translate(exc, key) from exc

    def download(self, key: str, path: Path) -> None:
        """Download the object to ``path``."""
        try:
            self.client.download_file(self.bucket, self._key(key), str(path))
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise self._translate(exc, key) from exc

    def exists(self, key: str) -> bool:
        """Whether ``key`` holds an object."""
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            error = self._translate(exc, key)
            if isinstance(error, ObjectNotFound):
                return False
            raise error from exc

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        """``(key, size)`` under ``prefix``, in key order."""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix + prefix)
        try:
            for page in pages:
                for obj in page.get("Contents", []):
                    yield obj["Key"][len(self.prefix):], int(obj["Size"])
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise self._translate(exc, prefix) from exc

    def delete_prefix(self, prefix: str) -> None:
        """Delete every object under ``prefix``, a thousand per request."""
        check_key(prefix)
        keys = [self.prefix + key for key, _ in self.list(prefix)]
        try:
            for start in range(0, len(keys), 1000):
                batch = [{"Key": k} for k in keys[start:start + 1000]]
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise self._translate(exc, prefix) from exc

    def presigned_url(self, key: str, *, expires: int = 900) -> str | None:
        """A GET URL valid for ``expires`` seconds."""
        return str(self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._key(key)}, ExpiresIn=expires))
