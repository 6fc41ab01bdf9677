"""The Redis job store and queue, against a real redis-server."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import pytest

from dcc.errors import InvalidJob
from dcc.jobs import Claim, JobRecord, JobSpec, JobState, Outcome
from dcc.store import Blocked, JobStore, connect

pytestmark = pytest.mark.redis


@pytest.fixture
def store(redis_url: str) -> JobStore:
    return JobStore(connect(redis_url), lease_seconds=30, max_attempts=2, retention_seconds=3600)


def lapse(store: JobStore) -> None:
    """Every lease runs out now: leases are timed by Redis's clock, which a test cannot move on."""
    store.redis.zadd(store.leases_key, {member: 0 for member in store.redis.zrange(store.leases_key, 0, -1)})


def lease_left(store: JobStore, member: str) -> float:
    """How long the lease has to run, by Redis's clock."""
    seconds, micros = store.redis.time()
    return float(store.redis.zscore(store.leases_key, member)) / 1000 - (seconds + micros / 1e6)


def make(store: JobStore, job_id: str, *, queue: str = "cpu", at: float | None = None, **spec: object) -> JobRecord:
    gpu = {"parameters": {"gpu": 1}} if queue == "gpu" else {}
    record = JobRecord(id=job_id, spec=JobSpec.model_validate({"image": "img", **gpu, **spec}),
                       state=JobState.QUEUED, queue=queue, submitted_at=at if at is not None else time.time())
    assert store.create(record, only_if_new=True)
    return record


def test_claim_runs_jobs_in_submit_order_and_records_the_claim(store: JobStore) -> None:
    make(store, "a", at=100.0)
    make(store, "b", at=101.0)
    first = store.claim("cpu", "w1")
    second = store.claim("cpu", "w2")
    assert (first.job.id, first.attempt, second.job.id) == ("a", 1, "b")
    assert store.claim("cpu", "w1") is None
    record = store.get("a")
    assert record.state == JobState.RUNNING and record.worker == "w1" and record.attempts == 1
    assert store.queue_depths() == {"queues": {"cpu": 0, "gpu": 0}, "running": 2}


def test_gpu_jobs_are_counted_in_gpus_for_the_scaler(store: JobStore) -> None:
    make(store, "two", queue="gpu", at=100.0, parameters={"gpu": 2})
    make(store, "three", queue="gpu", at=101.0, parameters={"gpu": 3})
    make(store, "old", queue="gpu", at=102.0)
    store.redis.hdel(store.job_key("old"), "gpus")  # a record from before the field: one GPU, the default
    make(store, "cpu-job")
    assert store.queued_gpus() == ((2, 3, 1), 0)  # in queue order
    assert store.queued_gpus(limit=1) == ((2,), 2)  # (past the limit: counted, one GPU each)
    store.claim("gpu", "w", free_gpus=4, worker_gpus=4)
    store.claim("cpu", "w")
    assert store.queued_gpus() == ((3, 1), 0)
    assert store.running_by_worker(gpus=True) == {"w": {"gpu": 2, "cpu": 1}}
    assert store.running_by_worker() == {"w": {"gpu": 1, "cpu": 1}}  # (jobs, for the API's counts)


def test_queues_are_separate(store: JobStore) -> None:
    make(store, "g", queue="gpu")
    assert store.claim("cpu", "w") is None
    assert store.claim("gpu", "w").job.id == "g"


def test_a_gpu_claim_takes_the_head_only_if_it_fits_the_worker_s_free_gpus(store: JobStore) -> None:
    make(store, "big", queue="gpu", at=100.0, parameters={"gpu": 2})
    make(store, "small", queue="gpu", at=101.0)
    assert store.claim("gpu", "w", free_gpus=1, worker_gpus=4) == Blocked(gpus=2)  # (not past it: no starving)
    assert store.redis.zrange(store.queue_key("gpu"), 0, -1) == ["big", "small"]   # nothing popped
    assert store.get("big").state == JobState.QUEUED and store.get("big").attempts == 0
    assert store.claim("gpu", "w", free_gpus=2, worker_gpus=4).job.id == "big"
    store.redis.hdel(store.job_key("small"), "gpus")  # a record from before the field: its spec says
    assert store.claim("gpu", "w", free_gpus=0, worker_gpus=4) == Blocked(gpus=1)
    assert store.claim("gpu", "w").job.id == "small"  # no count given: no check


def test_a_gpu_job_no_worker_of_its_size_can_run_is_claimed_to_be_ended(store: JobStore) -> None:
    make(store, "huge", queue="gpu", parameters={"gpu": 3})
    # a live worker with 4 GPUs can run it: a 2-GPU worker leaves it first in line for that one
    store.heartbeat("big", {"health": "HEALTHY", "slots": "cpu=12,gpu=4"}, ttl=60)
    store.heartbeat("w", {"health": "HEALTHY", "slots": "cpu=2,gpu=2"}, ttl=60)
    assert store.claim("gpu", "w", free_gpus=2, worker_gpus=2) == Blocked(gpus=3)
    store.forget_worker("big")
    claim = store.claim("gpu", "w", free_gpus=1, worker_gpus=2)  # (waiting would block the queue for good)
    assert isinstance(claim, Claim) and claim.job.id == "huge"


