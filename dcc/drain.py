"""Drain marks: the scaler tells a worker to claim no new jobs, so that it empties and can be removed.

Keys (under the store's hash tag, beside ``dcc.store``'s):

    P:drain:<worker>    string  the time the scaler marked the worker (s); expires after ``ttl``

The scaler writes a mark when the backlog needs fewer workers than are running, refreshes it on every
pass while the worker is draining, and deletes it when demand rises again (un-drain). Its last check before it
removes an idle instance (``JobStore.fence_idle``) and the replacement of a sick one mark the worker too, and that
mark is left to expire: the worker claims nothing while its instance shuts down (``claim.lua`` checks the mark). A
draining worker keeps running and heartbeating its jobs but treats its free slots as zero. Marks expire on their
own, so a scaler that stops running leaves no worker draining for longer than ``ttl``. Thread-safe (redis-py's
client is); Redis's errors of availability are raised as ``StoreUnavailable`` (``dcc.store.translated``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from dcc.store import translated

DEFAULT_TTL = 600.0
"""Seconds a mark lives without a refresh: ten scaler passes."""


def drain_key(prefix: str, worker: str) -> str:
    """The key of ``worker``'s drain mark."""
    return f"{prefix}:drain:{worker}"


class DrainMarks:
    """Which workers are draining, as per-worker Redis keys with a TTL."""

    def __init__(self, client: Any, *, prefix: str = "{dcc}", ttl: float = DEFAULT_TTL) -> None:
        self.redis: Any = client
        self.prefix = prefix
        self.ttl = ttl
        # (run even when Redis is full: draining is how the scaler shrinks the fleet, and never adds data to speak of)
        self._mark = client.register_script(
            "#!lua flags=allow-oom\nfor i = 3, #ARGV do redis.call('SET', ARGV[i], ARGV[1], 'PX', ARGV[2]) end")

    @translated
    def mark(self, workers: Iterable[str], *, now: float) -> None:
        """Mark ``workers`` draining (or refresh their marks), for ``ttl`` seconds. Idempotent."""
        keys = [drain_key(self.prefix, w) for w in workers]
        if keys:  # (one key slot: the keys share the hash tag)
            self._mark(keys=[], args=[repr(now), int(self.ttl * 1000), *keys])

    @translated
    def clear(self, workers: Iterable[str]) -> None:
        """Let ``workers`` claim again (a worker with no mark is left as it is). Idempotent."""
        keys = [drain_key(self.prefix, w) for w in workers]
        if keys:
            self.redis.delete(*keys)  # one key slot: the keys share the hash tag

    @translated
    def draining(self, workers: Sequence[str]) -> set[str]:
        """Those of ``workers`` that are marked draining."""
        if not workers:
            return set()
        pipe = self.redis.pipeline(transaction=False)
        for worker in workers:
            pipe.exists(drain_key(self.prefix, worker))
        return {w for w, found in zip(workers, pipe.execute(), strict=True) if found}

    def is_draining(self, worker: str) -> bool:
        """Whether ``worker`` is marked draining (what a worker asks before it claims)."""
        return worker in self.draining([worker])
