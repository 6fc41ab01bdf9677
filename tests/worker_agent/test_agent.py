"""The worker process: health, SIGTERM (finish within the grace period, hand back the rest)."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest
import redis

from dcc.bootstrap import build_service
from dcc.errors import JobSystemError, StoreUnavailable
from dcc.jobs import JobRecord, JobSpec, JobState
from dcc.local_storage import LocalStorage
from dcc.service import JobService, result_key
from dcc.settings import Settings
from dcc.store import JobStore, connect
from dcc.tes_service import TesService
from worker_agent.agent import Worker, WorkerConfig
from worker_agent.docker_runtime import DockerRuntime
from worker_agent.runtime import ContainerJob, ContainerOutcome, ContainerRuntime

pytestmark = [pytest.mark.redis, pytest.mark.docker]


@pytest.fixture
def settings(redis_url: str, tmp_path: Path, docker_host: str) -> Settings:
    return Settings(redis_url=redis_url, storage_url=str(tmp_path / "storage"), lease_seconds=3.0)


def worker_process(settings: Settings, worker_id: str | None, work: Path, grace: float,
                   **popen: object) -> subprocess.Popen[bytes]:
    env = {**os.environ, "REDIS_URL": settings.redis_url, "DCC_STORAGE": settings.storage_url,
           "DCC_WORKER_SLOTS": "2", "DCC_WORK_DIR": str(work),
           "DCC_LEASE_SECONDS": str(settings.lease_seconds), "DCC_GRACE_SECONDS": str(grace)}
    env.pop("DCC_WORKER_ID", None)
    if worker_id is not None:
        env["DCC_WORKER_ID"] = worker_id
    return subprocess.Popen([sys.executable, "-m", "worker_agent"], env=env, **popen)  # type: ignore[call-overload]


def wait_for(predicate, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def in_process(settings: Settings, tmp_path: Path, runtime: ContainerRuntime, worker_id: str, *,
               store: JobStore | None = None, **config: Any) -> Worker:
    """A worker in this process, on the settings' Redis (or ``store``) and storage, working in tmp_path/w."""
    return Worker(store=store or build_service(settings).store, storage=LocalStorage(Path(settings.storage_url)),
                  runtime=runtime, config=WorkerConfig(worker_id=worker_id, workdir=tmp_path / "w", **config))


def until_ended(worker: Worker, service: JobService, job_id: str, *, timeout: float = 40) -> JobRecord:
    """Start the worker, stop it once the job has ended; the job then."""
    worker.start()
    try:
        wait_for(lambda: service.get(job_id).state.terminal, timeout=timeout)
    finally:
        worker.stop(grace=0)
    return service.get(job_id)


def cancelled(settings: Settings, tmp_path: Path, runtime: DockerRuntime, store: JobStore, service: JobService,
              job_id: str, *, ready: Callable[[], bool]) -> tuple[JobRecord, float]:
    """Run a worker that renews its leases only every 20 s (so only the cancel itself can stop the job soon),
    cancel the job once ``ready()`` says so, and stop the worker once the job has ended; the job, and how many
    seconds after the cancel it ended."""
    worker = in_process(settings, tmp_path, runtime, "canceller", store=store, heartbeat_seconds=20)
    worker.start()
    try:
        assert ready()
        asked = time.monotonic()
        service.cancel(job_id)
        wait_for(lambda: service.get(job_id).state.terminal, timeout=30)
        took = time.monotonic() - asked
    finally:
        worker.stop(grace=0)
        runtime.client.close()
    return service.get(job_id), took


def test_sigterm_lets_short_jobs_finish_and_hands_back_long_ones(settings: Settings, tmp_path: Path,
                                                                 test_image: str) -> None:
    service = build_service(settings)
    short, _ = service.submit(JobSpec(image=test_image, command=["sh", "-c", "sleep 1; echo finished"],
                                      appendStdOut=True))
    long, _ = service.submit(JobSpec(image=test_image, command=["sleep", "60"]))
    proc = worker_process(settings, "graceful", tmp_path / "w", grace=3)
    try:
        wait_for(lambda: {service.get(short.id).state, service.get(long.id).state} == {JobState.RUNNING})
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    done = service.get(short.id)
    assert (done.state, done.stdout) == (JobState.SUCCEEDED, "finished\n")
    back = service.get(long.id)
    assert back.state == JobState.QUEUED and back.worker is None
    assert service.store.queue_depths() == {"queues": {"cpu": 1, "gpu": 0}, "running": 0}
    assert service.store.workers() == []  # a clean stop removes the worker's health record


