"""Removing what a job left on the worker's disk, whatever its shape."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


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
