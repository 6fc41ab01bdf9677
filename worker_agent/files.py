"""The worker's own folders: held by one process at a time, and cleared of what jobs left, whatever its shape."""

from __future__ import annotations

import fcntl
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import IO


class DirInUse(Exception):
    """Another live process holds the folder."""

    def __init__(self, owner: str) -> None:
        super().__init__(owner)
        self.owner = owner


def hold_dir(folder: Path, lock_name: str) -> IO[str]:
    """Make ``folder`` (0700: this user's alone) and lock it for this process (the lock goes with the process,
    however it ends). ``DirInUse`` naming the holder's pid if another live process holds it. Returns the open
    lock file: keep it open."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    lock = (folder / lock_name).open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        owner = lock.read().strip() or "?"
        lock.close()
        raise DirInUse(owner) from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock


def stable_id(path: Path, make: Callable[[], str]) -> str:
    """The id stored at ``path``, made with ``make()`` and stored the first time."""
    stored = path.read_text().strip() if path.exists() else ""
    if not stored:
        stored = make()
        path.write_text(stored + "\n")
    return stored


def remove_tree(path: Path | str) -> None:
    """Remove ``path`` and everything under it; nothing is followed, and no other file system is entered.

    A job can leave a tree deeper than Python's recursion limit (``shutil.rmtree`` raises ``RecursionError``
    on 3.11) and paths longer than ``PATH_MAX``: coreutils' ``rm`` walks it relative to open folders, at any
    depth. Raises ``OSError`` saying what ``rm`` said if something is left.
    """
    if not os.path.lexists(path):
        return
    done = subprocess.run(["rm", "-rf", "--one-file-system", "--", os.fspath(path)], capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise OSError(f"cannot remove {path}: {done.stderr.strip()}")