@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
def test_unhealthy_worker_says_why_and_claims_nothing(settings: Settings, tmp_path: Path) -> None:
    store = JobStore(connect(settings.redis_url), lease_seconds=3)
    service = build_service(settings, store=store)
    job, _ = service.submit(JobSpec(image="dcc-busybox:latest", command=["true"]))
    unreachable = docker.DockerClient(base_url="unix:///nonexistent/docker.sock", version="1.41")
    runtime = DockerRuntime(client=unreachable)
    worker = in_process(settings, tmp_path, runtime, "sick", store=store, heartbeat_seconds=0.2)
    worker.start()
    try:
        wait_for(lambda: any(w["id"] == "sick" for w in store.workers()), timeout=10)
        health = next(w for w in store.workers() if w["id"] == "sick")["health"]
        assert health.startswith("UNHEALTHY:docker unreachable")
        time.sleep(1.0)
        assert service.get(job.id).state == JobState.QUEUED
    finally:
        worker.stop(grace=1)
        unreachable.close()
        gc.collect()  # docker-py leaks the failed sockets; let their warnings fall inside this test


class ExitsAsTheGraceEnds(DockerRuntime):
    """A real runtime whose containers exit by themselves just as the worker's grace period runs out:
    each ``run`` returns its (genuine) result only once the worker has asked to kill the job."""

    def __init__(self) -> None:
        super().__init__()
        self.kill_asked = threading.Event()
        self.exited = threading.Event()

    def run(self, job: ContainerJob, *, workdir: Path, **kw: Any) -> ContainerOutcome:
        outcome = super().run(job, workdir=workdir, **kw)
        self.exited.set()
        self.kill_asked.wait(timeout=20)
        return outcome

    def kill(self, job_id: str) -> bool:
        self.kill_asked.set()
        return super().kill(job_id)


def _stop_while_finishing(settings: Settings, tmp_path: Path, submit: Callable[[JobService], str]) -> JobRecord:
    service = build_service(settings)
    job_id = submit(service)
    runtime = ExitsAsTheGraceEnds()
    worker = in_process(settings, tmp_path, runtime, "finishing", tes_locations=settings.tes_locations)
    worker.start()
    try:
        wait_for(runtime.exited.is_set)  # (not only claimed: on a busy machine the grace could end before the start)
    finally:
        worker.stop(grace=0.5)
        runtime.client.close()
    assert runtime.kill_asked.is_set()  # the job was still running when the grace period ended
    return service.get(job_id)


def test_a_job_that_exits_as_the_grace_ends_keeps_its_result(settings: Settings, tmp_path: Path,
                                                             test_image: str) -> None:
    def submit(service: JobService) -> str:
        return service.submit(JobSpec(image=test_image, command=["echo", "done"], appendStdOut=True))[0].id

    job = _stop_while_finishing(settings, tmp_path, submit)
    assert (job.state, job.stdout, job.attempts) == (JobState.SUCCEEDED, "done\n", 1)  # not handed back to rerun


def test_a_task_that_ends_as_the_grace_ends_keeps_its_result_and_outputs(redis_url: str, tmp_path: Path,
                                                                         docker_host: str, test_image: str) -> None:
    out = tmp_path / "tes"
    settings = Settings(redis_url=redis_url, storage_url=str(tmp_path / "storage"), lease_seconds=3.0,
                        tes_locations=(f"file://{out}/",))

    def submit(service: JobService) -> str:
        body = {"executors": [{"image": test_image, "command": ["sh", "-c", "echo hi > /out/x"]}],
                "outputs": [{"path": "/out/x", "url": f"file://{out}/x"}]}
        return TesService(service).create(body)

    job = _stop_while_finishing(settings, tmp_path, submit)
    assert job.state == JobState.SUCCEEDED and job.attempts == 1
    assert (out / "x").read_text() == "hi\n"


class KillAfterExit(DockerRuntime):
    """A real runtime where a kill is asked just after the container exited by itself, before its result
    is made (the window in which a worker's shutdown meets a job's own end)."""

    def _create(self, job: ContainerJob, outputs: Path, hosts: Path | None):  # type: ignore[no-untyped-def]
        container = super()._create(job, outputs, hosts)
        wait = container.wait

        def wait_then_kill(**kwargs):  # type: ignore[no-untyped-def]
            status = wait(**kwargs)
            assert self.kill(job.job_id)  # the container is still known: the kill is sent, and finds it exited
            return status

        container.wait = wait_then_kill
        return container


def test_a_kill_that_finds_the_container_exited_does_not_count(docker_host: str, test_image: str,
                                                               tmp_path: Path) -> None:
    runtime = KillAfterExit()
    try:
        for name, command, killed in (("exits", ["echo", "done"], False), ("killed", ["sleep", "60"], None)):
            job = ContainerJob(job_id=f"kill-{name}-{time.time_ns()}", image=test_image, command=command, env={},
                               working_dir=None, inputs_dir=None, max_duration=60)
            (tmp_path / name).mkdir()
            if killed is None:  # the control: a kill that reaches the running container counts
                threading.Timer(1.0, runtime.kill, args=(job.job_id,)).start()
            outcome = runtime.run(job, workdir=tmp_path / name)
            runtime.cleanup(job.job_id)
            if killed is False:
                assert (outcome.killed, outcome.exit_code) == (False, 0)
                assert (tmp_path / name / "stdout").read_text() == "done\n"
            else:
                assert outcome.killed and outcome.exit_code != 0
    finally:
        runtime.client.close()


