"""A task's logs as its attempts leave them in Redis: one entry per attempt that ran, each line said once."""

from __future__ import annotations

import time

import pytest

from dcc.jobs import JobError, JobRecord, JobSpec, JobState, Outcome
from dcc.store import JobStore, connect
from dcc.tes import task_view

pytestmark = pytest.mark.redis

ERROR = JobError(code="runtime_failed", message="the engine hiccuped")


@pytest.fixture
def store(redis_url: str) -> JobStore:
    return JobStore(connect(redis_url), lease_seconds=30, max_attempts=3, retention_seconds=3600)


def _task(store: JobStore) -> str:
    record = JobRecord(id="task", spec=JobSpec(image="img"), state=JobState.QUEUED, queue="cpu",
                       submitted_at=time.time(), task={"executors": [{"image": "img", "command": ["true"]}]})
    assert store.create(record, only_if_new=True)
    return record.id


def _failed_attempt(attempt: int) -> dict[str, object]:
    """What the worker reports of an attempt that ends in a retryable system error."""
    return {"attempt": attempt, "logs": [], "outputs": [], "start_time": "2026-11-25T00:00:00.000Z",
            "end_time": "2026-11-25T00:00:01.000Z", "system_logs": [f"{ERROR.code}: {ERROR.message}"]}


def test_a_task_cancelled_while_it_waits_for_its_retry_has_one_log(store: JobStore) -> None:
    task_id = _task(store)
    claim = store.claim("cpu", "w1")
    assert store.finish(claim, Outcome(state=JobState.QUEUED, error=ERROR, task_log=_failed_attempt(1)))
    assert store.cancel(task_id) == JobState.CANCELLED  # queued for its retry: cancelled at once
    view = task_view(store.get(task_id), "FULL")
    assert view["state"] == "CANCELED"
    assert len(view["logs"]) == 1, view["logs"]  # no second attempt ran
    lines = view["logs"][0]["system_logs"]
    assert lines.count("runtime_failed: the engine hiccuped") == 1 and len(lines) == 2  # and why it was requeued


def test_a_retryable_failure_of_a_cancelled_attempt_is_said_once(store: JobStore) -> None:
    task_id = _task(store)
    claim = store.claim("cpu", "w1")
    assert store.cancel(task_id) == JobState.RUNNING  # CANCELING; then the attempt fails in a retryable way
    assert store.finish(claim, Outcome(state=JobState.QUEUED, error=ERROR, task_log=_failed_attempt(1)))
    view = task_view(store.get(task_id), "FULL")
    assert view["state"] == "CANCELED"  # the cancel is not undone by the retry
    assert [log["system_logs"] for log in view["logs"]] == [["runtime_failed: the engine hiccuped"]]


def test_an_attempt_ended_without_its_final_log_still_has_an_end_time(store: JobStore) -> None:
    task_id = _task(store)
    claim = store.claim("cpu", "w1")  # the progress written as its executor started; then its last retry fails
    assert store.write_task_log(claim, {"attempt": 1, "logs": [], "start_time": "2026-11-25T00:00:00.000Z",
                                        "running": 0})
    assert store.finish(claim, Outcome(state=JobState.ERROR, error=ERROR))
    record = store.get(task_id)
    [log] = task_view(record, "FULL")["logs"]
    assert log["start_time"] == "2026-11-25T00:00:00.000Z" and log["end_time"].endswith("Z")
    assert log["system_logs"] == ["runtime_failed: the engine hiccuped"]


def test_failed_outputs_whose_own_lines_hold_the_separator_are_said_once(store: JobStore) -> None:
    task_id = _task(store)
    claim = store.claim("cpu", "w1")
    failures = ["outputs.0 (/o/a; b): cannot upload", "outputs.1 (/o/c): cannot upload"]
    log = {"attempt": 1, "logs": [], "outputs": [], "start_time": "2026-11-25T00:00:00.000Z",
           "end_time": "2026-11-25T00:00:01.000Z", "system_logs": failures}
    assert store.finish(claim, Outcome(state=JobState.ERROR, task_log=log,
                                       error=JobError(code="storage_failed", message="; ".join(failures))))
    [shown] = task_view(store.get(task_id), "FULL")["logs"]
    assert shown["system_logs"] == failures  # the error is these lines joined: not said again
