"""Views cut to fit a reply (``dcc.replies``): what is cut, how far, and what is said where."""

from __future__ import annotations

import json

import pytest

from dcc.replies import TAIL_MARK, TES_NOTE, fit_job_view, fit_task_view, message_bytes, reply_bytes


def job_view(**fields: object) -> dict:
    return {"id": "j1", "state": "succeeded", "exitCode": 0, "outputs": [], "meta": {}, **fields}


@pytest.mark.parametrize("measure", [reply_bytes, message_bytes])
def test_a_view_that_fits_is_returned_as_it_is(measure) -> None:  # type: ignore[no-untyped-def]
    view = job_view(stdout="x" * 1000, stderr="\x01" * 100)
    assert fit_job_view(view, measure(view), measure) is view


def test_the_largest_log_is_cut_only_as_far_as_needed_and_says_where_to_get_it() -> None:
    stdout = "start\n" + "\x01" * 50_000  # 7 bytes each in a Lambda reply: 350 kB
    view = job_view(stdout=stdout, stderr="a warning\n")
    budget = 100_000
    shown = fit_job_view(view, budget, reply_bytes)
    assert view["stdout"] == stdout  # (the record's own view is left as it was)
    assert reply_bytes(shown) <= budget < reply_bytes(view)
    assert shown["stderr"] == "a warning\n"  # the smaller log is whole: cutting the larger was enough
    kept, note = shown["stdout"].split("\n[dcc: ", 1)
    assert stdout.startswith(kept) and kept.startswith("start\n")
    assert "GET /v1/jobs/j1/stdout" in note
    # as long as it may be: one more character would not fit
    longer = {**shown, "stdout": stdout[:len(kept) + 1] + "\n[dcc: " + note}
    assert reply_bytes(longer) > budget


def test_a_log_that_shows_its_end_keeps_its_end() -> None:
    stderr = TAIL_MARK + "x" * 20_000 + "the error at the end\n"
    shown = fit_job_view(job_view(stderr=stderr), 10_000, message_bytes)
    assert message_bytes(shown) <= 10_000
    assert shown["stderr"].startswith("[dcc: the log's start is cut here") and \
        "GET /v1/jobs/j1/stderr" in shown["stderr"]
    assert shown["stderr"].endswith("x" * 100 + "the error at the end\n")


def test_inline_files_too_large_go_whole_largest_first_and_are_marked() -> None:
    files = {"big.bin": {"encoding": "utf8", "content": "\x00" * 30_000, "truncated": False},
             "mid.txt": {"encoding": "utf8", "content": "m" * 20_000, "truncated": False},
             "small.txt": {"encoding": "utf8", "content": "s" * 100, "truncated": False}}
    view = job_view(fast=True, stdout="out", stderr="", outputFiles=files)
    # big.bin takes 210 kB in a Lambda reply, mid.txt 20 kB: leaving out big.bin is enough
    shown = fit_job_view(view, 50_000, reply_bytes)
    assert reply_bytes(shown) <= 50_000
    assert shown["outputFiles"]["big.bin"] == {"encoding": "utf8", "content": "", "truncated": False,
                                               "omitted": True}
    assert shown["outputFiles"]["mid.txt"] == files["mid.txt"] and shown["stdout"] == "out"
    assert files["big.bin"]["content"] == "\x00" * 30_000  # (not changed in place)
    # tighter still: mid.txt goes too, the small file and the log stay
    tighter = fit_job_view(view, 10_000, reply_bytes)
    assert tighter["outputFiles"]["mid.txt"]["omitted"] and "omitted" not in tighter["outputFiles"]["small.txt"]
    assert tighter["stdout"] == "out"


def test_a_message_is_measured_once_escaped_a_reply_twice() -> None:
    view = job_view(stdout='"' * 60_000)  # 2 bytes each in a message, 4 in a reply
    assert fit_job_view(view, 150_000, message_bytes)["stdout"] == view["stdout"]
    assert fit_job_view(view, 150_000, reply_bytes)["stdout"] != view["stdout"]


def task(logs: list[dict], inputs: list[dict]) -> dict:
    return {"id": "t1", "state": "COMPLETE", "inputs": inputs, "executors": [{"image": "x", "command": ["true"]}],
            "logs": logs, "creation_time": "2026-11-29T00:00:00Z"}


def test_a_task_s_executor_logs_keep_their_ends_and_inputs_too_large_go_whole_and_are_named() -> None:
    executors = [{"exit_code": 0, "stdout": "a" * 1000 + "end of 0\n", "stderr": ""},
                 {"exit_code": 1, "stdout": "", "stderr": "\x02" * 20_000 + "end of 1\n"}]
    inputs = [{"path": "/in/a", "content": "c" * 5_000}, {"path": "/in/empty", "content": ""}]
    view = task([{"logs": executors, "outputs": [], "system_logs": ["ran"]}], inputs)
    shown = fit_task_view(view, 20_000, reply_bytes)
    assert reply_bytes(shown) <= 20_000
    stderr = shown["logs"][0]["logs"][1]["stderr"]
    assert stderr.startswith(TES_NOTE) and stderr.endswith("\x02end of 1\n")
    assert shown["logs"][0]["logs"][0]["stdout"] == executors[0]["stdout"]  # cutting the larger log was enough
    assert shown["inputs"] == inputs and shown["logs"][0]["system_logs"] == ["ran"]
    assert json.dumps(view["logs"][0]["logs"][1]["stderr"]).count("\\u0002") == 20_000  # (not changed in place)
    # tighter than the logs can be cut to: the input's content goes, and the last log says so
    tight = fit_task_view(view, 2_000, reply_bytes)
    assert reply_bytes(tight) <= 2_000
    assert tight["inputs"] == [{"path": "/in/a"}, {"path": "/in/empty", "content": ""}]  # (an empty file stays)
    assert tight["logs"][0]["system_logs"][0] == "ran"
    assert tight["logs"][0]["system_logs"][1].startswith("inputs[0].content (5000 bytes) is left out")