def test_same_client_id_twice_creates_one_job(store: JobStore) -> None:
    make(store, "dup")
    again = JobRecord(id="dup", spec=JobSpec(image="other"), state=JobState.QUEUED, queue="cpu", submitted_at=1.0)
    assert store.create(again, only_if_new=True) is False
    assert store.get("dup").spec.image == "img"
    assert store.queue_depths()["queues"]["cpu"] == 1


def test_finish_records_outcome_and_expires_the_record(store: JobStore) -> None:
    make(store, "j")
    claim = store.claim("cpu", "w")
    assert store.finish(claim, Outcome(state=JobState.FAILED, exit_code=3, outputs=["o/x.txt"]))
    record = store.get("j")
    assert (record.state, record.exit_code, record.outputs) == (JobState.FAILED, 3, ["o/x.txt"])
    ttl = store.redis.ttl(store.job_key("j"))
    assert 3500 < ttl <= 3600
    assert store.queue_depths()["running"] == 0


def test_nothing_leaves_a_terminal_state(store: JobStore) -> None:
    make(store, "t")
    claim = store.claim("cpu", "w")
    assert store.finish(claim, Outcome(state=JobState.SUCCEEDED, exit_code=0))
    assert store.finish(claim, Outcome(state=JobState.FAILED, exit_code=1)) is False
    assert store.cancel("t") == JobState.SUCCEEDED
    assert store.reap() == {}
    assert store.get("t").state == JobState.SUCCEEDED


def test_expired_lease_is_requeued_then_given_up_after_max_attempts(redis_url: str) -> None:
    now = [1000.0]
    store = JobStore(connect(redis_url), lease_seconds=10, max_attempts=2, clock=lambda: now[0],
                      restart_grace_seconds=0)  # (its clock runs ahead of Redis's uptime)
    make(store, "lost", at=999.0)
    first = store.claim("cpu", "w1")
    assert store.reap() == {}  # lease still valid
    lapse(store)
    assert store.reap() == {"lost": JobState.QUEUED}
    second = store.claim("cpu", "w2")
    assert second.attempt == 2
    # the first worker comes back: its attempt no longer holds the lease, so it changes nothing
    assert store.finish(first, Outcome(state=JobState.SUCCEEDED, exit_code=0)) is False
    assert store.renew([("lost", 1)]) == {("lost", 1): "lost"}
    lapse(store)
    assert store.reap() == {"lost": JobState.ERROR}
    record = store.get("lost")
    assert record.state == JobState.ERROR and record.error.code == "worker_lost" and record.attempts == 2


def test_clean_shutdown_hand_backs_do_not_use_up_attempts(redis_url: str) -> None:
    now = [1000.0]
    store = JobStore(connect(redis_url), lease_seconds=10, max_attempts=2, clock=lambda: now[0],
                      restart_grace_seconds=0)  # (its clock runs ahead of Redis's uptime)
    make(store, "moved", at=999.0)
    for _ in range(3):  # three workers stop cleanly while running it, each handing it back
        claim = store.claim("cpu", "w")
        assert store.finish(claim, Outcome(state=JobState.QUEUED, handed_back=True))
    retry = store.claim("cpu", "w")
    assert retry.attempt == 4 and retry.job.handbacks == 3
    assert store.finish(retry, Outcome(state=JobState.QUEUED))  # a system failure's retry: it counts
    store.claim("cpu", "w")
    lapse(store)
    assert store.reap() == {"moved": JobState.ERROR}  # the second counted attempt lost: the limit of 2
    assert store.get("moved").error.message == "the worker running the job was lost 2 times"


def test_renew_extends_the_lease_by_redis_s_clock(redis_url: str) -> None:
    # a worker whose clock is an hour behind, or ahead: its leases run a lease from now, by Redis's clock
    for skew in (-3600, 3600):
        store = JobStore(connect(redis_url), lease_seconds=10, clock=lambda skew=skew: time.time() + skew,
                         restart_grace_seconds=0)
        store.redis.flushall()
        make(store, "r")
        store.claim("cpu", "w")
        assert 9.5 < lease_left(store, "r|1") <= 10 and store.reap() == {}
        for _ in range(3):
            lapse(store)  # (as if a lease had passed)
            assert store.renew([("r", 1)]) == {("r", 1): "held"}
            assert 9.5 < lease_left(store, "r|1") <= 10 and store.reap() == {}
        assert store.get("r").state == JobState.RUNNING