class SlowToCreate(DockerRuntime):
    """A real runtime whose container is created only after the worker's first kill found none to stop
    (as when the grace period ends during an image pull)."""

    def __init__(self) -> None:
        super().__init__()
        self.creating = threading.Event()
        self.missed_kill = threading.Event()

    def _create(self, job: ContainerJob, outputs: Path, hosts: Path | None):  # type: ignore[no-untyped-def]
        self.creating.set()
        self.missed_kill.wait(timeout=20)
        return super()._create(job, outputs, hosts)

    def kill(self, job_id: str) -> bool:
        found = super().kill(job_id)
        if not found:
            self.missed_kill.set()
        return found


def test_a_job_without_a_container_when_the_grace_ends_is_still_handed_back(settings: Settings, tmp_path: Path,
                                                                            test_image: str) -> None:
    service = build_service(settings)
    job_id = service.submit(JobSpec(image=test_image, command=["sleep", "60"]))[0].id
    runtime = SlowToCreate()
    worker = in_process(settings, tmp_path, runtime, "slow-create")
    worker.start()
    try:
        assert runtime.creating.wait(timeout=20)
        started = time.monotonic()
        worker.stop(grace=0.5)
        stopped_in = time.monotonic() - started
    finally:
        runtime.client.close()
    assert runtime.missed_kill.is_set()
    job = service.get(job_id)
    assert (job.state, job.attempts) == (JobState.QUEUED, 1)  # handed back, not left running past the stop
    assert stopped_in < 8  # the container was killed once it existed, not waited on until stop gave up


def test_a_cancel_heard_while_the_container_is_made_stops_it_before_it_starts(settings: Settings, tmp_path: Path,
                                                                             test_image: str) -> None:
    service = build_service(settings)
    job_id = service.submit(JobSpec(image=test_image, command=["sh", "-c", "echo ran; sleep 30"]))[0].id
    runtime = SlowToCreate()
    store = JobStore(connect(settings.redis_url), lease_seconds=60)
    job, took = cancelled(settings, tmp_path, runtime, store, service, job_id,
                          ready=lambda: runtime.creating.wait(timeout=20))
    assert runtime.missed_kill.is_set()  # the kill came before the container existed
    assert (job.state, job.exit_code, job.timings()["started"]) == (JobState.CANCELLED, None, None)
    assert took < 8


def test_a_cancel_heard_between_the_claim_and_the_launch_is_kept_for_the_job(settings: Settings, tmp_path: Path,
                                                                            test_image: str) -> None:
    service = build_service(settings)
    job_id = service.submit(JobSpec(image=test_image, command=["sh", "-c", "echo ran"]))[0].id
    runtime = DockerRuntime()
    worker = in_process(settings, tmp_path, runtime, "early")  # (not started: its steps are taken by hand)
    claim = worker.store.claim("cpu", "early")
    assert claim is not None
    service.cancel(job_id)
    worker._cancel(job_id)  # heard before the job is launched (its claim reply was still on its way)
    worker._launch(claim)
    try:
        wait_for(lambda: service.get(job_id).state.terminal, timeout=20)
    finally:
        worker.stop(grace=0)
        runtime.client.close()
    job = service.get(job_id)
    assert (job.state, job.timings()["started"]) == (JobState.CANCELLED, None)


