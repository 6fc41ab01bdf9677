"""How a task's attempt ends when something other than its executors fails, end to end: local dcc, real Redis
and Docker. Every TES reply is checked against the spec's schemas (see conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dcc.settings import Settings
from tests.e2e_support import serve_local
from tests.tes.conftest import SpecChecker, TesServer
from tests.tes.spec_check import PREFIX

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
