"""Drain marks: the scaler tells a worker to claim no new jobs, so that it empties and can be removed.

Keys (under the store's hash tag, beside ``dcc.store``'s):

    P:drain:<worker>    string  the time the scaler marked the worker (s); expires after ``ttl``

The scaler writes a mark when the backlog needs fewer workers than are running, refreshes it on every
pass while the worker is draining, and deletes it when demand rises again (un-drain) or the instance is
removed. A draining worker keeps running and heartbeating its jobs but treats its free slots as zero.
Marks expire on their own, so a scaler that stops running leaves no worker draining for longer than
``ttl``. Thread-safe (redis-py's client is); Redis connection errors are raised as ``StoreUnavailable``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import redis

from dcc.errors import StoreUnavailable

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

    def mark(self, workers: Iterable[str], *, now: float) -> None:
        """Mark ``workers`` draining (or refresh their marks), for ``ttl`` seconds. Idempotent."""
        pipe = self.redis.pipeline(transaction=False)
        for worker in workers:
            pipe.set(drain_key(self.prefix, worker), repr(now), px=int(self.ttl * 1000))
        self._execute(pipe)

    def clear(self, workers: Iterable[str]) -> None:
        """Let ``workers`` claim again (a worker with no mark is left as it is). Idempotent."""
        keys = [drain_key(self.prefix, w) for w in workers]
        if keys:
            try:
                self.redis.delete(*keys)  # one key slot: the keys share the hash tag
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                raise StoreUnavailable(f"Redis is unreachable: {exc}") from exc

    def draining(self, workers: Sequence[str]) -> set[str]:
        """Those of ``workers`` that are marked draining."""
        if not workers:
            return set()
        pipe = self.redis.pipeline(transaction=False)
        for worker in workers:
            pipe.exists(drain_key(self.prefix, worker))
        return {w for w, found in zip(workers, self._execute(pipe), strict=True) if found}

    def is_draining(self, worker: str) -> bool:
        """Whether ``worker`` is marked draining (what a worker asks before it claims)."""
        return worker in self.draining([worker])

    @staticmethod
    def _execute(pipe: Any) -> list[Any]:
        try:
            return list(pipe.execute())
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise StoreUnavailable(f"Redis is unreachable: {exc}") from exc