class FailsTwice(DockerRuntime):
    """A real runtime whose first two runs fail as a hiccup of the engine would (a retryable system error)."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 2

    def run(self, job: ContainerJob, *, workdir: Path, **kw: Any) -> ContainerOutcome:
        if self.failures:
            self.failures -= 1
            raise JobSystemError("runtime_failed", "the engine hiccuped", retryable=True)
        return super().run(job, workdir=workdir, **kw)


def test_a_worker_unhealthy_from_system_errors_claims_again_after_a_pause(settings: Settings, tmp_path: Path,
                                                                         test_image: str) -> None:
    service = build_service(settings)
    job_id = service.submit(JobSpec(image=test_image, command=["true"]))[0].id
    runtime = FailsTwice()
    worker = in_process(settings, tmp_path, runtime, "hiccups", heartbeat_seconds=0.2, max_consecutive_system_errors=2,
                        system_error_pause_seconds=2.0)
    seen: set[str] = set()
    worker.start()
    try:
        def done() -> bool:
            seen.add(worker.health)
            return service.get(job_id).state.terminal

        wait_for(done, timeout=30)
    finally:
        worker.stop(grace=1)
        runtime.client.close()
    job = service.get(job_id)
    assert (job.state, job.attempts) == (JobState.SUCCEEDED, 3)
    assert "UNHEALTHY:2 system errors in a row" in seen  # it stopped claiming for a while, then took the job again


def test_a_fast_job_is_retried_once_for_a_system_error(settings: Settings, tmp_path: Path, test_image: str) -> None:
    service = build_service(settings)
    job_id = service.submit(JobSpec(image=test_image, command=["true"], fast=True))[0].id
    runtime = FailsTwice()
    job = until_ended(in_process(settings, tmp_path, runtime, "fast-hiccups"), service, job_id)
    runtime.client.close()
    # (a standard job gets three attempts and succeeds at the third: see above)
    assert (job.state, job.attempts, runtime.failures) == (JobState.ERROR, 2, 0)
    assert job.error is not None and job.error.message == "the engine hiccuped"


class CrawlingStorage(LocalStorage):
    """Local storage whose downloads crawl (a piece every 50 ms for 20 s), telling their progress of each."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.downloading = threading.Event()
        self.stopped = threading.Event()

    def download(self, key: str, path: Path, *, progress: Callable[[int], None] | None = None) -> None:
        self.downloading.set()
        try:
            for piece in range(1, 400):
                time.sleep(0.05)
                if progress is not None:
                    progress(piece)
        except BaseException:
            self.stopped.set()
            raise
        super().download(key, path, progress=progress)


class CountsContainers(DockerRuntime):
    def __init__(self) -> None:
        super().__init__()
        self.created = 0

    def _create(self, job: ContainerJob, outputs: Path, hosts: Path | None):  # type: ignore[no-untyped-def]
        self.created += 1
        return super()._create(job, outputs, hosts)


@pytest.mark.parametrize("how", ["cancel", "stop"])
def test_a_cancel_or_a_stop_ends_an_input_download_and_no_container_starts(settings: Settings, tmp_path: Path,
                                                                           test_image: str, how: str) -> None:
    service = build_service(settings)
    spec = JobSpec.model_validate({"image": test_image, "command": ["cat", "/inputs/a.txt"],
                                   "inputs": [{"name": "a.txt", "value": "hello"}]})
    job_id = service.submit(spec)[0].id
    storage, runtime = CrawlingStorage(Path(settings.storage_url)), CountsContainers()
    worker = Worker(store=service.store, storage=storage, runtime=runtime,
                    config=WorkerConfig(worker_id=f"crawl-{how}", workdir=tmp_path / "w", heartbeat_seconds=0.2))
    worker.start()
    try:
        assert storage.downloading.wait(timeout=20)
        started = time.monotonic()
        if how == "cancel":
            service.cancel(job_id)
            wait_for(lambda: service.get(job_id).state == JobState.CANCELLED, timeout=10)
        else:
            worker.stop(grace=1)  # (handed back when the grace ends)
        assert storage.stopped.is_set()
        ended_in = time.monotonic() - started
    finally:
        worker.stop(grace=0)
        runtime.client.close()
    job = service.get(job_id)
    assert runtime.created == 0  # the job's container was never made
    if how == "stop":  # handed back, without using up an attempt
        assert job.state == JobState.QUEUED
    assert ended_in < 4  # the download stopped at once, not after its 20 s


class Buggy(DockerRuntime):
    def run(self, job: ContainerJob, *, workdir: Path, **kw: Any) -> ContainerOutcome:
        raise ValueError("a bug of the worker's own")


def test_a_failure_nobody_planned_for_ends_the_job_saying_so_at_once(settings: Settings, tmp_path: Path,
                                                                     test_image: str) -> None:
    service = build_service(settings)
    job_id = service.submit(JobSpec(image=test_image, command=["true"]))[0].id
    runtime = Buggy()
    worker = in_process(settings, tmp_path, runtime, "buggy")
    worker.start()
    try:
        wait_for(lambda: service.get(job_id).state.terminal, timeout=10)  # not lost: no lease runs out first
    finally:
        worker.stop(grace=0)
        runtime.client.close()
    job = service.get(job_id)
    assert (job.state, job.attempts) == (JobState.ERROR, 1) and job.error is not None
    assert (job.error.code, job.error.message) == ("runtime_failed", "ValueError: a bug of the worker's own")
    assert worker.health == "HEALTHY"
    assert (tmp_path / "w").stat().st_mode & 0o777 == 0o700  # what jobs leave there is no other user's


