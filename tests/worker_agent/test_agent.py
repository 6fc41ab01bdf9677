"""The worker process: health, SIGTERM (finish within the grace period, hand back the rest)."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import docker
import pytest

from dcc.bootstrap import build_service
from dcc.jobs import JobSpec, JobState
from dcc.local_storage import LocalStorage
from dcc.settings import Settings
from dcc.store import JobStore, connect
from worker_agent.agent import Worker, WorkerConfig
from worker_agent.docker_runtime import DockerRuntime

pytestmark = [pytest.mark.redis, pytest.mark.docker]


@pytest.fixture
def settings(redis_url: str, tmp_path: Path, docker_host: str) -> Settings:
    return Settings(redis_url=redis_url, storage_url=str(tmp_path / "storage"), lease_seconds=3.0)


def worker_process(settings: Settings, worker_id: str, work: Path, grace: float) -> subprocess.Popen[bytes]:
    env = {**os.environ, "REDIS_URL": settings.redis_url, "DCC_STORAGE": settings.storage_url,
           "DCC_WORKER_ID": worker_id, "DCC_WORKER_SLOTS": "2", "DCC_WORK_DIR": str(work),
           "DCC_LEASE_SECONDS": str(settings.lease_seconds), "DCC_GRACE_SECONDS": str(grace)}
    return subprocess.Popen([sys.executable, "-m", "worker_agent"], env=env)


def wait_for(predicate, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


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
    worker = Worker(store=store, storage=LocalStorage(Path(settings.storage_url)), runtime=runtime,
                    config=WorkerConfig(worker_id="sick", workdir=tmp_path / "w", heartbeat_seconds=0.2))
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
