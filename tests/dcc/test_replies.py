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


def test_files_left_out_leave_their_room_to_the_logs() -> None:
    # twenty 10 kB files cannot all stay in a 120 KiB message with a 99 kB log: they go, and the log stays whole
    files = {f"part-{i:02d}.csv": {"encoding": "utf8", "content": "x" * 10_000, "truncated": False}
             for i in range(20)}
    view = job_view(fast=True, stdout="y" * 99_000, stderr="", outputFiles=files)
    shown = fit_job_view(view, 120 * 1024, message_bytes)
    assert message_bytes(shown) <= 120 * 1024
    assert shown["stdout"] == view["stdout"] and all(f.get("omitted") for f in shown["outputFiles"].values())


def test_cutting_a_long_log_measures_it_a_few_times_not_once_a_bisection_step() -> None:
    measured = []

    def counting(value: object) -> int:
        measured.append(value)
        return reply_bytes(value)

    text = "".join(f"line {i}\x01\n" for i in range(200_000))  # ~2.6 MB, ~4 MB in a reply
    shown = fit_job_view(job_view(stdout=text), 1_000_000, counting)
    assert reply_bytes(shown) <= 1_000_000 and text.startswith(shown["stdout"].split("\n[dcc: ")[0])
    assert len(measured) < 15, len(measured)


def test_too_many_output_names_are_listed_in_part_and_counted() -> None:
    names = [f"results/sample-{i:05d}/reads.filtered.bam" for i in range(4000)]  # 172 kB
    shown = fit_job_view(job_view(outputs=names), 120 * 1024, message_bytes)
    assert message_bytes(shown) <= 120 * 1024 and shown["outputs"] == names[:len(shown["outputs"])]
    assert shown["outputsNotListed"] == 4000 - len(shown["outputs"]) and len(shown["outputs"]) > 2500


def test_a_view_whose_meta_is_over_the_budget_comes_as_its_summary() -> None:
    view = job_view(meta={"notes": "n" * 150_000}, command=["sh", "-c", "true"], stdout="out",
                    timings={"submitted": 1.0}, error={"code": "x", "message": "y"})
    shown = fit_job_view(view, 120 * 1024, message_bytes)
    assert shown == {"id": "j1", "state": "succeeded", "exitCode": 0, "timings": {"submitted": 1.0},
                     "error": {"code": "x", "message": "y"}, "partial": True}


def test_a_task_s_logs_list_fewer_output_files_and_say_how_many_they_leave_out() -> None:
    files = [{"url": f"s3://bucket/out/{i:06d}.txt", "path": f"/out/{i:06d}.txt", "size_bytes": "3"}
             for i in range(20_000)]  # ~1.4 MB in a reply
    view = task([{"logs": [], "outputs": files}], [])
    shown = fit_task_view(view, 500_000, reply_bytes)
    assert reply_bytes(shown) <= 500_000
    kept = shown["logs"][0]["outputs"]
    assert kept == files[:len(kept)] and len(kept) > 5000
    assert shown["logs"][0]["system_logs"] == [
        f"[dcc: {20_000 - len(kept)} of the 20000 output file logs are not listed: this reply could not hold them]"]