def test_a_job_claimed_again_by_its_own_worker_stops_the_earlier_attempt_first(settings: Settings, tmp_path: Path,
                                                                              test_image: str) -> None:
    service = build_service(settings)
    job_id = service.submit(JobSpec(image=test_image, command=["sh", "-c", "sleep 10; echo done"],
                                    appendStdOut=True))[0].id
    runtime = DockerRuntime()
    # renewals 20 s apart: the lease can be taken back and the job claimed again before this worker hears of it
    store = JobStore(connect(settings.redis_url), lease_seconds=60, restart_grace_seconds=0)  # (a fresh Redis)
    worker = in_process(settings, tmp_path, runtime, "cut-off", store=store, heartbeat_seconds=20, slots={"cpu": 2})
    worker.start()
    try:
        wait_for(lambda: service.get(job_id).state == JobState.RUNNING, timeout=20)
        time.sleep(0.5)  # (its container is up)
        store.redis.zadd(store.leases_key, {f"{job_id}|1": 0})  # the lease lapsed (as when cut off from Redis)
        assert store.reap() == {job_id: JobState.QUEUED}
        wait_for(lambda: service.get(job_id).state.terminal, timeout=40)
    finally:
        worker.stop(grace=0)
        runtime.client.close()
    job = service.get(job_id)
    # attempt 1 was killed before attempt 2 started, and its clean-up did not take attempt 2's container
    assert (job.state, job.attempts, job.stdout) == (JobState.SUCCEEDED, 2, "done\n"), job.error


def test_a_worker_without_a_given_id_keeps_one_per_work_dir_and_clears_what_a_killed_run_left(
        settings: Settings, tmp_path: Path, test_image: str, docker_client: docker.DockerClient) -> None:
    service = build_service(settings)
    job_id = service.submit(JobSpec(image=test_image, command=["sh", "-c", "sleep 4; echo ok"],
                                    appendStdOut=True))[0].id
    (tmp_path / "w" / "notes").mkdir(parents=True)  # not a job's folder: left alone
    (tmp_path / "w" / "old-job-1").mkdir()  # a job attempt's folder a dead run left: removed
    first = worker_process(settings, None, tmp_path / "w", grace=1)
    second = None
    try:
        wait_for(lambda: service.get(job_id).state == JobState.RUNNING)
        worker_id = (tmp_path / "w" / "worker-id").read_text().strip()
        assert service.get(job_id).worker == worker_id
        # one worker per work dir: a second one says why it cannot start
        clash = worker_process(settings, None, tmp_path / "w", grace=1, stderr=subprocess.PIPE)
        _, said = clash.communicate(timeout=30)
        assert clash.returncode != 0 and b"is the work dir of another running worker" in said
        first.kill()  # its job's container runs on, with nobody to watch it
        first.wait(10)
        assert docker_client.containers.list(filters={"label": f"dcc.worker={worker_id}"})
        second = worker_process(settings, None, tmp_path / "w", grace=1)
        # the same id again: the dead run's container is removed, and the job runs once more when its lease lapses
        wait_for(lambda: service.store.reap() is not None and service.get(job_id).state.terminal, timeout=60)
        assert (tmp_path / "w" / "worker-id").read_text().strip() == worker_id
        # the finished attempt's folder is cleared by the cleanup thread, after the report: wait for it
        wait_for(lambda: [p.name for p in (tmp_path / "w").iterdir() if p.is_dir()] == ["notes"], timeout=30)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)
    job = service.get(job_id)
    assert (job.state, job.attempts, job.stdout, job.worker) == (JobState.SUCCEEDED, 2, "ok\n", worker_id)
    assert not docker_client.containers.list(all=True, filters={"label": f"dcc.worker={worker_id}"})
    assert [p.name for p in (tmp_path / "w").iterdir() if p.is_dir()] == ["notes"]  # job folders went


def test_a_job_past_the_disk_limit_ends_in_error_saying_so_and_is_not_retried(
        settings: Settings, tmp_path: Path, test_image: str, docker_client: docker.DockerClient) -> None:
    service = build_service(settings)
    job_id = service.submit(JobSpec(image=test_image, command=[
        "sh", "-c", "echo started; head -c 3000000 /dev/urandom > /tmp/scratch; sleep 60"]))[0].id
    runtime = DockerRuntime(client=docker_client, max_disk_bytes=2 << 20, disk_check_seconds=0.2)
    job = until_ended(in_process(settings, tmp_path, runtime, "disk-watch"), service, job_id)
    assert (job.state, job.attempts, job.exit_code) == (JobState.ERROR, 1, 137)
    assert job.error is not None and job.error.code == "disk_limit_exceeded" and "bytes" in job.error.message
    assert job.timings()["runTime"] < 30  # stopped when seen, not after its sleep
    assert service.log(job_id, "stdout").data == b"started\n"
    assert b"DCC_MAX_JOB_DISK_BYTES" in (service.log(job_id, "stderr").data or b"")
    assert service.result(job_id)["error"]["code"] == "disk_limit_exceeded"


