"""The worker under concurrency: GPU slots and device assignment, attempts of one job that overlap, leases while
stopping (real Redis; a recording runtime).

The device requests themselves are checked against the real Docker engine in test_docker_runtime.py.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dcc.bootstrap import build_service
from dcc.drain import DrainMarks
from dcc.errors import InvalidJob, JobSystemError
from dcc.jobs import ErrorCode, JobSpec, JobState, Outcome, Parameters
from dcc.local_storage import LocalStorage
from dcc.service import JobService, result_key
from dcc.settings import Settings
from dcc.store import JobStore, connect
from worker_agent.agent import Worker, WorkerConfig
from worker_agent.runtime import ContainerJob, ContainerOutcome

pytestmark = pytest.mark.redis


class RecordingRuntime:
    """Runs nothing: holds each job for ``seconds`` and records which GPUs it was given, and when."""

    def __init__(self, seconds: float = 0.3) -> None:
        self.seconds = seconds
        self.lock = threading.Lock()
        self.runs: list[tuple[str, tuple[str, ...], float, float]] = []

    def run(self, job: ContainerJob, *, workdir: Path, **kw: Any) -> ContainerOutcome:
        start = time.monotonic()
        time.sleep(float(job.env.get("HOLD", self.seconds)))  # (a job may say how long it holds its GPUs)
        end = time.monotonic()
        with self.lock:
            self.runs.append((job.job_id, job.gpu_device_ids, start, end))
        (workdir / "outputs").mkdir()
        for name in ("stdout", "stderr"):
            (workdir / name).write_text("")
        return ContainerOutcome(exit_code=0, timed_out=False, killed=False, started_at=time.time(),
                                exited_at=time.time(), stdout_path=workdir / "stdout", stderr_path=workdir / "stderr",
                                outputs_dir=workdir / "outputs")

    def kill(self, job_id: str) -> bool:
        return False

    def cleanup(self, job_id: str) -> None:
        pass

    def remove_leftovers(self, worker_id: str) -> int:
        return 0

    def ping(self) -> str | None:
        return None


def run_worker(settings: Settings, tmp_path: Path, runtime: RecordingRuntime, **config: object):  # type: ignore[no-untyped-def]
    service = build_service(settings)
    worker = Worker(store=service.store, storage=LocalStorage(Path(settings.storage_url)), runtime=runtime,
                    config=WorkerConfig(worker_id="gpu-box", workdir=tmp_path / "w", **config))  # type: ignore[arg-type]
    return service, worker


def wait_all(service, ids: list[str], timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(service.get(i).state.terminal for i in ids):
            return
        time.sleep(0.05)
    raise AssertionError({i: service.get(i).state for i in ids})


def test_each_gpu_job_gets_gpus_no_other_running_job_holds(redis_url: str, tmp_path: Path) -> None:
    settings = Settings(redis_url=redis_url, storage_url=str(tmp_path / "s"))
    runtime = RecordingRuntime()
    service, worker = run_worker(settings, tmp_path, runtime, slots={"cpu": 1, "gpu": 4},
                                 gpu_device_ids=("0", "1", "2", "3"))
    needs = [1, 2, 1, 1, 2, 1, 3, 1]
    ids = [service.submit(JobSpec(image="x", parameters=Parameters(gpu=n)))[0].id for n in needs]
    worker.start()
    try:
        wait_all(service, ids)
    finally:
        worker.stop(grace=5)
    assert {service.get(i).state for i in ids} == {JobState.SUCCEEDED}
    got = {job_id: gpus for job_id, gpus, _, _ in runtime.runs}
    assert [len(got[i]) for i in ids] == needs
    assert all(set(g) <= {"0", "1", "2", "3"} and len(set(g)) == len(g) for g in got.values())
    overlapping = 0
    for a in runtime.runs:
        for b in runtime.runs:
            if a[0] < b[0] and a[2] < b[3] and b[2] < a[3]:
                overlapping += 1
                assert not set(a[1]) & set(b[1]), f"{a[0]} and {b[0]} shared a GPU while both ran"
    assert overlapping > 0  # they did run at the same time


def test_the_service_shows_a_gpu_worker_s_heartbeat_typed(redis_url: str, tmp_path: Path) -> None:
    settings = Settings(redis_url=redis_url, storage_url=str(tmp_path / "s"))
    runtime = RecordingRuntime()
    service, worker = run_worker(settings, tmp_path, runtime, slots={"cpu": 1, "gpu": 2}, gpu_device_ids=("0", "1"),
                                 heartbeat_seconds=0.2)
    job_id = service.submit(JobSpec(image="x", env={"HOLD": "2"}, parameters=Parameters(gpu=1)))[0].id
    worker.start()
    try:
        until(lambda: any(w["running"] for w in service.workers()))
        [busy] = service.workers()
        wait_all(service, [job_id])
        until(lambda: not service.workers()[0]["running"])
        [idle] = service.workers()
    finally:
        worker.stop(grace=5)
    [(_, [gpu], _, _)] = runtime.runs  # the GPU the job was given
    assert 0 <= time.time() - busy["seen"] < 5 and busy["seen"] <= idle["seen"]
    assert {k: v for k, v in busy.items() if k not in ("seen", "host")} == {
        "id": "gpu-box", "health": "HEALTHY", "class": "local", "slots": {"cpu": 1, "gpu": 2}, "running": [job_id],
        "gpus": ["0", "1"], "gpusHeld": [{"gpu": gpu, "job": job_id}], "gpuInfo": [], "idleSince": None,
        "draining": False}
    assert (idle["running"], idle["gpusHeld"]) == ([], [])
    finished = service.get(job_id).finished_at
    assert finished is not None and isinstance(idle["idleSince"], float) and idle["idleSince"] >= finished - 0.5


def test_disable_nvidia_runtime_runs_gpu_jobs_without_devices(redis_url: str, tmp_path: Path) -> None:
    settings = Settings(redis_url=redis_url, storage_url=str(tmp_path / "s"))
    runtime = RecordingRuntime(0.05)
    service, worker = run_worker(settings, tmp_path, runtime, slots={"cpu": 1, "gpu": 2},
                                 gpu_device_ids=("0", "1"), disable_nvidia_runtime=True)
    ids = [service.submit(JobSpec(image="x", parameters=Parameters(gpu=1)))[0].id for _ in range(3)]
    worker.start()
    try:
        wait_all(service, ids)
    finally:
        worker.stop(grace=5)
    assert [gpus for _, gpus, _, _ in runtime.runs] == [(), (), ()]


def test_too_many_gpus_is_refused_at_submit(redis_url: str, tmp_path: Path) -> None:
    service = build_service(Settings(redis_url=redis_url, storage_url=str(tmp_path / "s"), max_gpus_per_worker=4))
    with pytest.raises(InvalidJob) as info:
        service.submit(JobSpec(image="x", parameters=Parameters(gpu=5)))
    assert info.value.field == "parameters.gpu" and "4" in str(info.value)


def test_a_job_asking_for_more_gpus_than_the_worker_has_ends_at_once_and_the_worker_stays_healthy(
        redis_url: str, tmp_path: Path) -> None:
    settings = Settings(redis_url=redis_url, storage_url=str(tmp_path / "s"))  # (fleet unknown: no check at submit)
    runtime = RecordingRuntime(0.05)
    service, worker = run_worker(settings, tmp_path, runtime, slots={"cpu": 1, "gpu": 2}, gpu_device_ids=("0", "1"),
                                 max_consecutive_system_errors=1)
    big = service.submit(JobSpec(image="x", parameters=Parameters(gpu=3)))[0].id
    worker.start()
    try:
        wait_all(service, [big], timeout=10)
        cpu = service.submit(JobSpec(image="x"))[0].id
        wait_all(service, [cpu], timeout=10)
        assert worker.health == "HEALTHY"
    finally:
        worker.stop(grace=5)
    job = service.get(big)
    assert job.error is not None
    assert (job.state, job.attempts, job.error.code) == (JobState.ERROR, 1, "too_many_gpus")
    assert "3 GPUs" in job.error.message and "has 2" in job.error.message
    assert service.get(cpu).state is JobState.SUCCEEDED and [run[0] for run in runtime.runs] == [cpu]


def test_a_gpu_job_waiting_for_all_gpus_starts_before_smaller_jobs_queued_after_it(redis_url: str,
                                                                                  tmp_path: Path) -> None:
    settings = Settings(redis_url=redis_url, storage_url=str(tmp_path / "s"))
    runtime = RecordingRuntime()
    service, worker = run_worker(settings, tmp_path, runtime, slots={"gpu": 4}, gpu_device_ids=("0", "1", "2", "3"))

    def submit(gpus: int, seconds: float) -> str:
        return service.submit(JobSpec(image="x", env={"HOLD": str(seconds)}, parameters=Parameters(gpu=gpus)))[0].id

    first = [submit(1, seconds) for seconds in (0.3, 0.6, 0.9, 1.2)]  # (their GPUs free one at a time)
    worker.start()
    try:
        until(lambda: all(service.get(i).state is JobState.RUNNING for i in first))
        big = submit(4, 0.2)
        time.sleep(0.01)  # (jobs queued within one millisecond go in the order of their ids)
        later = [submit(1, 0.2) for _ in range(4)]
        wait_all(service, [big, *later])
    finally:
        worker.stop(grace=5)
    started = {job_id: start for job_id, _, start, _ in runtime.runs}
    assert all(started[big] < started[i] for i in later)  # none took a GPU it waited for


def test_a_gpu_job_a_busy_worker_cannot_fit_goes_to_an_idle_worker_at_once(redis_url: str, tmp_path: Path) -> None:
    service = build_service(Settings(redis_url=redis_url, storage_url=str(tmp_path / "s")))
    busy_runtime = SlowToDieRuntime(seconds=30, dying=0)

    def gpu_worker(name: str, runtime: RecordingRuntime) -> Worker:
        return Worker(store=service.store, storage=LocalStorage(tmp_path / "s"), runtime=runtime,
                      config=WorkerConfig(worker_id=name, workdir=tmp_path / name, slots={"gpu": 2},
                                          gpu_device_ids=("0", "1"), idle_claim_seconds=4))

    busy, idle = gpu_worker("busy", busy_runtime), gpu_worker("idle", RecordingRuntime(0.05))
    holder = service.submit(JobSpec(image="x", parameters=Parameters(gpu=1)))[0].id
    busy.start()
    try:
        until(busy_runtime.alive)
        idle.start()
        time.sleep(0.3)  # both wait for a wake-up (the busy one, with a GPU free, first)
        two = service.submit(JobSpec(image="x", parameters=Parameters(gpu=2)))[0].id
        wait_all(service, [two], timeout=3)  # (not left for the idle one's next claim without a wake-up, 4 s on)
        assert service.get(holder).state is JobState.RUNNING
    finally:
        idle.stop(grace=5)
        busy.stop(grace=0)
    job = service.get(two)
    assert (job.state, job.worker, job.attempts) == (JobState.SUCCEEDED, "idle", 1)


class FailsOnceRuntime(RecordingRuntime):
    """The first run fails with a retryable system error; later runs succeed."""

    def __init__(self) -> None:
        super().__init__(1.0)  # the second attempt outlives the first one's ending
        self.calls = 0

    def run(self, job: ContainerJob, *, workdir: Path, **kw: Any) -> ContainerOutcome:
        self.calls += 1
        if self.calls == 1:
            raise JobSystemError(ErrorCode.RUNTIME_FAILED, "the engine hiccuped", retryable=True)
        return super().run(job, workdir=workdir, **kw)


def test_a_requeued_job_reclaimed_by_the_same_worker_keeps_its_new_attempt(redis_url: str, tmp_path: Path) -> None:
    # With two slots, the first attempt's thread is still ending (held in its notify hook) when the worker claims
    # the requeued job again: ending it must not free the second attempt's slot or lose its record.
    settings = Settings(redis_url=redis_url, storage_url=str(tmp_path / "s"))
    runtime = FailsOnceRuntime()
    service = build_service(settings)
    notified: list[str] = []

    def slow_notify(job_id: str) -> None:
        notified.append(job_id)
        if len(notified) == 2:  # the first attempt's end: claimed (1), requeued (2)
            time.sleep(0.3)

    worker = Worker(store=service.store, storage=LocalStorage(Path(settings.storage_url)), runtime=runtime,
                    config=WorkerConfig(worker_id="box", workdir=tmp_path / "w", slots={"cpu": 2}), notify=slow_notify)
    job_id = service.submit(JobSpec(image="x"))[0].id
    worker.start()
    try:
        wait_all(service, [job_id], timeout=20)
        record = service.get(job_id)
        time.sleep(0.4)  # both attempts' threads have ended
        assert worker.running_count() == 0
    finally:
        worker.stop(grace=5)
    assert record.state is JobState.SUCCEEDED
    assert record.attempts == 2
    assert runtime.calls == 2


def test_a_draining_worker_claims_nothing_until_the_mark_is_cleared(redis_url: str, tmp_path: Path) -> None:
    settings = Settings(redis_url=redis_url, storage_url=str(tmp_path / "s"))
    runtime = RecordingRuntime(0.05)
    service, worker = run_worker(settings, tmp_path, runtime, slots={"cpu": 2}, heartbeat_seconds=0.2)
    marks = DrainMarks(service.store.redis, prefix=service.store.prefix)
    marks.mark(["gpu-box"], now=time.time())
    job_id = service.submit(JobSpec(image="x"))[0].id
    worker.start()
    try:
        time.sleep(1.5)
        assert service.get(job_id).state is JobState.QUEUED and not runtime.runs
        assert [w["draining"] for w in service.workers()] == [True]
        marks.clear(["gpu-box"])
        wait_all(service, [job_id], timeout=10)
    finally:
        worker.stop(grace=5)
    assert service.get(job_id).state is JobState.SUCCEEDED


class SlowToDieRuntime(RecordingRuntime):
    """Each run lasts ``seconds`` unless killed, and then ends only ``dying`` s after the kill, as a container
    that takes its time to stop. Like Docker, a kill reaches the run of the job's id that is there now."""

    def __init__(self, seconds: float, dying: float) -> None:
        super().__init__(seconds)
        self.dying = dying
        self.live: dict[str, list[threading.Event]] = {}

    def run(self, job: ContainerJob, *, workdir: Path, **kw: Any) -> ContainerOutcome:
        killed = threading.Event()
        with self.lock:
            self.live.setdefault(job.job_id, []).append(killed)
        start = time.monotonic()
        if killed.wait(self.seconds):
            time.sleep(self.dying)
        with self.lock:
            self.live[job.job_id].remove(killed)
            self.runs.append((job.job_id, job.gpu_device_ids, start, time.monotonic()))
        (workdir / "outputs").mkdir()
        for name in ("stdout", "stderr"):
            (workdir / name).write_text("")
        return ContainerOutcome(exit_code=137 if killed.is_set() else 0, timed_out=False, killed=killed.is_set(),
                                started_at=time.time(), exited_at=time.time(), stdout_path=workdir / "stdout",
                                stderr_path=workdir / "stderr", outputs_dir=workdir / "outputs")

    def kill(self, job_id: str) -> bool:
        with self.lock:
            runs = list(self.live.get(job_id, ()))
        for killed in runs:
            killed.set()
        return bool(runs)

    def alive(self) -> int:
        with self.lock:
            return sum(len(runs) for runs in self.live.values())


