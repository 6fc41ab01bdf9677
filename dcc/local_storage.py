"""Storage in a local directory (the local-mode default)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from dcc.errors import ObjectNotFound, StorageError
from dcc.storage import check_key


class LocalStorage:
    """Keys are files under ``root``; writes are atomic (temp file, then rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, key: str) -> Path:
        check_key(key)
        path = self.root / key
        # no component under root may be a link: a link could lead a write or read outside root
        current = self.root
        for part in key.split("/"):
            current = current / part
            if current.is_symlink():
                raise StorageError(f"storage key {key!r} passes through a link")
        return path

    def _write(self, key: str, fill: Callable[[BinaryIO], object]) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as f:
                    fill(f)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise StorageError(f"cannot write {key!r}: {exc}") from exc

    def put_bytes(self, key: str, data: bytes, *, content_type: str | None = None) -> None:
        """Store ``data`` under ``key``."""
        self._write(key, lambda f: f.write(data))

    def put_file(self, key: str, path: Path, *, content_type: str | None = None) -> None:
        """Store a copy of the file at ``path`` under ``key``."""
        def fill(f: BinaryIO) -> None:
            with path.open("rb") as src:
                shutil.copyfileobj(src, f, 1 << 20)
        self._write(key, fill)

    def get_bytes(self, key: str) -> bytes:
        """The object under ``key``."""
        with self.open(key) as f:
            return f.read()

    def open(self, key: str) -> BinaryIO:
        """Open the object under ``key`` for reading."""
        path = self._path(key)
        try:
            return path.open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise ObjectNotFound(f"no object {key!r}") from exc
        except OSError as exc:
            raise StorageError(f"cannot read {key!r}: {exc}") from exc

    def download(self, key: str, path: Path) -> None:
        """Copy the object under ``key`` to ``path``."""
        with self.open(key) as src, path.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)

    def exists(self, key: str) -> bool:
        """Whether ``key`` holds an object."""
        return self._path(key).is_file()

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        """``(key, size)`` under ``prefix`` in key order."""
        base = self.root / prefix.rstrip("/") if prefix else self.root
        start = base if base.is_dir() else base.parent
        found = []
        for path in start.rglob("*") if start.is_dir() else []:
            if path.is_file() and not path.is_symlink() and not path.name.startswith(".tmp-"):
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    found.append((key, path.stat().st_size))
        yield from sorted(found)

    def delete_prefix(self, prefix: str) -> None:
        """Delete everything under ``prefix``."""
        check_key(prefix)
        target = self._path(prefix.rstrip("/"))
        if prefix.endswith("/") and target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        else:
            for key, _ in list(self.list(prefix)):
                self._path(key).unlink(missing_ok=True)

    def presigned_url(self, key: str, *, expires: int = 900) -> str | None:
        """Local files have no URL."""
        return None