def test_a_cancel_published_while_the_cancel_listener_reconnects_is_still_heard(settings: Settings, tmp_path: Path,
                                                                               test_image: str) -> None:
    service = build_service(settings)
    job_id = service.submit(JobSpec(image=test_image, command=["sleep", "60"]))[0].id
    store = JobStore(connect(settings.redis_url), lease_seconds=60)

    def listener_dropped() -> bool:
        wait_for(lambda: service.get(job_id).state == JobState.RUNNING, timeout=20)
        time.sleep(0.5)  # (its container is up)
        store.redis.client_kill_filter(_type="pubsub")  # the listener's connection drops: the cancel comes now
        return True

    job, took = cancelled(settings, tmp_path, DockerRuntime(), store, service, job_id, ready=listener_dropped)
    assert job.state == JobState.CANCELLED and took < 10, took


class HoldsItsResult(DockerRuntime):
    """A real runtime that holds each container's result until ``release`` is set (its worker goes on as if the
    container still ran), keeping what the container printed."""

    def __init__(self) -> None:
        super().__init__()
        self.held = threading.Event()
        self.release = threading.Event()
        self.printed = ""

    def run(self, job: ContainerJob, *, workdir: Path, **kw: Any) -> ContainerOutcome:
        outcome = super().run(job, workdir=workdir, **kw)
        self.printed = outcome.stdout_path.read_text()
        self.held.set()
        assert self.release.wait(timeout=60)
        return outcome


def _release_and_stop(held: HoldsItsResult, workers: list[Worker], runtimes: list[DockerRuntime]) -> None:
    held.release.set()
    for worker in workers:
        worker.stop(grace=0)
    for runtime in runtimes:
        runtime.client.close()


def test_an_attempt_that_lost_its_lease_unknowing_does_not_overwrite_the_files_of_the_one_that_counts(
        settings: Settings, tmp_path: Path, test_image: str) -> None:
    service = build_service(settings)
    job_id = service.submit(JobSpec(image=test_image, command=[
        "sh", "-c", "echo $HOSTNAME; echo $HOSTNAME > $OUTPUTS/who"]))[0].id  # (each container has its own name)
    late_runtime = HoldsItsResult()
    # renewals 20 s apart: this worker does not learn that its lease went (as when it is cut off from Redis)
    store = JobStore(connect(settings.redis_url), lease_seconds=60, restart_grace_seconds=0)
    late = in_process(settings, tmp_path / "a", late_runtime, "cut-off", store=store, heartbeat_seconds=20)
    late.start()
    other_runtime = DockerRuntime()
    other = in_process(settings, tmp_path / "b", other_runtime, "other")
    try:
        assert late_runtime.held.wait(timeout=30)
        store.redis.zadd(store.leases_key, {f"{job_id}|1": 0})  # its lease lapsed; the reaper puts the job back
        assert store.reap() == {job_id: JobState.QUEUED}
        other.start()
        wait_for(lambda: service.get(job_id).state.terminal, timeout=30)
        counted = service.log(job_id, "stdout").data
        late_runtime.release.set()  # the late attempt ends now, and writes what it has
        wait_for(lambda: late.running_count() == 0, timeout=30)
    finally:
        _release_and_stop(late_runtime, [late, other], [late_runtime, other_runtime])
    job = service.get(job_id)
    assert (job.state, job.attempts) == (JobState.SUCCEEDED, 2)
    assert service.log(job_id, "stdout").data == counted != late_runtime.printed.encode()
    assert service.output(job_id, "who").data == counted  # the output of the same attempt as the log
    assert service.result(job_id)["attempts"] == 2


class CutOff(JobStore):
    """A store whose lease renewals fail while ``cut`` is set (its worker cut off from Redis)."""

    cut = False

    def renew(self, leases: Any) -> Any:
        if self.cut:
            raise StoreUnavailable("Redis is out of reach")
        return super().renew(leases)


def _task_held_after_its_executor(settings: Settings, tmp_path: Path, test_image: str,
                                  ) -> tuple[JobService, str, Path, HoldsItsResult, CutOff, Worker]:
    """A TES task whose one executor wrote /out/who (its container's name) on a worker that holds its result."""
    out = Path(settings.tes_locations[0].removeprefix("file://"))
    service = build_service(settings)
    task_id = TesService(service).create({
        "executors": [{"image": test_image, "command": ["sh", "-c", "echo $HOSTNAME; echo $HOSTNAME > /out/who"]}],
        "outputs": [{"path": "/out/who", "url": f"file://{out}/who"}]})
    runtime = HoldsItsResult()
    store = CutOff(connect(settings.redis_url), lease_seconds=settings.lease_seconds, restart_grace_seconds=0)
    worker = in_process(settings, tmp_path / "a", runtime, "cut-off", store=store, heartbeat_seconds=0.2,
                        tes_locations=settings.tes_locations)
    worker.start()
    assert runtime.held.wait(timeout=30)
    return service, task_id, out, runtime, store, worker