def test_cancel_queued_is_immediate_and_running_is_flagged(store: JobStore) -> None:
    make(store, "q")
    make(store, "r")
    assert store.cancel("q") == JobState.CANCELLED
    claim = store.claim("cpu", "w")
    assert claim.job.id == "r"
    assert store.claim("cpu", "w") is None  # the cancelled job left the queue
    pubsub = store.redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(store.cancel_channel)
    pubsub.get_message(timeout=1)
    assert store.cancel("r") == JobState.RUNNING
    message = pubsub.get_message(timeout=2)
    pubsub.close()
    assert message is not None and message["data"] == "r"
    assert store.renew([("r", 1)]) == {("r", 1): "cancel"}
    assert store.cancel("nope") is None


def test_a_requeue_does_not_undo_a_cancel(store: JobStore) -> None:
    # the attempt ends with a retryable system error (or a hand-back) after the user cancelled it
    make(store, "c")
    claim = store.claim("cpu", "w")
    assert store.cancel("c") == JobState.RUNNING
    assert store.finish(claim, Outcome(state=JobState.QUEUED))
    assert store.get("c").state == JobState.CANCELLED
    assert store.claim("cpu", "w") is None


def test_a_cancel_racing_a_finish_ends_in_exactly_one_terminal_state(store: JobStore) -> None:
    for i in range(30):
        make(store, f"race{i}")
    claims = [store.claim("cpu", "w") for _ in range(30)]
    barrier = threading.Barrier(2)
    results: dict[str, list[object]] = {}

    def finisher() -> None:
        barrier.wait()
        results["finish"] = [store.finish(c, Outcome(state=JobState.SUCCEEDED, exit_code=0)) for c in claims]

    def canceller() -> None:
        barrier.wait()
        results["cancel"] = [store.cancel(c.job.id) for c in claims]

    threads = [threading.Thread(target=finisher), threading.Thread(target=canceller)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(results["finish"])  # a running job's cancel only flags it; the worker's report wins
    assert {store.get(c.job.id).state for c in claims} == {JobState.SUCCEEDED}


def test_concurrent_claims_never_hand_one_job_to_two_workers(store: JobStore) -> None:
    for i in range(200):
        make(store, f"c{i}")
    got: list[str] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        while (claim := store.claim("cpu", name)) is not None:
            with lock:
                got.append(claim.job.id)

    threads = [threading.Thread(target=worker, args=(f"w{n}",)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == sorted(f"c{i}" for i in range(200))


def test_wait_for_work_blocks_until_a_job_is_queued(store: JobStore) -> None:
    started = time.monotonic()
    assert store.wait_for_work(["cpu", "gpu"], 0.3) is None
    assert time.monotonic() - started >= 0.25
    threading.Timer(0.2, lambda: make(store, "late", queue="gpu")).start()
    started = time.monotonic()
    assert store.wait_for_work(["cpu", "gpu"], 5) == "gpu"
    assert time.monotonic() - started < 2


def test_wait_returns_when_the_job_ends(store: JobStore) -> None:
    make(store, "w")
    claim = store.claim("cpu", "x")
    threading.Timer(0.3, lambda: store.finish(claim, Outcome(state=JobState.SUCCEEDED, exit_code=0))).start()
    started = time.monotonic()
    record = store.wait("w", 10)
    assert record.state == JobState.SUCCEEDED
    assert time.monotonic() - started < 5
    timed = store.wait("w", 0.1)
    assert timed.state == JobState.SUCCEEDED
    assert store.wait("unknown", 0.1) is None


def test_listing_pages_by_cursor_newest_first_and_by_state(store: JobStore) -> None:
    for i in range(25):
        make(store, f"l{i:02d}", at=1000.0 + (i // 2))  # pairs share a submit time: ties must not be lost
    seen: list[str] = []
    cursor = None
    while True:
        page = store.page(state=None, limit=7, cursor=cursor)
        seen.extend(j.id for j in page.jobs)
        cursor = page.cursor
        if cursor is None:
            break
    assert len(seen) == 25 and len(set(seen)) == 25
    assert [store.get(i).submitted_at for i in seen] == sorted((store.get(i).submitted_at for i in seen),
                                                               reverse=True)
    for _ in range(3):
        store.finish(store.claim("cpu", "w"), Outcome(state=JobState.FAILED, exit_code=1))
    failed = store.page(state=JobState.FAILED, limit=10, cursor=None)
    assert sorted(j.id for j in failed.jobs) == ["l00", "l01", "l02"] and failed.cursor is None
    queued = store.page(state=JobState.QUEUED, limit=100, cursor=None)
    assert [j.id for j in queued.jobs][:2] == ["l03", "l04"] and len(queued.jobs) == 22


def test_running_jobs_page_newest_first_and_a_renewal_between_pages_repeats_none(store: JobStore) -> None:
    for i in range(5):
        make(store, f"r{i}", at=2000.0 + i)
    claims = [store.claim("cpu", "w") for _ in range(5)]
    first = store.page(state=JobState.RUNNING, limit=2, cursor=None)
    store.renew([(c.job.id, c.attempt) for c in reversed(claims)])  # the leases' deadlines move, in a new order
    store.clock = lambda: time.time() + 60  # (later deadlines for the ones renewed now)
    store.renew([(claims[0].job.id, 1)])
    seen = [j.id for j in first.jobs]
    cursor = first.cursor
    while cursor is not None:
        page = store.page(state=JobState.RUNNING, limit=2, cursor=cursor)
        seen += [j.id for j in page.jobs]
        cursor = page.cursor
    assert seen == ["r4", "r3", "r2", "r1", "r0"]


def test_a_listing_skips_jobs_whose_record_expired_and_ends_without_a_cursor(store: JobStore) -> None:
    for i in range(12):
        make(store, f"e{i:02d}", at=3000.0 + i)
    for i in range(2, 11):  # nine of them expired (fast jobs' records go after an hour; the index keeps them longer)
        store.redis.delete(store.job_key(f"e{i:02d}"))
    page = store.page(state=None, limit=2, cursor=None)
    assert [j.id for j in page.jobs] == ["e11", "e01"] and page.cursor is not None
    last = store.page(state=None, limit=1, cursor=page.cursor)
    assert [j.id for j in last.jobs] == ["e00"] and last.cursor is None  # (a page that fills exactly is the last)
    assert store.redis.zcard(f"{store.prefix}:all") == 3  # the expired ones left the index


def test_a_page_that_fills_on_its_last_entry_after_a_skip_is_the_last(store: JobStore) -> None:
    for i in range(3):
        make(store, f"s{i}", at=4000.0 + i)
    store.redis.delete(store.job_key("s1"))
    page = store.page(state=None, limit=2, cursor=None)
    assert ([j.id for j in page.jobs], page.cursor) == (["s2", "s0"], None)


def test_index_entries_of_a_job_submitted_again_under_an_expired_id_stay(store: JobStore) -> None:
    make(store, "again", at=5000.0)
    store._drop_from_indexes(["again"])  # (as a listing that read the old record as gone would)
    assert store.redis.zscore(f"{store.prefix}:all", "again") is not None
    assert [j.id for j in store.page(state=None, limit=5, cursor=None).jobs] == ["again"]


@pytest.mark.parametrize("state", [None, JobState.QUEUED, JobState.RUNNING])
def test_a_page_cut_short_by_its_size_goes_on_from_the_job_left_out(store: JobStore, state: JobState | None) -> None:
    for i in range(10):
        make(store, f"z{i}", at=6000.0 + i)
    if state is JobState.RUNNING:
        for _ in range(10):
            store.claim("cpu", "w")

    def room_for(jobs: int) -> Callable[[JobRecord], bool]:
        left = [jobs]

        def fits(_: JobRecord) -> bool:
            left[0] -= 1
            return left[0] >= 0
        return fits

    def pages() -> list[list[str]]:
        out, cursor = [], None
        while True:
            page = store.page(state=state, limit=5, cursor=cursor, fits=room_for(3))  # three jobs fit a page
            out.append([j.id for j in page.jobs])
            if (cursor := page.cursor) is None:
                return out

    got = pages()
    assert [len(p) for p in got] == [3, 3, 3, 1]
    assert sorted(j for p in got for j in p) == [f"z{i}" for i in range(10)]  # each once


def test_a_cancel_says_whether_it_ended_the_job(store: JobStore) -> None:
    make(store, "cq")
    make(store, "cr")
    store.claim("cpu", "w")  # (cq: it was first)
    assert store.cancel_ending("cr") == (JobState.CANCELLED, True)  # queued: ended by this call
    assert store.cancel_ending("cr") == (JobState.CANCELLED, False)  # already
    assert store.cancel_ending("cq") == (JobState.RUNNING, False)  # its worker is asked to stop it
    assert store.cancel_ending("nope") == (None, False)


def test_a_cursor_that_is_not_a_finite_score_is_refused(store: JobStore) -> None:
    import base64

    for score in ("NaN", "Infinity", "1e400"):
        forged = base64.urlsafe_b64encode(f'[{score}, "x"]'.encode()).decode()
        with pytest.raises(InvalidJob, match="cursor is not one this API returned"):
            store.page(state=None, limit=5, cursor=forged)


def test_every_key_shares_one_hash_tag(store: JobStore) -> None:
    make(store, "k")
    store.finish(store.claim("cpu", "w"), Outcome(state=JobState.SUCCEEDED, exit_code=0))
    store.heartbeat("w", {"health": "HEALTHY"}, ttl=10)
    keys = store.redis.keys("*")
    assert keys and all(k.startswith("{dcc}:") for k in keys)


def test_client_has_explicit_timeouts(redis_url: str) -> None:
    client = connect(redis_url, socket_timeout=4.0)
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == 4.0 and kwargs["socket_connect_timeout"] == 3.0


def test_dropping_a_lost_worker_requeues_its_jobs_at_once(store: JobStore) -> None:
    for name in ("a", "b", "c"):
        make(store, name)
    store.claim("cpu", "lost")
    store.claim("cpu", "lost")
    kept = store.claim("cpu", "alive")
    assert store.drop_worker("lost") == {"a": JobState.QUEUED, "b": JobState.QUEUED}
    assert store.get("c").state == JobState.RUNNING and store.renew([("c", kept.attempt)]) == {("c", 1): "held"}
    assert store.claim("cpu", "alive").attempt == 2
    assert store.drop_worker("nobody") == {}


def test_fast_first_then_priority_then_fifo_and_age_promotes(store: JobStore) -> None:
    now = 10_000.0
    make(store, "normal-old", at=now)
    make(store, "low-old", at=now - 400, priority="low")  # 400 s older than normal-old: the low offset is 300 s
    make(store, "low-new", at=now + 1, priority="low")
    make(store, "high-new", at=now + 2, priority="high")
    make(store, "fast-newest", at=now + 3, fast=True)
    order = [store.claim("cpu", "w").job.id for _ in range(5)]
    assert order == ["fast-newest", "high-new", "low-old", "normal-old", "low-new"]


def test_a_fast_job_is_retried_once_then_ends_in_error(redis_url: str) -> None:
    now = [1000.0]
    store = JobStore(connect(redis_url), lease_seconds=5, max_attempts=5, clock=lambda: now[0],
                      restart_grace_seconds=0)  # (its clock runs ahead of Redis's uptime)
    make(store, "f", at=999.0, fast=True)
    store.claim("cpu", "w1")
    lapse(store)
    assert store.reap() == {"f": JobState.QUEUED}
    store.claim("cpu", "w2")
    lapse(store)
    assert store.reap() == {"f": JobState.ERROR}
    assert store.get("f").attempts == 2


def test_stats_count_states_and_time_percentiles(store: JobStore) -> None:
    for i in range(4):
        make(store, f"s{i}")
    for i in range(4):
        claim = store.claim("cpu", f"w{i % 2}")
        store.finish(claim, Outcome(state=JobState.FAILED if i == 3 else JobState.SUCCEEDED, exit_code=i,
                                    started_at=100.0, exited_at=100.0 + i + 1))
    make(store, "waiting")
    stats = store.stats(window=3600)
    assert stats["states"]["succeeded"] == 3 and stats["states"]["failed"] == 1 and stats["states"]["queued"] == 1
    assert stats["queues"]["cpu"]["jobs"] == 4 and stats["queues"]["cpu"]["runTime"] == {"p50": 2.0, "p95": 4.0}
    assert stats["queues"]["cpu"]["queueWait"]["p50"] is not None and stats["queues"]["gpu"]["jobs"] == 0
    assert stats["jobsPerWorker"] == {"w0": 2, "w1": 2}


def test_a_retried_task_keeps_one_log_per_attempt(redis_url: str) -> None:
    from dcc.jobs import JobError
    from dcc.tes import task_view

    now = [1000.0]
    store = JobStore(connect(redis_url), lease_seconds=10, max_attempts=3, clock=lambda: now[0],
                      restart_grace_seconds=0)  # (its clock runs ahead of Redis's uptime)
    record = JobRecord(id="task", spec=JobSpec(image="img"), state=JobState.QUEUED, queue="cpu", submitted_at=999.0,
                       task={"executors": [{"image": "img", "command": ["true"]}]})
    assert store.create(record, only_if_new=True)

    def executor_log(code: int) -> dict[str, object]:
        return {"start_time": "2026-11-25T00:00:00Z", "stdout": f"out {code}", "exit_code": code}

    first = store.claim("cpu", "w1")  # a system failure: the worker reports it and the task is retried
    assert store.write_task_log(first, {"attempt": 1, "logs": [executor_log(1)], "running": 0})
    failed = {"attempt": 1, "logs": [executor_log(1)], "system_logs": ["runtime_failed: engine gone"]}
    assert store.finish(first, Outcome(state=JobState.QUEUED, error=JobError(code="runtime_failed", message="gone"),
                                       task_log=failed))
    waiting = store.get("task")  # while it waits, the job says why it was retried, and the task has one log
    assert waiting.error is not None and waiting.error.code == "runtime_failed"
    assert [e["logs"][0]["exit_code"] for e in task_view(waiting, "FULL")["logs"]] == [1]
    second = store.claim("cpu", "w2")  # a lost worker: its lease expires and the reaper retries the task
    assert store.get("task").error is None  # the new attempt starts without the earlier one's error
    assert store.write_task_log(second, {"attempt": 2, "logs": [executor_log(2)], "running": 0})
    lapse(store)
    assert store.reap() == {"task": JobState.QUEUED}
    third = store.claim("cpu", "w3")
    assert third.attempt == 3
    success = Outcome(state=JobState.SUCCEEDED, exit_code=0,
                      task_log={"attempt": 3, "logs": [executor_log(0)], "outputs": []})
    assert store.finish(third, success)

    done = store.get("task")
    assert [h["attempt"] for h in done.task_history] == [1, 2] and done.task_log["attempt"] == 3
    full = task_view(done, "FULL")["logs"]
    assert [e["logs"][0]["exit_code"] for e in full] == [1, 2, 0]
    assert full[0]["system_logs"][0] == "runtime_failed: engine gone"
    assert ["did not finish" in " ".join(e.get("system_logs", [])) for e in full] == [True, True, False]
    assert "system_logs" not in full[2] and done.error is None  # the success carries no earlier attempt's error
    basic = task_view(done, "BASIC")["logs"]
    assert len(basic) == 3 and all("stdout" not in e["logs"][0] and "system_logs" not in e for e in basic)
    # result.json keeps every attempt's log, for when the Redis record has expired
    from dcc.service import record_from_result, result_document

    again = record_from_result(json.loads(json.dumps(result_document(done))))
    assert task_view(again, "FULL")["logs"] == full
    # and so does the result.json the worker writes (from its claim, not from the Redis record)
    from worker_agent.agent import _apply

    written = record_from_result(json.loads(json.dumps(result_document(_apply(third, success, now[0])))))
    assert task_view(written, "FULL")["logs"] == full


def test_a_task_attempt_lost_before_it_logged_anything_still_gets_a_log(redis_url: str) -> None:
    from dcc.tes import task_view

    now = [1000.0]
    store = JobStore(connect(redis_url), lease_seconds=10, max_attempts=3, clock=lambda: now[0],
                      restart_grace_seconds=0)  # (its clock runs ahead of Redis's uptime)
    task = JobRecord(id="quiet", spec=JobSpec(image="img"), state=JobState.QUEUED, queue="cpu", submitted_at=999.0,
                     task={"executors": [{"image": "img", "command": ["true"]}]})
    plain = JobRecord(id="plain", spec=JobSpec(image="img"), state=JobState.QUEUED, queue="cpu", submitted_at=999.5)
    assert store.create(task, only_if_new=True) and store.create(plain, only_if_new=True)
    assert {store.claim("cpu", "w1").job.id for _ in range(2)} == {"quiet", "plain"}
    lapse(store)  # both workers die before either job wrote anything
    assert store.reap() == {"quiet": JobState.QUEUED, "plain": JobState.QUEUED}
    retried = store.get("quiet")
    assert retried.task_history == [{"attempt": 1}]
    logs = task_view(retried, "FULL")["logs"]
    assert len(logs) == 1 and logs[0]["logs"] == [] and "attempt 1 did not finish" in logs[0]["system_logs"][0]
    assert store.get("plain").task_history == []  # only TES tasks keep attempt logs



def test_a_record_accepted_under_older_rules_stays_readable_and_claimable(redis_url: str) -> None:
    """A job stored before a rule tightened (or one a parser limit refuses) must not stop the workers."""
    from dcc.jobs import Input, Parameters

    store = JobStore(connect(redis_url), lease_seconds=10)
    nested: object = "x"
    for _ in range(230):  # json.loads takes it; pydantic's JSON parser stops near 200 levels
        nested = [nested]
    spec = JobSpec.model_construct(image="img", command=["true"], env={}, workingDir=None, appendStdOut=False,
                                   appendStdErr=False, meta=nested, fast=False, wait=False, priority="normal", id=None,
                                   parameters=Parameters.model_construct(memory=1, cpus=0.001, gpu=0),
                                   inputs=[Input.model_construct(name="tab\there", value="v", encoding="utf8",
                                                                 source="inline")])
    store.create(JobRecord(id="old", spec=spec, state=JobState.QUEUED, queue="cpu", submitted_at=time.time()),
                 only_if_new=True)
    with pytest.raises(ValueError):
        JobSpec.model_validate(spec.model_dump())  # today's rules refuse it
    claim = store.claim("cpu", "w1")
    assert claim is not None and claim.job.id == "old"
    assert claim.job.spec.parameters.memory == 1 and claim.job.spec.inputs[0].name == "tab\there"
    assert store.get("old").spec.meta == nested


def test_a_replica_that_refuses_writes_is_unavailability_to_wait_out_not_a_crash(
        store: JobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    import redis

    from dcc.errors import StoreUnavailable

    def read_only(*args: object, **kwargs: object) -> None:
        raise redis.ReadOnlyError("You can't write against a read only replica.")

    monkeypatch.setattr(store.redis, "evalsha", read_only)
    with pytest.raises(StoreUnavailable, match="not taking writes"):
        store.claim("cpu", "w")


def test_dropping_a_sick_worker_takes_back_its_jobs_only(redis_url: str) -> None:
    now = [1000.0]
    store = JobStore(connect(redis_url), lease_seconds=10, clock=lambda: now[0])
    make(store, "healthy-job", at=999.0)
    make(store, "sick-job", at=999.5)
    store.claim("cpu", "healthy")
    store.claim("cpu", "sick")
    lapse(store)  # both leases lapsed, as they do while Redis is away (the reaper then waits out its grace)
    assert store.drop_worker("sick") == {"sick-job": JobState.QUEUED}  # the sick worker's, at once
    assert store.get("healthy-job").state == JobState.RUNNING  # (its worker renews it once it reconnects)
    assert store.renew([("healthy-job", 1)]) == {("healthy-job", 1): "held"}


# Silences and holds run on Redis's clock, so these tests wait in real time. Lease 2 s: a silence is over 1.2 s of
# no worker's heartbeat; the hold, 2 s.
def _until(t0: float, seconds: float) -> None:
    time.sleep(max(0.0, t0 + seconds - time.time()))


def test_leases_that_lapse_while_every_worker_is_silent_get_one_lease_more(redis_url: str) -> None:
    store = JobStore(connect(redis_url), lease_seconds=2)
    beat = lambda worker: store.heartbeat(worker, {"health": "HEALTHY"}, ttl=3600)  # noqa: E731
    make(store, "a", at=999.0)
    make(store, "b", at=999.5)
    for worker in ("w1", "w2"):
        beat(worker)
        store.claim("cpu", worker)
    time.sleep(2.5)  # Redis was out of reach (or failed over): no worker could renew, both leases lapsed
    t0 = time.time()
    assert store.reap(uptime=3600) == {}  # the reaper sees Redis first: the workers have not had their chance
    assert abs(store.resumed_at - t0) < 0.2
    beat("w1")
    assert store.renew([("a", 1)]) == {("a", 1): "held"}  # w1 is back; w2 never comes back
    while time.time() < t0 + 1.6:
        beat("w1")
        store.renew([("a", 1)])
        assert store.reap(uptime=3600) == {}  # held for a lease from the end of the silence
        time.sleep(0.2)
    _until(t0, 2.2)
    assert store.reap(uptime=3600) == {"b": JobState.QUEUED}  # then the silent worker's job is taken back
    assert store.get("a").state == JobState.RUNNING
    assert abs(store.resumed_at - t0) < 0.2  # (w1's heartbeat came within the silence the reaper had ended)


def test_a_heartbeat_ending_a_silence_holds_the_reaper_and_a_dead_fleet_is_held_once(redis_url: str) -> None:
    store = JobStore(connect(redis_url), lease_seconds=2)
    make(store, "a", at=999.0)
    store.heartbeat("w1", {}, ttl=3600)
    store.claim("cpu", "w1")
    time.sleep(2.5)
    t0 = time.time()
    store.heartbeat("w1", {}, ttl=3600)  # a worker reaches Redis again before any reaper does
    while time.time() < t0 + 1.6:
        assert store.reap(uptime=3600) == {} and abs(store.resumed_at - t0) < 0.2
        store.heartbeat("w1", {}, ttl=3600)
        time.sleep(0.2)
    _until(t0, 2.2)
    assert store.reap(uptime=3600) == {"a": JobState.QUEUED}  # a lease not renewed within the hold is taken back
    store.claim("cpu", "w2")
    time.sleep(2.5)  # then every worker dies: no heartbeat for 2.5 s, and none of the last hold's 4 s is left
    t1 = time.time()
    assert store.reap(uptime=3600) == {} and abs(store.resumed_at - t1) < 0.2  # the reaper cannot tell: it holds...
    _until(t1, 2.2)
    assert store.reap(uptime=3600) == {"a": JobState.QUEUED}  # ...for a lease, once
    store.claim("cpu", "w3")
    time.sleep(2.5)
    assert store.reap(uptime=3600) == {"a": JobState.ERROR}  # (third attempt lost) the same silence: no new hold
    assert abs(store.resumed_at - t1) < 0.2


def test_workers_back_after_the_reaper_s_hold_ended_get_a_hold_of_their_own(redis_url: str) -> None:
    store = JobStore(connect(redis_url), lease_seconds=2)
    make(store, "a", at=999.0)
    make(store, "b", at=999.5)
    for worker in ("w1", "w2"):
        store.heartbeat(worker, {}, ttl=3600)
        store.claim("cpu", worker)
    time.sleep(2.5)
    assert store.reap(uptime=3600) == {}  # the reaper sees Redis first: it holds
    time.sleep(2.3)  # the workers see it later than a hold (no reaper ran meanwhile)
    store.heartbeat("w1", {}, ttl=3600)  # the first heartbeat ends the same silence for the workers
    assert store.reap(uptime=3600) == {}  # w2, a moment behind w1, is not taken for dead
    store.heartbeat("w2", {}, ttl=3600)
    assert store.renew([("a", 1), ("b", 1)]) == {("a", 1): "held", ("b", 1): "held"}


@pytest.mark.parametrize("skew", [-20.0, 3600.0])
def test_a_worker_s_clock_skew_neither_starts_nor_stretches_a_hold(redis_url: str, skew: float) -> None:
    # the live worker's clock is 20 s behind the reaper's, or an hour ahead: its heartbeats are on time all the same
    reaper = JobStore(connect(redis_url), lease_seconds=2)
    live = JobStore(connect(redis_url), lease_seconds=2, clock=lambda: time.time() + skew)
    make(reaper, "dead-job", at=999.0)
    reaper.heartbeat("dead", {}, ttl=3600)  # (a worker of the reaper's clock beat last)
    reaper.claim("cpu", "dead")  # then died
    live.heartbeat("live", {}, ttl=3600)
    t0 = time.time()
    while time.time() < t0 + 2.6:
        live.heartbeat("live", {}, ttl=3600)
        time.sleep(0.2)
    assert reaper.reap(uptime=3600) == {"dead-job": JobState.QUEUED}
    assert reaper.resumed_at == 0.0  # no silence was seen


def test_a_worker_whose_heartbeats_keep_pausing_cannot_hold_the_reaper_for_good(redis_url: str) -> None:
    # the one live worker heartbeats every 1.5 s (a slow loop): each pause is a silence, but holds do not chain
    store = JobStore(connect(redis_url), lease_seconds=2)
    make(store, "dead-job", at=999.0)
    store.heartbeat("slow", {}, ttl=3600)
    store.claim("cpu", "dead")
    t0, reaped, beat = time.time(), {}, time.time()
    while not reaped and time.time() < t0 + 15:
        if time.time() - beat >= 1.5:
            store.heartbeat("slow", {}, ttl=3600)
            beat = time.time()
        reaped = store.reap(uptime=3600)
        time.sleep(0.1)
    assert reaped == {"dead-job": JobState.QUEUED}
    # a lease, then at most a hold: the next hold begins after the dead lease lapsed, and takes it back
    assert time.time() - t0 < 2 + 2 * 2 + 1
    assert store.resumed_at > t0  # (it was held)


def test_a_full_redis_refuses_new_work_but_keeps_running_jobs_running(redis_url: str) -> None:
    from dcc.drain import DrainMarks
    from dcc.errors import StoreUnavailable

    store = JobStore(connect(redis_url), lease_seconds=30, max_attempts=2, restart_grace_seconds=0)
    make(store, "running")
    make(store, "waiting")
    held = store.claim("cpu", "w")
    assert held is not None and held.job.id == "running"
    used = int(store.redis.info("memory")["used_memory"])
    old = store.redis.config_get("maxmemory*")
    try:  # (the deployed policy: ElastiCache's parameter group sets noeviction)
        store.redis.config_set("maxmemory-policy", "noeviction")
        store.redis.config_set("maxmemory", str(max(1, used // 2)))
        with pytest.raises(StoreUnavailable, match="Redis is full"):
            make(store, "refused")
        assert store.get("refused") is None and store.queue_depths()["queues"]["cpu"] == 1  # nothing half written
        # what keeps jobs running goes on: leases, heartbeats, the scaler's marks and checks, results
        assert store.renew([("running", 1)]) == {("running", 1): "held"}
        store.heartbeat("w", {"health": "HEALTHY", "slots": "cpu=2"}, ttl=60)
        assert [w["id"] for w in store.workers()] == ["w"]
        DrainMarks(store.redis).mark(["other"], now=1.0)
        assert not store.fence_idle("w", mark_ttl=60)
        # an expired lease is still taken back (its job waits again)
        store.redis.config_set("maxmemory", "0")  # (the test's own write, as if the lease had lapsed)
        store.redis.zadd(store.leases_key, {"running|1": 0}, xx=True)
        store.redis.config_set("maxmemory", str(max(1, used // 2)))
        assert store.reap() == {"running": JobState.QUEUED}
        held = store.claim("cpu", "w")
        assert held is not None and held.job.id == "running" and held.attempt == 2
        # the queue still drains (a script whose first write frees memory runs whole): workers work it off
        claim = store.claim("cpu", "w2")
        assert claim is not None and claim.job.id == "waiting"
        assert store.finish(held, Outcome(state=JobState.SUCCEEDED, exit_code=0))
        assert store.cancel("waiting") == JobState.RUNNING  # (a cancel is asked of its worker: it only frees)
        assert store.renew([("waiting", 1)]) == {("waiting", 1): "cancel"}
    finally:
        store.redis.config_set("maxmemory", old["maxmemory"])
        store.redis.config_set("maxmemory-policy", old["maxmemory-policy"])
    assert store.get("running").state == JobState.SUCCEEDED and store.get("waiting").state == JobState.RUNNING
    assert DrainMarks(store.redis).draining(["other", "w"]) == {"other"}


def test_a_redis_older_than_7_is_refused_saying_so(store: JobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store.check_version()  # (this one: 7 or later)
    monkeypatch.setattr(store.redis, "info", lambda section=None: {"redis_version": "6.2.14"})
    with pytest.raises(RuntimeError, match="needs Redis 7 or later.*6.2.14"):
        store.check_version()
