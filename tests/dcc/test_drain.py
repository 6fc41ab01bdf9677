"""Drain marks on a real Redis."""

from __future__ import annotations

import time

import pytest

from dcc.drain import DrainMarks, drain_key
from dcc.errors import StoreUnavailable
from dcc.jobs import JobRecord, JobSpec, JobState, Outcome
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


def test_a_drained_worker_s_claim_gets_nothing_and_the_fence_sees_leases(redis_url: str) -> None:
    store = JobStore(connect(redis_url), lease_seconds=60)
    marks = DrainMarks(store.redis, ttl=60)
    for i in range(2):
        store.create(JobRecord(id=f"j{i}", spec=JobSpec(image="x"), state=JobState.QUEUED, queue="cpu",
                               submitted_at=time.time() + i), only_if_new=False)
    marks.mark(["i-1"], now=1.0)
    assert store.claim("cpu", "i-1") is None                 # (the claim itself checks: no race with the fence)
    held = store.claim("cpu", "i-2")
    assert held is not None and held.job.id == "j0"
    # i-2 holds a lease: the fence refuses it and leaves it unmarked, so it claims on
    assert not store.fence_idle("i-2", mark_ttl=60) and not marks.is_draining("i-2")
    # i-1 is draining already: refused while it holds a lease, but its mark stays
    marks.clear(["i-1"])
    held1 = store.claim("cpu", "i-1")
    assert held1 is not None
    marks.mark(["i-1"], now=1.0)
    assert not store.fence_idle("i-1", mark_ttl=60) and marks.is_draining("i-1")
    # an idle worker: fenced, marked for the TTL, and its claims get nothing
    assert store.fence_idle("i-3", mark_ttl=30)
    assert marks.is_draining("i-3") and 0 < store.redis.pttl(drain_key("{dcc}", "i-3")) <= 30_000
    store.create(JobRecord(id="j2", spec=JobSpec(image="x"), state=JobState.QUEUED, queue="cpu",
                           submitted_at=time.time()), only_if_new=False)
    assert store.claim("cpu", "i-3") is None and store.get("j2").state == JobState.QUEUED
    # once i-1's job ends it is idle too
    assert store.finish(held1, Outcome(state=JobState.SUCCEEDED, exit_code=0))
    assert store.fence_idle("i-1", mark_ttl=60)