def until(check: Callable[[], object], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


class UncheckedStore(JobStore):
    """Claims whatever is first, as if the GPUs the worker counted as free were wrong: what is left for the wait in
    ``Worker._take_gpus``."""

    def claim(self, queue, worker, **_):  # type: ignore[no-untyped-def, override]
        return super().claim(queue, worker)


def cut_off_worker(redis_url: str, tmp_path: Path, runtime: SlowToDieRuntime,
                   store_type: type[JobStore] = JobStore) -> tuple[JobService, JobStore, Worker, str]:
    """A GPU worker whose renewals are 20 s apart (its lease can be taken back, and the job claimed again by it,
    before it hears of it, as when it was cut off from Redis for a while), started, running a 1-GPU job."""
    store = store_type(connect(redis_url), lease_seconds=60, restart_grace_seconds=0)
    worker = Worker(store=store, storage=LocalStorage(tmp_path / "s"), runtime=runtime,
                    config=WorkerConfig(worker_id="cut-off", workdir=tmp_path / "w", heartbeat_seconds=20,
                                        slots={"gpu": 2}, gpu_device_ids=("0", "1")))
    service = build_service(Settings(redis_url=redis_url, storage_url=str(tmp_path / "s")))
    job_id = service.submit(JobSpec(image="x", parameters=Parameters(gpu=1)))[0].id
    worker.start()
    until(runtime.alive)
    return service, store, worker, job_id


def claimed_again(store: JobStore, job_id: str, runtime: SlowToDieRuntime | None = None) -> None:
    """Take the lease of the job's first attempt back, and wait until the worker has claimed it again (with
    ``runtime``: and has started stopping the first attempt for it, as it does when it launches the second)."""
    def taken_back() -> bool:  # (again if the worker renewed in between: its cancel listener renews as it starts)
        store.redis.zadd(store.leases_key, {f"{job_id}|1": 0}, xx=True)
        return store.reap() == {job_id: JobState.QUEUED}

    until(taken_back)
    until(lambda: (record := store.get(job_id)) is not None and record.attempts == 2
          and record.state is JobState.RUNNING)
    if runtime is not None:
        until(lambda: any(killed.is_set() for killed in runtime.live.get(job_id, ()))
              or any(run[0] == job_id for run in runtime.runs))


def test_an_attempt_being_stopped_for_a_later_one_keeps_its_gpus_until_it_ends(redis_url: str,
                                                                               tmp_path: Path) -> None:
    runtime = SlowToDieRuntime(seconds=30, dying=1.5)
    service, store, worker, first = cut_off_worker(redis_url, tmp_path, runtime)
    try:
        runtime.seconds = 1.0
        claimed_again(store, first)  # attempt 1 is killed, and takes 1.5 s to end, still on its GPU
        other = service.submit(JobSpec(image="x", parameters=Parameters(gpu=1)))[0].id
        wait_all(service, [first, other])
    finally:
        worker.stop(grace=5)
    assert service.get(first).state is JobState.SUCCEEDED and service.get(other).state is JobState.SUCCEEDED
    assert len(runtime.runs) == 3  # attempts 1 and 2 of the first job, and the other job
    for a in runtime.runs:
        for b in runtime.runs:
            if a is not b and a[2] < b[3] and b[2] < a[3]:
                assert not set(a[1]) & set(b[1]), f"{a} and {b} shared a GPU while both ran"


def test_a_stop_waits_for_an_attempt_being_stopped_for_a_later_one(redis_url: str, tmp_path: Path) -> None:
    runtime = SlowToDieRuntime(seconds=30, dying=2.0)
    service, store, worker, job_id = cut_off_worker(redis_url, tmp_path, runtime)
    try:
        claimed_again(store, job_id, runtime)  # (the stop comes while attempt 1 is being stopped for attempt 2)
    finally:
        worker.stop(grace=0)
    assert runtime.alive() == 0 and worker.running_count() == 0  # attempt 1 ended before the worker stopped
    job = service.get(job_id)
    assert (job.state, job.attempts, job.handbacks) == (JobState.QUEUED, 2, 1)  # attempt 2 was handed back


def test_a_stop_lets_a_later_attempt_start_only_once_the_earlier_one_ended(redis_url: str, tmp_path: Path) -> None:
    runtime = SlowToDieRuntime(seconds=30, dying=1.5)
    service, store, worker, job_id = cut_off_worker(redis_url, tmp_path, runtime)
    try:
        runtime.seconds = 0.5  # (attempt 2 ends within the grace)
        claimed_again(store, job_id)
    finally:
        worker.stop(grace=10)
    assert service.get(job_id).state is JobState.SUCCEEDED
    (_, _, start_1, end_1), (_, _, start_2, _) = sorted(runtime.runs, key=lambda run: run[2])
    assert end_1 <= start_2  # the job's two containers never ran at once


def test_a_job_cancelled_while_it_waits_for_gpus_keeps_its_result(redis_url: str, tmp_path: Path) -> None:
    runtime = SlowToDieRuntime(seconds=30, dying=0)
    service, store, worker, holder = cut_off_worker(redis_url, tmp_path, runtime,  # (it holds one of the two GPUs)
                                                    UncheckedStore)
    try:
        waiting = service.submit(JobSpec(image="x", parameters=Parameters(gpu=2)))[0].id
        until(lambda: service.get(waiting).state is JobState.RUNNING)  # claimed: it waits for a second GPU
        service.cancel(waiting)
        until(lambda: service.get(waiting).state.terminal)
        service.cancel(holder)
    finally:
        worker.stop(grace=5)
    assert service.get(waiting).state is JobState.CANCELLED
    stored = json.loads(LocalStorage(tmp_path / "s").get_bytes(result_key(waiting)))
    assert stored["state"] == "cancelled"  # (served by id once the record expires)
    assert [job_id for job_id, *_ in runtime.runs] == [holder]  # no container started for it


def test_an_attempt_that_lost_its_lease_to_another_worker_writes_nothing(redis_url: str, tmp_path: Path) -> None:
    runtime = SlowToDieRuntime(seconds=30, dying=1.0)
    store = JobStore(connect(redis_url), lease_seconds=60, restart_grace_seconds=0)
    storage = LocalStorage(tmp_path / "s")
    late = Worker(store=store, storage=storage, runtime=runtime,
                  config=WorkerConfig(worker_id="late", workdir=tmp_path / "w1", heartbeat_seconds=1, slots={"cpu": 1}))
    service = build_service(Settings(redis_url=redis_url, storage_url=str(tmp_path / "s")))
    job_id = service.submit(JobSpec(image="x"))[0].id
    late.start()
    other = Worker(store=store, storage=storage, runtime=RecordingRuntime(0.05),
                   config=WorkerConfig(worker_id="other", workdir=tmp_path / "w2", slots={"cpu": 1}))
    try:
        until(runtime.alive)
        late.stopping.set()  # (it claims nothing more, but its lease thread runs on)
        store.redis.zadd(store.leases_key, {f"{job_id}|1": 0})  # the lease lapsed: the job goes to another worker
        assert store.reap() == {job_id: JobState.QUEUED}
        other.start()
        wait_all(service, [job_id])
        until(lambda: not runtime.alive() and not late.running_count())  # it hears its lease went; its attempt ends
    finally:
        other.stop(grace=5)
        late.stop(grace=0)
    job = service.get(job_id)
    assert (job.state, job.attempts, job.worker) == (JobState.SUCCEEDED, 2, "other")
    stored = json.loads(storage.get_bytes(result_key(job_id)))
    assert (stored["state"], stored["attempts"]) == ("succeeded", 2)  # not overwritten by the late attempt


class CountingStore(JobStore):
    renewals = 0

    def renew(self, leases):  # type: ignore[no-untyped-def]
        self.renewals += 1
        return super().renew(leases)


def test_a_stopping_worker_renews_the_leases_of_the_jobs_it_lets_finish_at_its_usual_pace(
        redis_url: str, tmp_path: Path) -> None:
    store = CountingStore(connect(redis_url), lease_seconds=60)
    runtime = RecordingRuntime(2.0)
    worker = Worker(store=store, storage=LocalStorage(tmp_path / "s"), runtime=runtime,
                    config=WorkerConfig(worker_id="w", workdir=tmp_path / "w", heartbeat_seconds=0.5, slots={"cpu": 1}))
    service = build_service(Settings(redis_url=redis_url, storage_url=str(tmp_path / "s")))
    job_id = service.submit(JobSpec(image="x"))[0].id
    worker.start()
    try:
        until(worker.running_count)
        before = store.renewals
        worker.stop(grace=10)  # the job runs 2 s more: about four renewals, 0.5 s apart
    finally:
        worker.stop(grace=0)
    assert service.get(job_id).state is JobState.SUCCEEDED
    assert 1 <= store.renewals - before <= 8, store.renewals - before


def test_idle_since_is_when_the_last_job_ended_however_short_it_was(redis_url: str, tmp_path: Path) -> None:
    settings = Settings(redis_url=redis_url, storage_url=str(tmp_path / "s"))
    service, worker = run_worker(settings, tmp_path, RecordingRuntime(0.05), slots={"cpu": 1}, heartbeat_seconds=1)
    worker.start()
    try:
        until(lambda: service.workers())
        before = service.workers()[0]["idleSince"]
        assert isinstance(before, float)
        job_id = service.submit(JobSpec(image="x"))[0].id
        wait_all(service, [job_id])  # (it ran between two heartbeats)
        ended = service.get(job_id).finished_at
        assert ended is not None
        until(lambda: service.workers()[0]["idleSince"] != before)
        assert service.workers()[0]["idleSince"] >= ended - 0.5
    finally:
        worker.stop(grace=5)


def test_a_result_written_by_an_attempt_the_reaper_ended_meanwhile_gives_way_to_the_record(
        redis_url: str, tmp_path: Path) -> None:
    settings = Settings(redis_url=redis_url, storage_url=str(tmp_path / "s"))
    service, worker = run_worker(settings, tmp_path, RecordingRuntime())
    store = JobStore(connect(redis_url), lease_seconds=60, max_attempts=1, restart_grace_seconds=0)
    job_id = service.submit(JobSpec(image="x"))[0].id
    claim = store.claim("cpu", "gpu-box")
    assert claim is not None
    store.redis.zadd(store.leases_key, {f"{job_id}|1": 0})
    assert store.reap() == {job_id: JobState.ERROR}  # its one attempt lost: ended by the reaper
    storage = LocalStorage(tmp_path / "s")
    late = worker._write_result(claim, Outcome(state=JobState.SUCCEEDED, exit_code=0))  # (the attempt ended well)
    worker._report(claim, late)  # ... and learns its lease is gone
    stored = json.loads(storage.get_bytes(result_key(job_id)))
    assert (stored["state"], service.get(job_id).state) == ("error", JobState.ERROR)  # they agree


def test_the_submit_limit_on_gpus_is_the_most_any_worker_has_configured_or_live(redis_url: str,
                                                                                 tmp_path: Path) -> None:

    def submit(service: Any, gpu: int) -> str:
        return str(service.submit(JobSpec(image="x", parameters={"gpu": gpu}))[0].state.value)

    unset = build_service(Settings(redis_url=redis_url, storage_url=str(tmp_path / "s")))
    assert submit(unset, 64) == "queued"                     # no worker yet, none configured: it waits for one
    unset.store.heartbeat("cpu-only", {"health": "HEALTHY", "slots": "cpu=4"}, ttl=60)
    with pytest.raises(InvalidJob, match=r"more than any worker of this deployment has \(0\)"):
        submit(unset, 1)
    unset.store.heartbeat("big", {"health": "HEALTHY", "slots": "cpu=4,gpu=4"}, ttl=60)
    assert submit(unset, 4) == "queued"
    with pytest.raises(InvalidJob, match=r"\(4\)"):
        submit(unset, 5)
    # configured (as local mode does from its own worker): a live worker with more GPUs raises the limit
    one = build_service(Settings(redis_url=redis_url, storage_url=str(tmp_path / "s"), max_gpus_per_worker=1))
    assert submit(one, 4) == "queued"
    unset.store.redis.delete("{dcc}:worker:big")
    with pytest.raises(InvalidJob, match=r"\(1\)"):
        submit(one, 2)
