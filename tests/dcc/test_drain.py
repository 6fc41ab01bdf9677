"""Drain marks on a real Redis."""

from __future__ import annotations

import time

import pytest

from dcc.drain import DrainMarks, drain_key
from dcc.errors import StoreUnavailable
from dcc.store import JobStore, connect

pytestmark = pytest.mark.redis


@pytest.fixture
def marks(redis_url: str) -> DrainMarks:
    return DrainMarks(connect(redis_url), ttl=60)


def test_keys_share_the_store_hash_tag() -> None:
    assert drain_key("{dcc}", "i-1") == "{dcc}:drain:i-1"
    assert drain_key("{dcc}", "i-1").startswith(JobStore.__init__.__kwdefaults__["prefix"] + ":")


def test_mark_clear_and_read(marks: DrainMarks) -> None:
    assert marks.draining(["i-1", "i-2"]) == set() and not marks.is_draining("i-1")
    marks.mark(["i-1", "i-2"], now=1000.0)
    assert marks.draining(["i-1", "i-2", "i-3"]) == {"i-1", "i-2"}
    assert marks.is_draining("i-2")
    assert marks.redis.get("{dcc}:drain:i-1") == "1000.0"
    marks.clear(["i-1", "i-9"])                  # an unmarked worker is left as it is
    assert marks.draining(["i-1", "i-2"]) == {"i-2"}
    marks.clear([])
    marks.mark([], now=1.0)
    assert marks.draining([]) == set()


def test_marks_expire_unless_refreshed(marks: DrainMarks) -> None:
    marks.mark(["i-1"], now=1.0)
    assert 0 < marks.redis.pttl("{dcc}:drain:i-1") <= 60_000
    short = DrainMarks(marks.redis, ttl=0.2)
    short.mark(["i-2"], now=1.0)
    time.sleep(0.4)
    assert marks.draining(["i-1", "i-2"]) == {"i-1"}   # a stopped scaler leaves no worker draining for long


def test_prefix_is_honoured(redis_url: str) -> None:
    other = DrainMarks(connect(redis_url), prefix="{other}")
    other.mark(["i-1"], now=1.0)
    assert DrainMarks(connect(redis_url)).draining(["i-1"]) == set()
    assert other.redis.exists("{other}:drain:i-1")


def test_redis_down_is_store_unavailable() -> None:
    from tests.conftest import free_port

    marks = DrainMarks(connect(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=0.2))
    with pytest.raises(StoreUnavailable):
        marks.is_draining("i-1")
    with pytest.raises(StoreUnavailable):
        marks.mark(["i-1"], now=1.0)
    with pytest.raises(StoreUnavailable):
        marks.clear(["i-1"])
