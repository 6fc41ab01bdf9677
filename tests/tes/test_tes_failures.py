"""How a task's attempt ends when something other than its executors fails, end to end: local dcc, real Redis
and Docker. Every TES reply is checked against the spec's schemas (see conftest.py)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dcc.bootstrap import build_service
from dcc.local_storage import LocalStorage
from dcc.settings import Settings
from dcc.store import JobStore, connect
from dcc.tes_service import TesService
from tests.e2e_support import serve_local
from tests.tes.conftest import SpecChecker, TesServer
from tests.tes.spec_check import PREFIX
from worker_agent.agent import Worker, WorkerConfig
from worker_agent.docker_runtime import DockerRuntime
from worker_agent.runtime import ContainerJob, ContainerOutcome

pytestmark = [pytest.mark.redis, pytest.mark.docker]


def _expire(tes_server: TesServer, task_id: str) -> dict:
    """The task in FULL view once its Redis record is gone (served from its result.json)."""
    store = tes_server.local.service.store
    store.redis.delete(store.job_key(task_id))
    return tes_server.http.get(f"{PREFIX}/tasks/{task_id}", params={"view": "FULL"}).json()


@pytest.mark.parametrize("case", ["missing input", "refused container"])
def test_an_attempt_that_fails_before_its_executor_runs_has_a_start_and_an_end(tes_server: TesServer,
                                                                              test_image: str, case: str) -> None:
    task: dict = {"executors": [{"image": test_image, "command": ["true"]}]}
    if case == "missing input":
        task["inputs"] = [{"path": "/in/x", "url": f"file://{tes_server.files}/missing.txt"}]
        says = "input_fetch_failed: inputs.0"
    else:
        task["executors"] = [{"image": test_image, "command": ["/no/such/program"]}]
        says = "executor 0: container_refused: "
    task_id = tes_server.http.post(f"{PREFIX}/tasks", json=task).json()["id"]
    done = tes_server.wait(task_id)
    assert done["state"] == "SYSTEM_ERROR"
    assert len(done["logs"]) == 1, done["logs"]  # not retried: no retry can mend it
    log = done["logs"][0]
    assert log["logs"] == [] and "start_time" in log and "end_time" in log, log
    assert log["start_time"] <= log["end_time"]
    assert [line for line in log["system_logs"] if says in line] == log["system_logs"], log["system_logs"]
    assert _expire(tes_server, task_id) == done  # result.json keeps the same log


def test_the_last_attempt_of_a_task_a_system_failure_ended_keeps_its_log(redis_url: str, tmp_path: Path,
                                                                          docker_host: str) -> None:
    settings = Settings(redis_url=redis_url, storage_url=str(tmp_path / "storage"), max_attempts=1)
    with serve_local(tmp_path / "data", settings, workers=1) as (local, http):
        server = TesServer(local=local, http=http, url="", files=(tmp_path / "data" / "tes").resolve(),
                           checker=SpecChecker())
        # no registry answers here: the pull fails on the network, a failure another attempt might mend, but
        # this was the last attempt
        task_id = http.post(f"{PREFIX}/tasks", json={"executors": [{"image": "dcc-no-such-image:404",
                                                                    "command": ["true"]}]}).json()["id"]
        done = server.wait(task_id)
        assert done["state"] == "SYSTEM_ERROR"
        log = done["logs"][-1]
        assert "start_time" in log and "end_time" in log and log["start_time"] <= log["end_time"], log
        assert any("image_" in line for line in log["system_logs"]), log
        assert _expire(server, task_id)["logs"] == done["logs"]  # result.json keeps the log


def test_a_failure_while_the_outputs_upload_keeps_the_attempts_log(redis_url: str, tmp_path: Path, docker_host: str,
                                                                    test_image: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from worker_agent.tes_runner import TaskRunner

    def broken(*_: object) -> None:
        raise OSError("the worker's disk went away")

    monkeypatch.setattr(TaskRunner, "_upload_outputs", broken)
    settings = Settings(redis_url=redis_url, storage_url=str(tmp_path / "storage"), max_attempts=1)
    with serve_local(tmp_path / "data", settings, workers=1) as (local, http):
        server = TesServer(local=local, http=http, url="", files=(tmp_path / "data" / "tes").resolve(),
                           checker=SpecChecker())
        task_id = http.post(f"{PREFIX}/tasks", json={"executors": [{"image": test_image,
                                                                    "command": ["echo", "ran"]}]}).json()["id"]
        done = server.wait(task_id)
        assert done["state"] == "SYSTEM_ERROR"
        log = done["logs"][-1]
        assert [e.get("exit_code") for e in log["logs"]] == [0] and "end_time" in log, log  # what it did is kept
        assert any("the worker's disk went away" in line for line in log["system_logs"]), log
        assert _expire(server, task_id)["logs"] == done["logs"]


@pytest.fixture
def small_outputs(redis_url: str, tmp_path: Path, docker_host: str) -> Iterator[TesServer]:
    """A local dcc whose outputs may hold 100,000 bytes in all."""
    settings = Settings(redis_url=redis_url, storage_url=str(tmp_path / "storage"), max_output_bytes=100_000)
    checker = SpecChecker()
    with serve_local(tmp_path / "data", settings, workers=1, wrap=checker.wrap) as (local, http):
        yield TesServer(local=local, http=http, url="", files=(tmp_path / "data" / "tes").resolve(), checker=checker)
    assert not checker.problems, checker.problems


def test_only_uploaded_files_count_toward_the_output_limit(small_outputs: TesServer, test_image: str) -> None:
    files = small_outputs.files
    task_id = small_outputs.http.post(f"{PREFIX}/tasks", json={
        "volumes": ["/scratch"],
        "outputs": [{"path": "/out/small", "url": f"file://{files}/run1/small"}],
        "executors": [{"image": test_image, "command": ["sh", "-c", "head -c 150000 /dev/zero > /scratch/big; "
                                                                    "head -c 150000 /dev/zero > /out/unnamed-big; "
                                                                    "echo kept > /out/small"]}]}).json()["id"]
    done = small_outputs.wait(task_id)
    assert done["state"] == "COMPLETE", done["logs"]  # scratch files and files no output names are not uploaded
    assert (files / "run1" / "small").read_text() == "kept\n"
    # files uploaded past the limit are left out, named, and fail the task
    task_id = small_outputs.http.post(f"{PREFIX}/tasks", json={
        "outputs": [{"path": "/out", "url": f"file://{files}/run2", "type": "DIRECTORY"}],
        "executors": [{"image": test_image, "command": ["sh", "-c", "head -c 60000 /dev/zero > /out/a; "
                                                                    "head -c 60000 /dev/zero > /out/b"]}]}).json()["id"]
    done = small_outputs.wait(task_id)
    assert done["state"] == "SYSTEM_ERROR"
    assert [o["path"] for o in done["logs"][0]["outputs"]] == ["/out/a"]
    assert sorted(p.name for p in (files / "run2").iterdir()) == ["a"]
    assert any(line.startswith("outputs.0 (/out → ") and "output limit of 100000 bytes" in line
               and line.endswith("left out: /out/b") for line in done["logs"][0]["system_logs"]), done["logs"]


def _tes_on_files(redis_url: str, tmp_path: Path) -> tuple[Path, Settings, TesService]:
    """A TES service whose tasks read and write under tmp_path/files."""
    files = tmp_path / "files"
    files.mkdir()
    settings = Settings(redis_url=redis_url, storage_url=str(tmp_path / "storage"), tes_locations=(f"file://{files}/",))
    return files, settings, TesService(build_service(settings))


def _run_until_ended(worker: Worker, runtime: DockerRuntime, tes: TesService, task_id: str, *,
                     seconds: float) -> dict[str, Any]:
    """Start the worker, and stop it once the task has ended (within ``seconds``); the task in FULL view."""
    worker.start()
    try:
        deadline = time.monotonic() + seconds
        while (task := tes.get(task_id, "FULL"))["state"] not in ("COMPLETE", "CANCELED", "SYSTEM_ERROR"):
            assert time.monotonic() < deadline, task
            time.sleep(0.05)
    finally:
        worker.stop(grace=1)
        runtime.client.close()
    return task


class CancelledAsItExits(DockerRuntime):
    """A real runtime where the task is cancelled just after its container exited by itself: the worker sees the
    cancel (and asks for a kill that finds nothing to stop) before the outputs are uploaded."""

    def __init__(self, cancel: Callable[[str], object]) -> None:
        super().__init__()
        self.cancel = cancel
        self.kill_asked = threading.Event()

    def run(self, job: ContainerJob, *, workdir: Path, **kw: Any) -> ContainerOutcome:
        outcome = super().run(job, workdir=workdir, **kw)
        self.cancel(job.job_id)
        assert self.kill_asked.wait(timeout=20)
        return outcome

    def kill(self, job_id: str) -> bool:
        self.kill_asked.set()
        return super().kill(job_id)


def test_a_cancel_seen_as_the_outputs_are_uploaded_ends_the_task_canceled(redis_url: str, tmp_path: Path,
                                                                         docker_host: str, test_image: str) -> None:
    files, settings, tes = _tes_on_files(redis_url, tmp_path)
    task_id = tes.create({"outputs": [{"path": "/out", "url": f"file://{files}/out", "type": "DIRECTORY"}],
                          "executors": [{"image": test_image, "command": ["sh", "-c", "echo a > /out/a"]}]})
    runtime = CancelledAsItExits(tes.cancel)
    worker = Worker(store=tes.jobs.store, storage=LocalStorage(Path(settings.storage_url)), runtime=runtime,
                    config=WorkerConfig(worker_id="w", workdir=tmp_path / "w", tes_locations=settings.tes_locations))
    task = _run_until_ended(worker, runtime, tes, task_id, seconds=30)
    assert task["state"] == "CANCELED", task["logs"]  # it answered CANCELING: it ends CANCELED
    assert not (files / "out").exists() and task["logs"][0]["outputs"] == []
    assert any(line.startswith("stopped while the outputs were uploaded") for line in task["logs"][0]["system_logs"])


class CancelledWhileMade(DockerRuntime):
    """A real runtime where the task is cancelled while its first container is being made (no kill can find it)."""

    def __init__(self, cancel: Callable[[str], object]) -> None:
        super().__init__()
        self.cancel = cancel
        self.kill_missed = threading.Event()

    def _create(self, job: ContainerJob, outputs: Path, hosts: Path | None):  # type: ignore[no-untyped-def]
        if not self.kill_missed.is_set():
            self.cancel(job.job_id)
            assert self.kill_missed.wait(timeout=20)
        return super()._create(job, outputs, hosts)

    def kill(self, job_id: str) -> bool:
        found = super().kill(job_id)
        if not found:
            self.kill_missed.set()
        return found


def test_a_cancel_heard_while_an_executor_is_made_ends_the_task_canceled_before_it_runs(
        redis_url: str, tmp_path: Path, docker_host: str, test_image: str) -> None:
    files, settings, tes = _tes_on_files(redis_url, tmp_path)
    task_id = tes.create({"outputs": [{"path": "/out/a", "url": f"file://{files}/a", "type": "FILE"}],
                          "executors": [{"image": test_image, "command": ["sh", "-c", "echo a > /out/a"]}]})
    runtime = CancelledWhileMade(tes.cancel)
    # renewals 20 s apart: only the cancel itself can stop the task within the test's bound
    store = JobStore(connect(redis_url), lease_seconds=60)
    worker = Worker(store=store, storage=LocalStorage(Path(settings.storage_url)), runtime=runtime,
                    config=WorkerConfig(worker_id="w", workdir=tmp_path / "w", tes_locations=settings.tes_locations,
                                        heartbeat_seconds=20))
    task = _run_until_ended(worker, runtime, tes, task_id, seconds=10)
    assert task["state"] == "CANCELED", task["logs"]
    assert not (files / "a").exists() and task["logs"][0]["logs"] == []  # the executor never started


@pytest.mark.parametrize(("made", "stdout", "why"), [
    ("mkdir /vol/d", "/vol/d", "it is a folder"),
    ("ln -s /etc /vol/link", "/vol/link/out.txt", "passes through a link"),
])
def test_an_executor_file_that_cannot_be_written_ends_the_task_saying_why(tes_server: TesServer, test_image: str,
                                                                         made: str, stdout: str, why: str) -> None:
    task_id = tes_server.http.post(f"{PREFIX}/tasks", json={
        "volumes": ["/vol"],
        "executors": [{"image": test_image, "command": ["sh", "-c", made]},
                      {"image": test_image, "command": ["echo", "lost"], "stdout": stdout},
                      {"image": test_image, "command": ["true"]}]}).json()["id"]
    done = tes_server.wait(task_id)
    assert done["state"] == "SYSTEM_ERROR", done["logs"]
    log = done["logs"][0]
    assert len(log["logs"]) == 2  # the executors after it did not run
    [line] = [line for line in log["system_logs"] if line.startswith(f"executor 1: its stdout {stdout} cannot be "
                                                                     "written: ")]
    assert why in line


def test_a_task_without_disk_gb_is_held_to_the_worker_s_disk_limit(redis_url: str, tmp_path: Path,
                                                                   docker_host: str, test_image: str) -> None:
    files, settings, tes = _tes_on_files(redis_url, tmp_path)
    task_id = tes.create({"outputs": [{"path": "/out", "url": f"file://{files}/out", "type": "DIRECTORY"}],
                          "executors": [{"image": test_image, "command": [
                              "sh", "-c", "head -c 3000000 /dev/urandom > /out/big; sleep 60"]}]})
    runtime = DockerRuntime()
    worker = Worker(store=tes.jobs.store, storage=LocalStorage(Path(settings.storage_url)), runtime=runtime,
                    config=WorkerConfig(worker_id="w", workdir=tmp_path / "w", tes_locations=settings.tes_locations,
                                        max_job_disk_bytes=2 << 20))
    task = _run_until_ended(worker, runtime, tes, task_id, seconds=40)
    assert task["state"] == "SYSTEM_ERROR", task["logs"]
    assert any("over the worker's limit of 2097152 bytes" in line for line in task["logs"][0]["system_logs"])


def test_a_task_s_inputs_are_held_to_the_worker_s_disk_limit_before_they_are_fetched(
        redis_url: str, tmp_path: Path, docker_host: str, test_image: str) -> None:
    files, settings, tes = _tes_on_files(redis_url, tmp_path)
    (files / "big.bin").write_bytes(os.urandom(3_000_000))
    task_id = tes.create({"inputs": [{"path": "/in/big.bin", "url": f"file://{files}/big.bin"}],
                          "executors": [{"image": test_image, "command": ["echo", "ran"]}]})
    runtime = DockerRuntime()
    worker = Worker(store=tes.jobs.store, storage=LocalStorage(Path(settings.storage_url)), runtime=runtime,
                    config=WorkerConfig(worker_id="w", workdir=tmp_path / "w", tes_locations=settings.tes_locations,
                                        max_job_disk_bytes=2 << 20))
    task = _run_until_ended(worker, runtime, tes, task_id, seconds=30)
    assert task["state"] == "SYSTEM_ERROR" and task["logs"][0]["logs"] == [], task["logs"]  # (nothing ran)
    assert any("3000000 bytes would take the task's files past the worker's limit" in line
               for line in task["logs"][0]["system_logs"]), task["logs"]
