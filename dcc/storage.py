"""The storage port: where job inputs, outputs, logs and ``result.json`` live.

Keys are ``/``-separated relative paths (``jobs/<id>/outputs/a/b.txt``). Two adapters implement it:
``dcc.local_storage.LocalStorage`` (a directory, the local-mode default) and ``dcc.s3_storage.S3Storage``.
Every method is thread-safe and raises ``StorageError`` (``ObjectNotFound`` for a missing key) rather
than a library's own exception. Writes are whole-object: a reader never sees half an object.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

from dcc.errors import StorageError

Progress = Callable[[int], None]
"""Called with the bytes written so far, after each piece of a download: an exception it raises stops the
download, leaves no file, and is raised to the caller as it is (e.g. to stop for a cancel or a size limit)."""


class Storage(Protocol):
    """Job data storage. Keys must pass ``check_key``; adapters call it and never write outside their root."""

    def put_bytes(self, key: str, data: bytes, *, content_type: str | None = None) -> None:
        """Store ``data`` under ``key``, replacing any object there."""

    def put_file(self, key: str, path: Path, *, content_type: str | None = None) -> None:
        """Store the file at ``path`` under ``key`` (streamed, not read whole into memory)."""

    def get_bytes(self, key: str) -> bytes:
        """Return the object under ``key``; ``ObjectNotFound`` if there is none."""

    def open(self, key: str) -> BinaryIO:
        """Open the object under ``key`` for streaming reads; the caller closes it."""

    def download(self, key: str, path: Path, *, progress: Progress | None = None) -> None:
        """Write the object under ``key`` to the file ``path`` (parents must exist), telling ``progress``."""

    def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        """Yield ``(key, size)`` of every object whose key starts with ``prefix``, in key order."""

    def delete_prefix(self, prefix: str) -> None:
        """Delete every object whose key starts with ``prefix`` (no error if none)."""

    def presigned_url(self, key: str, *, expires: int = 900) -> str | None:
        """A time-limited URL a client can GET the object from, or None where the backend has none."""


RESERVED_NAME_PREFIX = ".dcc-tmp-"
"""Names local storage keeps for its unfinished writes: no input or output file may start with it."""


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe relative key, else raise ``StorageError``.

    Safe: non-empty, relative, no ``.``/``..``/empty segments, no NUL or backslash, already normalized.
    """
    if (
        not key
        or key.startswith("/")
        or "\x00" in key
        or "\\" in key
        or posixpath.normpath(key) != key.rstrip("/")
        or any(part in ("", ".", "..") for part in key.rstrip("/").split("/"))
    ):
        raise StorageError(f"unsafe storage key {key!r}")
    return key


def job_prefix(job_id: str) -> str:
    """The prefix under which everything of one job is stored."""
    return f"jobs/{job_id}/"


def attempt_prefix(job_id: str, attempt: int) -> str:
    """Where one attempt of a job keeps its ``stdout``, ``stderr`` and ``outputs/``. Each attempt has its own, so an
    attempt whose lease went to another (its worker was cut off) cannot overwrite the files of the one that counts:
    the job's record names its attempt (``attempts``), and its files are read from there."""
    return f"{job_prefix(job_id)}attempt-{attempt}/"
