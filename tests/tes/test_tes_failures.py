"""How a task's attempt ends when something other than its executors fails, end to end: local dcc, real Redis
and Docker. Every TES reply is checked against the spec's schemas (see conftest.py)."""

from __future__ import annotations

import pytest

from tests.tes.conftest import TesServer
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
