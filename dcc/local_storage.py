"""Storage in a local directory (the local-mode default).

Every path is walked one component at a time from an open descriptor of the root with ``O_NOFOLLOW``, so
a symbolic link anywhere under the root is refused rather than followed, with no window between checking
a path and using it. Writes go to a temporary file in the target directory, are fsynced and then renamed
over the key, so a reader sees the old object or the new one, never part of one.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import os
import secrets
import shutil
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import suppress
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote, urlencode

from dcc.errors import ObjectNotFound, StorageError
from dcc.storage import RESERVED_NAME_PREFIX, Progress, check_key

_TMP = RESERVED_NAME_PREFIX  # temporary files of unfinished writes; never listed
_STALE_TMP_SECONDS = 3600  # delete_prefix removes temporary files older than this (left by a crash)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC
_CHUNK = 1 << 20


class FileLinks:
    """Signed, expiring links to stored files, which a web server of this process checks and serves: local
    storage's answer to S3's presigned URLs (a download streams from disk instead of through the API)."""

    def __init__(self, route: str) -> None:
        self.route = route.rstrip("/")
        self._key = secrets.token_bytes(32)  # this process's: links die with it

    def _signature(self, key: str, expires: int) -> str:
        return hmac.new(self._key, f"{key}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def link(self, key: str, expires_in: int) -> str:
        """A link (path and query) to ``key``, good for ``expires_in`` seconds."""
        expires = int(time.time()) + expires_in
        query = urlencode({"expires": expires, "signature": self._signature(key, expires)})
        return f"{self.route}/{quote(key, safe='/')}?{query}"

    def check(self, key: str, expires: str, signature: str) -> bool:
        """Whether a link's key, expiry and signature were made by ``link`` and have not expired."""
        if not (expires.isascii() and expires.isdigit() and len(expires) <= 12) or int(expires) < time.time():
            return False
        return hmac.compare_digest(self._signature(key, int(expires)), signature)