def test_a_task_attempt_cut_off_from_redis_uploads_no_output_once_a_retry_has_its_lease(
        redis_url: str, tmp_path: Path, docker_host: str, test_image: str) -> None:
    settings = Settings(redis_url=redis_url, storage_url=str(tmp_path / "storage"), lease_seconds=2.0,
                        tes_locations=(f"file://{tmp_path / 'tes'}/",))
    service, task_id, out, late_runtime, store, late = _task_held_after_its_executor(settings, tmp_path, test_image)
    other_runtime = DockerRuntime()
    other = in_process(settings, tmp_path / "b", other_runtime, "other", tes_locations=settings.tes_locations)
    try:
        store.cut = True  # the late worker can renew nothing from here: it does not learn that its lease goes
        store.redis.zadd(store.leases_key, {f"{task_id}|1": 0})  # its lease lapsed; the reaper puts the task back
        assert store.reap() == {task_id: JobState.QUEUED}
        other.start()
        wait_for(lambda: service.get(task_id).state.terminal, timeout=30)
        counted = (out / "who").read_text()
        time.sleep(1.1)  # (past half a lease since its last renewal, whatever the retry took)
        late_runtime.release.set()  # its executor ends now: it has an output to upload
        time.sleep(1.5)
        assert late.running_count() == 1 and (out / "who").read_text() == counted  # it waits to know
        store.cut = False  # it reaches Redis: its lease is gone, so it uploads nothing and reports nothing
        wait_for(lambda: late.running_count() == 0, timeout=30)
    finally:
        _release_and_stop(late_runtime, [late, other], [late_runtime, other_runtime])
    job = service.get(task_id)
    assert (job.state, job.attempts) == (JobState.SUCCEEDED, 2)
    assert (out / "who").read_text() == counted != late_runtime.printed


def _waiting_to_upload(redis_url: str, tmp_path: Path, test_image: str, *, lease: float,
                       ) -> tuple[JobService, str, Path, HoldsItsResult, CutOff, Worker]:
    """``_task_held_after_its_executor`` on a lease of ``lease`` s, its worker then cut off from Redis for over half
    a lease before its executor ends: its output waits until the lease is known held (checked: none yet)."""
    settings = Settings(redis_url=redis_url, storage_url=str(tmp_path / "storage"), lease_seconds=lease,
                        tes_locations=(f"file://{tmp_path / 'tes'}/",))
    held = _task_held_after_its_executor(settings, tmp_path, test_image)
    _, _, out, runtime, store, worker = held
    try:
        store.cut = True
        time.sleep(lease / 2 + 0.2)
        runtime.release.set()
        time.sleep(1.0)
        assert not (out / "who").exists()  # it waits to know
    except BaseException:
        _release_and_stop(runtime, [worker], [runtime])
        raise
    return held


def test_a_task_attempt_that_could_not_renew_its_lease_for_a_while_uploads_once_it_can(
        redis_url: str, tmp_path: Path, docker_host: str, test_image: str) -> None:
    # past half a lease since the last renewal, within a lease: its lease is still its own
    service, task_id, out, runtime, store, worker = _waiting_to_upload(redis_url, tmp_path, test_image, lease=6.0)
    try:
        store.cut = False
        wait_for(lambda: service.get(task_id).state.terminal, timeout=30)
    finally:
        _release_and_stop(runtime, [worker], [runtime])
    job = service.get(task_id)
    assert (job.state, job.attempts) == (JobState.SUCCEEDED, 1)
    assert (out / "who").read_text() == runtime.printed


class FailsOver(JobStore):
    """A store whose first lease renewal (the cancel listener's, at its start) meets a read-only replica (as
    during a failover)."""

    failures = 1

    def renew(self, leases: Any) -> Any:
        if self.failures:
            self.failures -= 1
            raise redis.ReadOnlyError("You can't write against a read only replica.")
        return super().renew(leases)


def test_an_error_of_redis_s_own_does_not_stop_the_cancel_listener(settings: Settings, tmp_path: Path,
                                                                  test_image: str) -> None:
    service = build_service(settings)
    job_id = service.submit(JobSpec(image=test_image, command=["sleep", "60"]))[0].id
    store = FailsOver(connect(settings.redis_url), lease_seconds=60)

    def listener_failed() -> bool:
        wait_for(lambda: service.get(job_id).state == JobState.RUNNING, timeout=20)
        wait_for(lambda: store.failures == 0, timeout=10)  # (the listener met the error as it started)
        time.sleep(0.5)  # (its container is up)
        return True

    job, took = cancelled(settings, tmp_path, DockerRuntime(), store, service, job_id, ready=listener_failed)
    assert job.state == JobState.CANCELLED and took < 10, took


