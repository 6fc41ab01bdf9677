"""The job model: states, transitions, and what a submission may hold (pure logic)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from dcc.jobs import TERMINAL_STATES, JobSpec, JobState, can_transition


def test_terminal_states_have_no_way_out() -> None:
    for state in TERMINAL_STATES:
        assert state.terminal
        assert not any(can_transition(state, other) for other in JobState)


def test_running_may_end_in_any_terminal_state_or_go_back_to_the_queue() -> None:
    assert can_transition(JobState.RUNNING, JobState.QUEUED)
    assert all(can_transition(JobState.RUNNING, s) for s in TERMINAL_STATES)
    assert not can_transition(JobState.QUEUED, JobState.SUCCEEDED)  # a job must run to succeed


def test_cmd_is_an_alias_of_command_and_gpu_picks_the_queue() -> None:
    spec = JobSpec.model_validate({"image": "busybox", "cmd": ["echo", "hi"], "parameters": {"gpu": 2}})
    assert spec.command == ["echo", "hi"] and spec.queue == "gpu"
    assert JobSpec(image="busybox").queue == "cpu"


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"inputs": [{"name": "../x", "value": ""}]}, "name", "'..'"),
        ({"inputs": [{"name": "/etc/passwd", "value": ""}]}, "name", "relative"),
        ({"inputs": [{"name": "a/./b", "value": ""}]}, "name", "normalized"),
        ({"inputs": [{"name": "a", "value": ""}, {"name": "a", "value": ""}]}, "inputs", "twice"),
        ({"inputs": [{"name": "a", "value": ""}, {"name": "a/b", "value": ""}]}, "inputs", "under input file"),
        ({"inputs": [{"name": "b", "value": "***", "encoding": "base64"}]}, "inputs", "base64"),
        ({"env": {"1BAD": "x"}}, "env", "variable name"),
        ({"env": {"DCC_JOB_ID": "x"}}, "env", "set by dcc"),
        ({"workingDir": "relative"}, "workingDir", "absolute"),
        ({"parameters": {"maxDuration": 0}}, "maxDuration", "greater than 0"),
        ({"id": "../../etc"}, "id", "pattern"),
        ({"imagee": "typo"}, "imagee", "Extra inputs"),
        # names a file system or a terminal cannot take
        ({"inputs": [{"name": "é" * 130, "value": ""}]}, "name", "at most 255 bytes in UTF-8"),
        ({"inputs": [{"name": "/".join(["d" * 99] * 9) + "/x", "value": ""}]}, "name", "at most 900 bytes in UTF-8"),
        ({"inputs": [{"name": "c1\u009b31mRED", "value": ""}]}, "name", "control characters"),
        ({"inputs": [{"name": "rlo\u202etxt.exe", "value": ""}]}, "name", "direction of text"),
        # image references the engine cannot parse
        ({"image": "UPPER/Case:tag"}, "image", "not an image reference"),
        ({"image": "ghcr.io/org/Tool"}, "image", "the name in lower case"),
        ({"image": "a:b:c"}, "image", "not an image reference"),
        ({"image": "python:3.\u00e9"}, "image", "not an image reference"),  # (a tag is ASCII)
        ({"image": "x@sha256:12"}, "image", "not an image reference"),
        ({"image": "a" * 256}, "image", "longer than 255"),
        ({"parameters": {"cpus": float("nan")}}, "cpus", "finite number"),
        # what JSON cannot give back, or a process cannot be started with
        ({"meta": {"e": float("inf")}}, "meta.e", "JSON numbers are finite"),
        ({"meta": [1, {"x": float("nan")}]}, "meta[1].x", "JSON numbers are finite"),
        ({"command": ["sh", "x" * 131_072]}, "command[1]", "at most 131071"),
        ({"env": {"BIG": "x" * 131_068}}, "env 'BIG'", "at most 131071"),
        ({"env": {f"V{i}": "x" * 100_000 for i in range(21)}}, "command and env", "at most 2031616"),
    ],
)
def test_invalid_submissions_name_the_field(body: dict, field: str, words: str) -> None:
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate({"image": "busybox", **body})
    text = str(info.value)
    assert field in text and words in text


def test_an_input_path_may_be_as_long_as_an_output_s_within_parts_of_255_bytes() -> None:
    name = "/".join(["d" * 99] * 8) + "/" + "f" * 99  # 899 bytes: longer than a file name, as outputs may be
    assert JobSpec.model_validate({"image": "x", "inputs": [{"name": name, "value": ""}]}).inputs[0].name == name


def test_image_references_the_engine_takes_are_taken() -> None:
    for image in ("busybox", "dcc-busybox:latest", "localhost:5000/a/b:1.0", "Registry.Example:443/team/x_y__z-w:v",
                  "public.ecr.aws/lambda/python:3.12", "x@sha256:" + "a" * 64, "[::1]:5000/x:t@sha256:" + "0" * 64):
        assert JobSpec(image=image).image == image


def test_whole_numbers_written_as_floats_are_those_numbers_and_nothing_else_is_guessed() -> None:
    spec = JobSpec.model_validate_json('{"image": "x", "parameters": {"maxDuration": 60.0, "memory": 64.0, '
                                       '"gpu": 1.0, "cpus": 2}}')
    p = spec.parameters
    assert (p.maxDuration, p.memory, p.gpu, p.cpus) == (60, 64, 1, 2.0) and type(p.maxDuration) is int
    for bad in ('{"maxDuration": 60.5}', '{"maxDuration": "60"}', '{"gpu": true}', '{"cpus": "2"}'):
        with pytest.raises(ValidationError):
            JobSpec.model_validate_json(f'{{"image": "x", "parameters": {bad}}}')


def test_inline_size_counts_decoded_bytes() -> None:
    spec = JobSpec.model_validate({"image": "x", "inputs": [
        {"name": "a", "value": "aGVsbG8=", "encoding": "base64"}, {"name": "b", "value": "héllo"},
        {"name": "c", "value": "s3://bucket/key", "source": "url"}]})
    assert spec.inline_bytes() == 5 + 6


def test_a_fast_job_that_ended_without_running_still_has_its_outputs_in_the_reply() -> None:
    from dcc.jobs import JobRecord

    spec = JobSpec(image="busybox", fast=True)
    ended = JobRecord(id="f", spec=spec, state=JobState.CANCELLED, queue="cpu", submitted_at=1.0).view()
    assert (ended["stdout"], ended["stderr"], ended["outputFiles"]) == ("", "", {})
    queued = JobRecord(id="f", spec=spec, state=JobState.QUEUED, queue="cpu", submitted_at=1.0).view()
    assert "stdout" not in queued and "outputFiles" not in queued  # (not before it ends)


def test_a_reply_counts_its_body_escaped_twice() -> None:
    from dcc.service import reply_bytes

    # a quote is \" in the JSON and \\\" once that JSON is the reply's body string: four bytes, not one
    assert reply_bytes({"s": '"' * 100}) >= 400 > len('{"s": "' + '"' * 100 + '"}')
