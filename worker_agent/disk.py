"""How much disk a running job's files take, watched while its container runs."""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

MAX_WATCH_SHARE = 0.05
"""At most this share of the time goes to measuring: a tree that takes longer to walk is walked less often..."""
MAX_PAUSE = 30.0
"""... but at least this often (seconds), so a job cannot make its measurements rare with many small files."""


class DiskWatch:
    """Measures the bytes of regular files under ``roots`` every ``interval`` s (or less often, if walking them
    takes more than ``MAX_WATCH_SHARE`` of the time) while a container runs, links not followed; past ``limit``
    it calls ``on_exceed`` once (the worker kills the container). Used as a context manager around the run, it
    measures once more at the end, so what the container left counts too."""

    def __init__(self, roots: Sequence[Path], limit: int | None, *, on_exceed: Callable[[], object],
                 interval: float) -> None:
        self.roots, self.limit, self.on_exceed, self.interval = tuple(roots), limit, on_exceed, interval
        self.exceeded: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pause = interval

    def check(self) -> bool:
        """Measure now; True (and ``exceeded`` set) if over the limit."""
        if self.limit is None or self.exceeded is not None:
            return self.exceeded is not None
        began = time.monotonic()
        size = sum(tree_bytes(root) for root in self.roots)
        self._pause = min(max(self.interval, (time.monotonic() - began) / MAX_WATCH_SHARE), MAX_PAUSE)
        if size > self.limit:
            self.exceeded = size
            return True
        return False

    def _loop(self) -> None:
        while not self._stop.wait(self._pause):
            if self.check():
                self.on_exceed()
                return

    def __enter__(self) -> DiskWatch:
        if self.limit is not None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="dcc-disk-watch", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.check()


def tree_bytes(root: Path) -> int:
    """Bytes of the regular files under ``root`` (the blocks they hold, so a sparse file counts what it uses);
    nothing is followed, and what cannot be read counts as nothing."""
    total = 0
    for folder, _, files in os.walk(root, followlinks=False):
        for name in files:
            try:
                info = os.lstat(os.path.join(folder, name))
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode):
                total += info.st_blocks * 512 if info.st_blocks else info.st_size
    return total