def test_an_attempt_that_lost_its_lease_unknowing_and_ends_first_leaves_no_result_behind(
        settings: Settings, tmp_path: Path, test_image: str) -> None:
    service = build_service(settings)
    job_id = service.submit(JobSpec(image=test_image, command=["sh", "-c", "echo $HOSTNAME"]))[0].id
    late_runtime, retry_runtime = HoldsItsResult(), HoldsItsResult()
    store = JobStore(connect(settings.redis_url), lease_seconds=60, restart_grace_seconds=0)
    late = in_process(settings, tmp_path / "a", late_runtime, "cut-off", store=store, heartbeat_seconds=20)
    retry = in_process(settings, tmp_path / "b", retry_runtime, "retry", store=store, heartbeat_seconds=20)
    late.start()
    try:
        assert late_runtime.held.wait(timeout=30)
        store.redis.zadd(store.leases_key, {f"{job_id}|1": 0})  # its lease lapsed; the reaper puts the job back
        assert store.reap() == {job_id: JobState.QUEUED}
        retry.start()
        assert retry_runtime.held.wait(timeout=30)  # attempt 2's container has exited; its result is held
        late_runtime.release.set()  # the late attempt ends first, and writes what it has
        wait_for(lambda: late.running_count() == 0, timeout=30)
        # what it wrote is not the job's result: nothing says the job ended while attempt 2 still runs
        assert not service.storage.exists(result_key(job_id))
        assert service.get(job_id).state == JobState.RUNNING
        retry_runtime.release.set()
        wait_for(lambda: service.get(job_id).state.terminal, timeout=30)
    finally:
        for runtime in (late_runtime, retry_runtime):
            runtime.release.set()
        late.stop(grace=0)
        retry.stop(grace=0)
        for runtime in (late_runtime, retry_runtime):
            runtime.client.close()
    assert service.result(job_id)["attempts"] == 2
    assert service.log(job_id, "stdout").data.decode() == retry_runtime.printed


def test_output_names_are_held_to_what_the_storage_s_keys_can_hold(settings: Settings, tmp_path: Path) -> None:
    from dcc.s3_storage import S3Storage

    worker = in_process(settings, tmp_path, DockerRuntime(), "keys")
    job = JobRecord(id="j" * 120, spec=JobSpec(image="x"), state=JobState.RUNNING, queue="cpu", submitted_at=0.0)
    assert worker._max_output_name(job) == 900  # local storage: dcc's own limit
    worker.storage = S3Storage("bucket", prefix="some/long/prefix/of/this/deployment", client=object())
    key_room = 1024 - len("some/long/prefix/of/this/deployment/")
    longest = worker._max_output_name(job)
    # shorter than dcc's own 900, so that the longest key (of any attempt up to 7 digits) still fits
    assert longest < 900 and len(f"jobs/{job.id}/attempt-9999999/outputs/".encode()) + longest <= key_room


def test_a_task_attempt_waiting_to_upload_while_cut_off_is_handed_back_when_its_worker_stops(
        redis_url: str, tmp_path: Path, docker_host: str, test_image: str) -> None:
    service, task_id, out, runtime, store, worker = _waiting_to_upload(redis_url, tmp_path, test_image, lease=2.0)
    try:
        assert worker.running_count() == 1
        started = time.monotonic()
        worker.stop(grace=30)  # with Redis out of reach: the upload gives up at once, not after the grace
        took = time.monotonic() - started
    finally:
        _release_and_stop(runtime, [worker], [runtime])
    assert took < 10, took
    assert not (out / "who").exists()
    job = service.get(task_id)  # not cancelled (nobody asked): handed back, for a worker that can upload
    assert (job.state, job.attempts, job.worker) == (JobState.QUEUED, 1, None)


def test_a_restarted_worker_takes_back_at_once_the_jobs_its_earlier_run_held(settings: Settings, tmp_path: Path,
                                                                            test_image: str) -> None:
    service = build_service(settings)
    cancelled_id = service.submit(JobSpec(image=test_image, command=["true"]))[0].id
    rerun_id = service.submit(JobSpec(image=test_image, command=["echo", "again"], appendStdOut=True))[0].id
    store = JobStore(connect(settings.redis_url), lease_seconds=60, restart_grace_seconds=0)  # (a minute's leases)
    assert {store.claim("cpu", "crashed").job.id for _ in range(2)} == {cancelled_id, rerun_id}  # then it died
    service.cancel(cancelled_id)  # asked while it was down: its worker would have killed it
    assert service.get(cancelled_id).state == JobState.RUNNING
    runtime = DockerRuntime()
    worker = in_process(settings, tmp_path, runtime, "crashed", store=store)  # the same worker, restarted
    started = time.monotonic()
    try:
        worker.start()
        wait_for(lambda: all(service.get(i).state.terminal for i in (cancelled_id, rerun_id)), timeout=30)
    finally:
        worker.stop(grace=0)
        runtime.client.close()
    assert time.monotonic() - started < 30  # (not when the leases lapse, a minute on)
    assert service.get(cancelled_id).state == JobState.CANCELLED
    rerun = service.get(rerun_id)
    assert (rerun.state, rerun.attempts, rerun.stdout) == (JobState.SUCCEEDED, 2, "again\n")