class LocalStorage:
    """Keys are files under ``root``; thread-safe; links under ``root`` are refused, never followed.

    With ``links``, ``presigned_url`` gives signed links its web server serves (local mode); without, None.
    """

    def __init__(self, root: Path, *, links: FileLinks | None = None) -> None:
        self.root = Path(root).resolve()
        self.links = links

    # --- paths -----------------------------------------------------------------------------------------------

    def _parts(self, key: str) -> list[str]:
        """The path components of an object key (safe, not a prefix, not one of our temporary names)."""
        check_key(key)
        if key.endswith("/"):
            raise StorageError(f"storage key {key!r} names a prefix, not an object")
        parts = key.split("/")
        if parts[-1].startswith(_TMP):
            raise StorageError(f"storage key {key!r} uses the reserved name prefix {_TMP!r}")
        return parts

    def _open_dir(self, parts: Sequence[str], *, key: str, create: bool) -> int:
        """A descriptor of ``root/parts...``; ``StorageError`` if a component is a link, ``OSError`` otherwise."""
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root, _DIR_FLAGS)
        try:
            for part in parts:
                if create:
                    with suppress(FileExistsError):
                        os.mkdir(part, dir_fd=fd)
                try:
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    # Linux says ENOTDIR for a link opened with O_DIRECTORY | O_NOFOLLOW, others ELOOP
                    if exc.errno in (errno.ENOTDIR, errno.ELOOP) and _is_link(part, fd):
                        raise StorageError(f"storage key {key!r} passes through a link") from exc
                    raise
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    # --- writes ----------------------------------------------------------------------------------------------

    def _write(self, key: str, fill: Callable[[BinaryIO], object]) -> None:
        parts = self._parts(key)
        try:
            dir_fd, tmp, fd = self._create_tmp(parts, key)
            try:
                try:
                    with os.fdopen(fd, "wb") as f:
                        fill(f)
                        f.flush()
                        os.fsync(f.fileno())
                    if _is_link(parts[-1], dir_fd):  # rename would replace the link, not follow it; refuse anyway
                        raise StorageError(f"storage key {key!r} passes through a link")
                    os.replace(tmp, parts[-1], src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                except BaseException:
                    with suppress(OSError):
                        os.unlink(tmp, dir_fd=dir_fd)
                    raise
                os.fsync(dir_fd)  # make the rename itself durable
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise StorageError(f"cannot write {key!r}: {exc}") from exc

    def _create_tmp(self, parts: Sequence[str], key: str) -> tuple[int, str, int]:
        """Open the key's directory (made if missing) and a new temporary file in it."""
        for attempt in range(3):
            dir_fd = -1
            try:
                dir_fd = self._open_dir(parts[:-1], key=key, create=True)
                tmp = f"{_TMP}{secrets.token_hex(8)}"
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _CLOEXEC, 0o666,
                             dir_fd=dir_fd)
                return dir_fd, tmp, fd
            except FileNotFoundError:
                # a concurrent delete_prefix removed a directory (then empty) between our mkdir and open: again
                if dir_fd >= 0:
                    os.close(dir_fd)
                if attempt == 2:
                    raise
            except BaseException:
                if dir_fd >= 0:
                    os.close(dir_fd)
                raise
        raise AssertionError("unreachable")

    def put_bytes(self, key: str, data: bytes, *, content_type: str | None = None) -> None:
        """Store ``data`` under ``key`` (``content_type`` is not kept locally)."""
        self._write(key, lambda f: f.write(data))

    def put_file(self, key: str, path: Path, *, content_type: str | None = None) -> None:
        """Store a copy of the file at ``path`` under ``key``."""
        try:
            src = path.open("rb")
        except OSError as exc:
            raise StorageError(f"cannot read {path} to store it as {key!r}: {exc}") from exc
        with src:
            self._write(key, lambda f: shutil.copyfileobj(src, f, _CHUNK))

    # --- reads -----------------------------------------------------------------------------------------------

    def open(self, key: str) -> BinaryIO:
        """Open the object under ``key`` for reading; ``ObjectNotFound`` if there is none."""
        parts = self._parts(key)
        try:
            dir_fd = self._open_dir(parts[:-1], key=key, create=False)
            try:
                # non-blocking: opening a FIFO with no writer must not hang (it is refused below, not read)
                fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | _CLOEXEC, dir_fd=dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                raise ObjectNotFound(f"no object {key!r}") from exc
            if exc.errno == errno.ELOOP:
                raise StorageError(f"storage key {key!r} passes through a link") from exc
            raise StorageError(f"cannot read {key!r}: {exc}") from exc
        try:
            regular = stat.S_ISREG(os.fstat(fd).st_mode)
        except BaseException:
            os.close(fd)
            raise
        if not regular:  # a directory is a prefix, not an object (as in S3)
            os.close(fd)
            raise ObjectNotFound(f"no object {key!r}")
        return os.fdopen(fd, "rb")

    def get_bytes(self, key: str) -> bytes:
        """The object under ``key``; ``ObjectNotFound`` if there is none."""
        with self.open(key) as f:
            try:
                return f.read()
            except OSError as exc:
                raise StorageError(f"cannot read {key!r}: {exc}") from exc

    def download(self, key: str, path: Path, *, progress: Progress | None = None) -> None:
        """Copy the object under ``key`` to the file ``path``; a failed copy leaves no file."""
        with self.open(key) as src:
            try:
                with path.open("wb") as dst:
                    done = 0
                    while chunk := src.read(_CHUNK):
                        dst.write(chunk)
                        done += len(chunk)
                        if progress is not None:
                            progress(done)
            except BaseException as exc:
                path.unlink(missing_ok=True)
                if isinstance(exc, OSError):
                    raise StorageError(f"cannot copy {key!r} to {path}: {exc}") from exc
                raise

    def exists(self, key: str) -> bool:
        """Whether ``key`` holds an object (a link is refused with ``StorageError``)."""
        try:
            self.open(key).close()
        except ObjectNotFound:
            return False
        return True

    def _scan(self, prefix: str) -> tuple[list[tuple[str, os.stat_result]], list[str]]:
        """Regular files (temporary ones included) and directories whose keys start with ``prefix``."""
        if prefix:
            check_key(prefix)
        dir_part, _, name_part = prefix.rpartition("/")
        parts = dir_part.split("/") if dir_part else []
        base = dir_part + "/" if dir_part else ""
        files: list[tuple[str, os.stat_result]] = []
        dirs: list[str] = []
        try:
            top = self._open_dir(parts, key=prefix, create=False)
        except (FileNotFoundError, NotADirectoryError):
            return files, dirs
        except OSError as exc:
            raise StorageError(f"cannot list {prefix!r}: {exc}") from exc
        try:
            # follow_symlinks=False: fwalk neither descends into links nor follows one swapped in mid-walk
            for dirpath, dirnames, filenames, fd in os.fwalk(".", dir_fd=top, follow_symlinks=False,
                                                            onerror=_reraise):
                rel = base + (dirpath[2:] + "/" if dirpath != "." else "")
                if dirpath == ".":
                    dirnames[:] = [d for d in dirnames if d.startswith(name_part)]
                    filenames = [f for f in filenames if f.startswith(name_part)]
                dirs.extend(rel + d for d in dirnames)
                for name in filenames:
                    try:
                        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # deleted meanwhile
                    if stat.S_ISREG(st.st_mode):
                        files.append((rel + name, st))
        except OSError as exc:
            raise StorageError(f"cannot list {prefix!r}: {exc}") from exc
        finally:
            os.close(top)
        return files, dirs

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        """``(key, size)`` of every object under ``prefix``, in key order (links are skipped)."""
        files, _ = self._scan(prefix)
        found = [(key, st.st_size) for key, st in files if not key.rpartition("/")[2].startswith(_TMP)]
        yield from sorted(found)

    # --- deletes ---------------------------------------------------------------------------------------------

    def delete_prefix(self, prefix: str) -> None:
        """Delete every object under ``prefix`` and the directories left empty (up to the root)."""
        check_key(prefix)
        files, dirs = self._scan(prefix)
        stale = time.time() - _STALE_TMP_SECONDS
        for key, st in files:
            if key.rpartition("/")[2].startswith(_TMP) and st.st_mtime > stale:
                continue  # a write in progress: its rename lands after this delete, like a later put
            self._unlink(key)
        # empty directories: those under the prefix and every ancestor of one, deepest first
        candidates = set(dirs)
        for key in [k for k, _ in files] + dirs:
            parent = key.rpartition("/")[0]
            while parent:
                candidates.add(parent)
                parent = parent.rpartition("/")[0]
        for directory in sorted(candidates, key=lambda d: d.count("/"), reverse=True):
            self._rmdir_if_empty(directory)

    def _unlink(self, key: str) -> None:
        parts = key.split("/")
        try:
            dir_fd = self._open_dir(parts[:-1], key=key, create=False)
            try:
                os.unlink(parts[-1], dir_fd=dir_fd)
            finally:
                os.close(dir_fd)
        except FileNotFoundError:
            pass  # deleted meanwhile
        except OSError as exc:
            raise StorageError(f"cannot delete {key!r}: {exc}") from exc

    def _rmdir_if_empty(self, directory: str) -> None:
        """Best effort: a directory that is not empty (or gone, or became a link) is left alone."""
        parts = directory.split("/")
        with suppress(OSError, StorageError):
            dir_fd = self._open_dir(parts[:-1], key=directory, create=False)
            try:
                os.rmdir(parts[-1], dir_fd=dir_fd)
            finally:
                os.close(dir_fd)

    def presigned_url(self, key: str, *, expires: int = 900) -> str | None:
        """A signed link to the file where a web server serves them (``links``), else None."""
        check_key(key)
        return None if self.links is None else self.links.link(key, expires)


def _is_link(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _reraise(exc: OSError) -> None:
    raise exc
