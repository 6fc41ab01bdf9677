"""The ``dcc`` command against a fake API on ``httpx.MockTransport``: a pure client test.

The end-to-end tests drive the same commands against the real server.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import Result
from typer.testing import CliRunner

from dcc.cli import app
from dcc.client import DccClient
from tests.conftest import free_port

API = "http://dcc.test"
STORAGE = "https://storage.test"


def job_view(job_id: str = "job-1", state: str = "queued", **fields: Any) -> dict[str, Any]:
    """A job as the API shows it."""
    view: dict[str, Any] = {
        "id": job_id, "state": state, "queue": "cpu", "image": "img:1", "command": ["true"], "attempts": 0,
        "worker": None, "exitCode": None, "error": None, "outputs": [], "outputsTruncated": False,
        "timings": {"submitted": 1_700_000_000.0, "claimed": None, "started": None, "exited": None,
                    "finished": None, "queueWait": None, "runTime": None},
        "meta": None,
    }
    view.update(fields)
    return view


Reply = dict[str, Any] | Callable[[httpx.Request], httpx.Response]


class FakeApi:
    """Canned replies per (method, path), played in order (the last one repeats); every request kept."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], list[Reply]] = {}
        self.requests: list[httpx.Request] = []

    def on(self, method: str, path: str, *replies: Reply) -> None:
        self.routes[(method, path)] = list(replies)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        replies = self.routes.get((request.method, request.url.path))
        if not replies:
            return httpx.Response(404, json={"error": f"fake: no route {request.method} {request.url.path}"})
        reply = replies.pop(0) if len(replies) > 1 else replies[0]
        return reply(request) if callable(reply) else httpx.Response(**reply)

    def sent(self, method: str, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method and r.url.path == path]


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture(autouse=True)
def _plain_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("DCC_API_URL", raising=False)


def run(api: FakeApi, *args: str) -> Result:
    """``dcc --api API ARGS`` with the client on the fake API (and no pause between long-polls)."""
    def factory(url: str) -> DccClient:
        return DccClient(url, transport=httpx.MockTransport(api), min_poll_interval=0)

    return CliRunner().invoke(app, ["--api", API, *args], obj=factory, catch_exceptions=False)


# ---------------------------------------------------------------------------------------------- submit


def test_submit_sends_the_job_and_prints_only_its_id(api: FakeApi, tmp_path: Path) -> None:
    text = tmp_path / "in.txt"
    text.write_text("héllo\nworld\n", encoding="utf-8")
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"\xff\x00\x80binary")
    api.on("POST", "/v1/jobs", {"status_code": 201, "json": job_view("job-1")})

    res = run(api, "submit", "img:1",
              "--input", f"data/in.txt=@{text}", "--input", f"blob.bin=@{blob}", "--input", "note.txt=just text",
              "--env", "A=1", "--env", "B=x=y", "--max-duration", "30", "--cpus", "1.5", "--memory", "256",
              "--gpu", "1", "--id", "job-1", "--keep", "*.csv", "--keep", "!tmp/**",
              "--", "sh", "-c", "echo hi", "--wait")

    assert res.exit_code == 0, res.output
    assert res.stdout == "job-1\n"
    (request,) = api.sent("POST", "/v1/jobs")
    assert json.loads(request.content) == {
        "image": "img:1",
        "command": ["sh", "-c", "echo hi", "--wait"],  # after --, an option is part of the command
        "env": {"A": "1", "B": "x=y"},
        "inputs": [
            {"name": "data/in.txt", "value": "héllo\nworld\n", "encoding": "utf8", "source": "inline"},
            {"name": "blob.bin", "value": base64.b64encode(b"\xff\x00\x80binary").decode(), "encoding": "base64",
             "source": "inline"},
            {"name": "note.txt", "value": "just text", "encoding": "utf8", "source": "inline"},
        ],
        "parameters": {"maxDuration": 30, "cpus": 1.5, "memory": 256, "gpu": 1},
        "id": "job-1",
        "keepOutputs": ["*.csv", "!tmp/**"],
    }
    assert not api.sent("GET", "/v1/jobs/job-1/wait"), "submit without --wait must not wait"


def test_submit_without_command_leaves_the_image_default(api: FakeApi) -> None:
    api.on("POST", "/v1/jobs", {"status_code": 201, "json": job_view("abc")})

    res = run(api, "submit", "img:1")

    assert res.exit_code == 0, res.output
    assert json.loads(api.sent("POST", "/v1/jobs")[0].content) == {"image": "img:1"}


@pytest.mark.parametrize("make", ["symlink", "directory", "missing"])
def test_submit_refuses_an_input_that_is_not_a_regular_file(api: FakeApi, tmp_path: Path, make: str) -> None:
    target = tmp_path / "real.txt"
    target.write_text("secret")
    path = tmp_path / "in"
    if make == "symlink":
        path.symlink_to(target)
    elif make == "directory":
        path.mkdir()

    res = run(api, "submit", "img:1", "--input", f"x=@{path}")

    assert res.exit_code == 2
    expected = {"symlink": "is a symlink", "directory": "is not a regular file", "missing": "does not exist"}[make]
    assert expected in res.stderr
    assert res.stderr.startswith("error:") and res.stderr.count("\n") == 1
    assert api.requests == [], "nothing may be sent when an input is refused"


@pytest.mark.parametrize("spec", ["no-equals-sign", "../up=text", "/abs=text", "a//b=text"])
def test_submit_refuses_a_bad_input_name(api: FakeApi, spec: str) -> None:
    res = run(api, "submit", "img:1", "--input", spec)

    assert res.exit_code == 2
    assert "--input" in res.stderr
    assert api.requests == []


@pytest.mark.parametrize(("state", "exit_code", "expected"), [
    ("succeeded", 0, 0),
    ("failed", 3, 3),
    ("failed", 137, 137),
    ("failed", None, 1),
    ("timed_out", None, 124),
    ("cancelled", None, 143),
    ("error", None, 125),
])
def test_submit_wait_exits_with_the_jobs_exit_code(api: FakeApi, state: str, exit_code: int | None,
                                                  expected: int) -> None:
    error = {"code": "image_not_found", "message": "no such image"} if state == "error" else None
    api.on("POST", "/v1/jobs", {"status_code": 201, "json": job_view()})
    api.on("GET", "/v1/jobs/job-1", {"status_code": 200, "json": job_view()})
    api.on("GET", "/v1/jobs/job-1/wait",
           {"status_code": 200, "json": job_view(state="running", worker="w1", attempts=1)},
           {"status_code": 200, "json": job_view(state=state, worker="w1", attempts=1, exitCode=exit_code,
                                                 error=error)})

    res = run(api, "submit", "--wait", "img:1")

    assert res.exit_code == expected, res.output
    assert res.stdout == "job-1\n"
    assert "running on w1 (attempt 1)" in res.stderr
    assert f"job job-1 {state}" in res.stderr
    if error:
        assert "image_not_found: no such image" in res.stderr
    assert len(api.sent("GET", "/v1/jobs/job-1/wait")) == 2


def test_submit_stdout_prints_the_jobs_output_alone_and_its_id_on_stderr(api: FakeApi) -> None:
    api.on("POST", "/v1/jobs", {"status_code": 201, "json": job_view()})
    api.on("GET", "/v1/jobs/job-1", {"status_code": 200, "json": job_view(state="failed", exitCode=4)})
    api.on("GET", "/v1/jobs/job-1/stdout", {"status_code": 200, "content": b"out line\n"})

    res = run(api, "submit", "--stdout", "img:1", "--", "false")

    assert res.exit_code == 4
    assert res.stdout == "out line\n" and res.stderr.startswith("job-1\n")  # (| sha256sum reads the job's bytes)


def test_wait_follows_the_long_poll_until_the_end(api: FakeApi) -> None:
    api.on("GET", "/v1/jobs/job-1", {"status_code": 200, "json": job_view()})
    api.on("GET", "/v1/jobs/job-1/wait",
           {"status_code": 200, "json": job_view()},  # a long-poll that timed out: no new line
           {"status_code": 200, "json": job_view(state="running", worker="w1", attempts=1)},
           {"status_code": 200, "json": job_view(state="succeeded", worker="w1", attempts=1, exitCode=0)})

    res = run(api, "wait", "job-1")

    assert res.exit_code == 0, res.output
    lines = res.stderr.splitlines()
    assert [line.split(" ", 3)[3].split(" ")[0] for line in lines] == ["queued", "running", "succeeded"]
    timeouts = [float(r.url.params["timeout"]) for r in api.sent("GET", "/v1/jobs/job-1/wait")]
    assert len(timeouts) == 3 and all(0 < t <= 25 for t in timeouts)


# ---------------------------------------------------------------------------------------------- outputs


def test_outputs_downloads_every_file_keeping_subfolders_and_following_redirects(api: FakeApi,
                                                                                 tmp_path: Path) -> None:
    api.on("GET", "/v1/jobs/job-1", {"status_code": 200, "json": job_view(
        state="succeeded", exitCode=0, outputs=["a.txt", "sub/deep/b.bin", "with space.txt"])})
    api.on("GET", "/v1/jobs/job-1/outputs/a.txt", {"status_code": 200, "content": b"A"})
    api.on("GET", "/v1/jobs/job-1/outputs/sub/deep/b.bin",
           {"status_code": 302, "headers": {"Location": f"{STORAGE}/bucket/b.bin?sig=1"}})
    api.on("GET", "/bucket/b.bin", {"status_code": 200, "content": b"\x00\x01" * 50_000})
    api.on("GET", "/v1/jobs/job-1/outputs/with space.txt", {"status_code": 200, "content": b"S"})
    dest = tmp_path / "out"

    res = run(api, "outputs", "job-1", "--to", str(dest))

    assert res.exit_code == 0, res.output
    assert (dest / "a.txt").read_bytes() == b"A"
    assert (dest / "sub" / "deep" / "b.bin").read_bytes() == b"\x00\x01" * 50_000
    assert (dest / "with space.txt").read_bytes() == b"S"
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == [
        "a.txt", "sub/deep/b.bin", "with space.txt"]  # no partial files left behind
    assert api.sent("GET", "/bucket/b.bin")[0].url.host == "storage.test"
    assert res.stdout.splitlines() == [str(dest.resolve() / p) for p in ["a.txt", "sub/deep/b.bin",
                                                                         "with space.txt"]]


def test_outputs_with_names_at_the_limit_download_and_one_failure_stops_no_other(api: FakeApi,
                                                                              tmp_path: Path) -> None:
    longest = "0" * 255  # a file name's limit: no room for a temporary name built on it
    api.on("GET", "/v1/jobs/job-1", {"status_code": 200, "json": job_view(
        state="succeeded", exitCode=0, outputs=[longest, "lost.txt", "z.txt"])})
    api.on("GET", f"/v1/jobs/job-1/outputs/{longest}", {"status_code": 200, "content": b"0"})
    api.on("GET", "/v1/jobs/job-1/outputs/lost.txt", {"status_code": 503, "json": {"error": "storage is away"}})
    api.on("GET", "/v1/jobs/job-1/outputs/z.txt", {"status_code": 200, "content": b"z"})
    dest = tmp_path / "out"

    res = run(api, "outputs", "job-1", "--to", str(dest))

    assert (dest / longest).read_bytes() == b"0" and (dest / "z.txt").read_bytes() == b"z"
    assert res.exit_code == 1 and "lost.txt" in res.stderr and "storage is away" in res.stderr
    assert "1 file(s) could not be downloaded" in res.stderr and "2 file(s), 2 bytes" in res.stderr
    assert sorted(p.name for p in dest.iterdir()) == [longest, "z.txt"]  # no partial file left


@pytest.mark.parametrize("evil", ["../x", "/tmp/x", "a/../../x", "sub/../../x", "", "a\\..\\x", 7])
def test_outputs_refuses_paths_outside_the_folder(api: FakeApi, tmp_path: Path, evil: Any) -> None:
    api.on("GET", "/v1/jobs/job-1", {"status_code": 200, "json": job_view(
        state="succeeded", exitCode=0, outputs=["fine.txt", evil])})
    api.on("GET", "/v1/jobs/job-1/outputs/fine.txt", {"status_code": 200, "content": b"ok"})
    dest = tmp_path / "out"

    res = run(api, "outputs", "job-1", "--to", str(dest))

    assert res.exit_code == 1
    assert "refusing output path" in res.stderr and repr(evil) in res.stderr
    assert not (tmp_path / "x").exists()
    assert not (dest / "fine.txt").exists(), "every path is checked before any file is written"
    assert not [r for r in api.requests if "/outputs/" in r.url.path]


@pytest.mark.parametrize("clash", ["file-where-a-folder-goes", "folder-where-a-file-goes"])
def test_outputs_refuses_a_clash_with_what_is_there_before_writing_anything(api: FakeApi, tmp_path: Path,
                                                                           clash: str) -> None:
    long_name = "deep/" + "/".join(["n" * 60] * 5)  # over 255 characters: outputs may have longer paths
    api.on("GET", "/v1/jobs/job-1", {"status_code": 200, "json": job_view(
        state="succeeded", exitCode=0, outputs=["a.txt", long_name, "sub/deep/x.txt"])})
    for name in ("a.txt", long_name, "sub/deep/x.txt"):
        api.on("GET", f"/v1/jobs/job-1/outputs/{name}", {"status_code": 200, "content": b"ok"})
    dest = tmp_path / "out"
    dest.mkdir()
    if clash == "file-where-a-folder-goes":
        (dest / "sub").write_text("a file")
    else:
        (dest / "sub" / "deep" / "x.txt").mkdir(parents=True)

    res = run(api, "outputs", "job-1", "--to", str(dest))

    assert res.exit_code == 1 and "cannot write" in res.stderr
    assert not (dest / "a.txt").exists() and not [r for r in api.requests if "/outputs/" in r.url.path]
    (dest / "sub").unlink() if (dest / "sub").is_file() else (dest / "sub" / "deep" / "x.txt").rmdir()
    assert run(api, "outputs", "job-1", "--to", str(dest)).exit_code == 0
    assert (dest / long_name).read_bytes() == b"ok"


def test_outputs_refuses_a_path_through_a_symlink_leading_out(api: FakeApi, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "link").symlink_to(outside)
    api.on("GET", "/v1/jobs/job-1", {"status_code": 200, "json": job_view(
        state="succeeded", exitCode=0, outputs=["link/x"])})
    api.on("GET", "/v1/jobs/job-1/outputs/link/x", {"status_code": 200, "content": b"pwned"})

    res = run(api, "outputs", "job-1", "--to", str(dest))

    assert res.exit_code == 1
    assert "outside" in res.stderr
    assert list(outside.iterdir()) == []


def test_outputs_without_to_lists_the_paths(api: FakeApi) -> None:
    api.on("GET", "/v1/jobs/job-1", {"status_code": 200, "json": job_view(
        state="succeeded", exitCode=0, outputs=["a.txt", "sub/b.txt"], outputsTruncated=True)})

    res = run(api, "outputs", "job-1")

    assert res.exit_code == 0
    assert res.stdout == "a.txt\nsub/b.txt\n"
    assert "left out or cut short" in res.stderr


def test_outputs_of_a_job_that_has_not_ended_says_so(api: FakeApi) -> None:
    api.on("GET", "/v1/jobs/job-1", {"status_code": 200, "json": job_view(state="running")})

    res = run(api, "outputs", "job-1")

    assert res.exit_code == 1 and res.stdout == ""
    assert "job job-1 is running; its outputs are stored when it ends" in res.stderr


# ---------------------------------------------------------------------------------------------- errors


def test_api_error_shows_the_servers_message_in_one_line(api: FakeApi) -> None:
    api.on("GET", "/v1/jobs/nope", {"status_code": 404, "json": {"error": "job 'nope' not found"}})

    res = run(api, "status", "nope")

    assert res.exit_code == 1
    assert res.stderr == "error: job 'nope' not found (HTTP 404)\n"
    assert res.stdout == ""


def test_logs_of_a_running_job_reports_the_409(api: FakeApi) -> None:
    api.on("GET", "/v1/jobs/job-1/stderr", {"status_code": 409, "json": {
        "error": "job job-1 is running; its stderr is stored when it ends"}})

    res = run(api, "logs", "job-1", "--stderr")

    assert res.exit_code == 1
    assert "its stderr is stored when it ends (HTTP 409)" in res.stderr


def test_validation_error_from_submit_is_shown(api: FakeApi) -> None:
    api.on("POST", "/v1/jobs", {"status_code": 400, "json": {"error": "env: 'A-B' is not a valid variable name",
                                                            "details": []}})

    res = run(api, "submit", "img:1", "--env", "A-B=1")

    assert res.exit_code == 1
    assert "env: 'A-B' is not a valid variable name" in res.stderr
    assert res.stdout == ""


def test_unreachable_api_names_the_url_without_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("DCC_API_URL", url)

    res = CliRunner().invoke(app, ["status", "job-1"], catch_exceptions=False)

    assert res.exit_code == 1
    assert res.stderr.startswith(f"error: the dcc API is unreachable at {url}")
    assert "Traceback" not in res.output
    monkeypatch.setenv("DCC_API_URL", url.replace("http://", "http://user:s3cret@"))
    res = CliRunner().invoke(app, ["status", "job-1"], catch_exceptions=False)
    assert res.exit_code == 1 and "s3cret" not in res.output and "unreachable at http://127.0.0.1:" in res.stderr


@pytest.mark.parametrize("args", [["wait", "job-1"], ["submit", "--wait", "img:1"], ["submit", "img:1"]])
def test_a_command_that_mirrors_a_job_exits_125_when_dcc_cannot_be_asked(monkeypatch: pytest.MonkeyPatch,
                                                                        args: list[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("DCC_API_URL", url)

    res = CliRunner().invoke(app, args, catch_exceptions=False)

    # (a job's own exit 1 stays distinct; a plain submit reports as every other command does)
    assert res.exit_code == (125 if "wait" in args[0] + " ".join(args) else 1), res.output
    assert res.stderr.startswith(f"error: the dcc API is unreachable at {url}")


def _refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def test_wait_keeps_following_the_job_through_an_api_restart(api: FakeApi) -> None:
    api.on("GET", "/v1/jobs/job-1", {"status_code": 200, "json": job_view(state="running", attempts=1)})
    api.on("GET", "/v1/jobs/job-1/wait",
           {"status_code": 502, "json": {"message": "Internal server error"}},
           _refused,  # (the server is starting again)
           {"status_code": 200, "json": job_view(state="failed", attempts=2, exitCode=3)})

    res = run(api, "wait", "job-1")

    assert res.exit_code == 3, res.output  # the job's own, not dcc's
    assert res.stderr.count("trying again for up to 120 s") == 1 and "HTTP 502" in res.stderr
    assert len(api.sent("GET", "/v1/jobs/job-1/wait")) == 3


def test_a_websocket_that_drops_as_the_api_restarts_is_followed_by_long_polls_through_the_outage(
        api: FakeApi) -> None:
    running = job_view(state="running", worker="w1", attempts=1)
    api.on("GET", "/v1/jobs/job-1", _refused, {"status_code": 200, "json": running})  # (still restarting, then up)
    api.on("GET", "/v1/jobs/job-1/wait", {"status_code": 200, "json": job_view(state="succeeded", attempts=1,
                                                                                exitCode=0)})
    client = DccClient(API, transport=httpx.MockTransport(api), min_poll_interval=0)
    client.transport = None  # (as a client without an injected transport: it watches over the websocket first)

    def dropped(job_id: str, on_change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        on_change(running)
        raise ConnectionResetError("the API went away")  # (as websockets raises it, an OSError)

    client._watch_websocket = dropped  # type: ignore[method-assign]
    states: list[str] = []
    outages: list[str] = []
    done = client.wait_until_done("job-1", on_change=lambda view: states.append(view["state"]),
                                  on_outage=outages.append)
    assert done["state"] == "succeeded" and states == ["running", "succeeded"]  # (running not said twice)
    assert len(outages) == 1 and "unreachable" in outages[0]


def test_wait_gives_up_on_an_api_gone_longer_than_its_patience(api: FakeApi) -> None:
    api.on("GET", "/v1/jobs/job-1", {"status_code": 200, "json": job_view(state="running", attempts=1)})
    api.on("GET", "/v1/jobs/job-1/wait", _refused)

    def factory(url: str) -> DccClient:
        return DccClient(url, transport=httpx.MockTransport(api), min_poll_interval=0, patience=2)

    started = time.monotonic()
    res = CliRunner().invoke(app, ["--api", API, "wait", "job-1"], obj=factory, catch_exceptions=False)

    assert res.exit_code == 125 and "unreachable" in res.stderr, res.output
    assert time.monotonic() - started < 10


def test_wait_on_an_unknown_job_exits_125(api: FakeApi) -> None:
    api.on("GET", "/v1/jobs/nope", {"status_code": 404, "json": {"error": "job nope not found"}})
    api.on("GET", "/v1/jobs/nope/wait", {"status_code": 404, "json": {"error": "job nope not found"}})

    res = run(api, "wait", "nope")

    assert res.exit_code == 125 and "not found" in res.stderr, res.output


@pytest.mark.parametrize(("reply", "message"), [
    ({"status_code": 503, "json": {"error": "the job store (Redis) is unavailable; try again shortly"}},
     "error: the job store (Redis) is unavailable; try again shortly (HTTP 503)"),
    ({"status_code": 504, "json": {"message": "Endpoint request timed out"}},  # API Gateway's own errors
     "error: Endpoint request timed out (HTTP 504)"),
    ({"status_code": 502, "content": b"<html>\n<body>Bad   Gateway</body>\n</html>"},
     "error: <html> <body>Bad Gateway</body> </html> (HTTP 502)"),
])
def test_error_bodies_become_one_line(api: FakeApi, reply: dict[str, Any], message: str) -> None:
    api.on("GET", "/v1/queues", reply)

    res = run(api, "queues")

    assert res.exit_code == 1
    assert res.stderr == message + "\n"


@pytest.mark.parametrize("url", ["localhost:8000", "ftp://dcc.test", "http://[::1", "http://dcc.test:8000?x=1",
                                 "http://dcc.test/#top"])
def test_a_bad_api_url_is_refused(url: str) -> None:
    res = CliRunner().invoke(app, ["--api", url, "queues"], catch_exceptions=False)

    assert res.exit_code == 1
    assert res.stderr.startswith(f"error: {url!r} is not")


def test_a_bad_job_id_never_reaches_a_url(api: FakeApi) -> None:
    res = run(api, "status", "../workers")

    assert res.exit_code == 1
    assert "is not a job id" in res.stderr
    assert api.requests == []


# ---------------------------------------------------------------------------------------------- other commands


def test_status_json_prints_the_view(api: FakeApi) -> None:
    view = job_view(state="failed", exitCode=2, meta={"k": "v"})
    api.on("GET", "/v1/jobs/job-1", {"status_code": 200, "json": view})

    as_json = run(api, "status", "job-1", "--json")
    table = run(api, "status", "job-1")

    assert json.loads(as_json.stdout) == view
    assert table.exit_code == 0
    rows = [line.split() for line in table.stdout.splitlines()]
    assert ["state", "failed"] in rows and ["exit", "code", "2"] in rows


def test_status_of_a_running_job_shows_its_time_so_far(api: FakeApi) -> None:
    claimed = time.time() - 90
    api.on("GET", "/v1/jobs/job-1", {"status_code": 200, "json": job_view(
        state="running", timings={"submitted": claimed - 5, "claimed": claimed, "started": None, "exited": None,
                                  "finished": None, "queueWait": 5.0, "runTime": None})})

    rows = {line.split()[0]: line for line in run(api, "status", "job-1").stdout.splitlines()}

    assert rows["run"].split()[2:] in (["90", "s", "so", "far", "(since", "claimed)"],
                                       ["91", "s", "so", "far", "(since", "claimed)"])


def test_list_all_follows_the_cursors(api: FakeApi) -> None:
    api.on("GET", "/v1/jobs",
           {"status_code": 200, "json": {"jobs": [job_view("j1"), job_view("j2")], "cursor": "c1"}},
           {"status_code": 200, "json": {"jobs": [job_view("j3", state="running")], "cursor": None}})

    res = run(api, "list", "--all", "--limit", "2", "--state", "queued", "--json")

    assert res.exit_code == 0, res.output
    assert [j["id"] for j in json.loads(res.stdout)] == ["j1", "j2", "j3"]
    params = [dict(r.url.params) for r in api.sent("GET", "/v1/jobs")]
    assert params == [{"state": "queued", "limit": "2"}, {"state": "queued", "limit": "2", "cursor": "c1"}]


def test_list_one_page_says_there_is_more(api: FakeApi) -> None:
    api.on("GET", "/v1/jobs", {"status_code": 200, "json": {"jobs": [job_view("j1")], "cursor": "c1"}})

    res = run(api, "list", "--limit", "1")

    assert res.exit_code == 0
    assert "j1" in res.stdout
    assert "--all" in res.stderr
    assert len(api.requests) == 1


def test_cancel_queues_and_workers(api: FakeApi) -> None:
    api.on("POST", "/v1/jobs/job-1/cancel", {"status_code": 200, "json": job_view(
        state="running", worker="w1", cancelRequested=True)})
    api.on("GET", "/v1/queues", {"status_code": 200, "json": {
        "queues": {"cpu": 5, "gpu": 0}, "running": 2, "runningByQueue": {"cpu": 2, "gpu": 0}}})
    a10g = [{"index": str(i), "uuid": f"GPU-{i}", "name": "A10G", "memoryMiB": 23028} for i in range(2)]
    api.on("GET", "/v1/workers", {"status_code": 200, "json": {"workers": [{
        "id": "w1", "health": "HEALTHY", "slots": {"cpu": 4, "gpu": 2}, "running": ["j1", "j2"], "gpus": ["0", "1"],
        "gpusHeld": [{"gpu": "1", "job": "j2"}], "gpuInfo": a10g, "idleSince": None, "draining": True,
        "seen": time.time() - 3}]}})

    cancelled = run(api, "cancel", "job-1")
    depths = run(api, "queues")
    fleet = run(api, "workers")

    assert cancelled.stdout == "job job-1 is running; its worker was asked to stop it\n"
    assert [line.split() for line in depths.stdout.splitlines()] == [
        ["QUEUE", "WAITING", "RUNNING"], ["cpu", "5", "2"], ["gpu", "0", "0"]]
    assert [line.split() for line in fleet.stdout.splitlines()] == [
        ["ID", "HEALTH", "SLOTS", "RUNNING", "GPUS", "GPUSHELD", "GPUINFO", "IDLESINCE", "DRAINING", "SEEN"],
        ["w1", "HEALTHY", "cpu=4,gpu=2", "j1,j2", "0,1", "1:j2", "0", "A10G,1", "A10G", "yes", "3", "s", "ago"]]


def test_workers_from_an_api_that_sent_the_heartbeat_s_strings_are_shown_as_they_are(api: FakeApi) -> None:
    api.on("GET", "/v1/workers", {"status_code": 200, "json": {"workers": [
        {"id": "w1", "slots": "cpu=4", "running": "j1,j2", "draining": "", "seen": str(time.time() - 3)}]}})

    res = run(api, "workers")

    assert res.stdout.splitlines()[1].split() == ["w1", "cpu=4", "j1,j2", "3", "s", "ago"]


def test_result_prints_the_json(api: FakeApi) -> None:
    doc = {**job_view(state="succeeded", exitCode=0), "job": {"image": "img:1"}}
    api.on("GET", "/v1/jobs/job-1/result", {"status_code": 200, "json": doc})

    res = run(api, "result", "job-1")

    assert json.loads(res.stdout) == doc


def test_local_calls_serve_with_its_options(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import dcc.local

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(dcc.local, "serve", lambda **kw: calls.append(kw))
    monkeypatch.setenv("HOME", str(tmp_path))

    CliRunner().invoke(app, ["local"], catch_exceptions=False)
    CliRunner().invoke(app, ["local", "--port", "9001", "--data-dir", str(tmp_path / "d"), "--workers", "3",
                             "--host", "0.0.0.0"], catch_exceptions=False)

    assert calls == [
        {"port": 8000, "data_dir": Path(os.path.expanduser("~/.dcc")), "workers": None, "host": "127.0.0.1"},
        {"port": 9001, "data_dir": tmp_path / "d", "workers": 3, "host": "0.0.0.0"},
    ]
    assert calls[0]["data_dir"] == tmp_path / ".dcc"


def test_worker_runs_the_worker_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    import worker_agent.__main__

    ran: list[bool] = []
    monkeypatch.setattr(worker_agent.__main__, "main", lambda: ran.append(True))

    res = CliRunner().invoke(app, ["worker"], catch_exceptions=False)

    assert res.exit_code == 0
    assert ran == [True]


def test_requests_to_an_iam_api_are_signed(monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx as _httpx

    from dcc.client import DccClient

    for k, v in {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret",
                 "AWS_DEFAULT_REGION": "eu-west-1", "DCC_API_KEY": "key-123"}.items():
        monkeypatch.setenv(k, v)
    seen: list[_httpx.Request] = []

    def handler(request: _httpx.Request) -> _httpx.Response:
        seen.append(request)
        return _httpx.Response(200, json={"workers": []})

    api = DccClient("https://abc123.execute-api.eu-west-2.amazonaws.com/prod", transport=_httpx.MockTransport(handler))
    api.workers()
    auth = seen[0].headers["authorization"]
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/") and "/eu-west-2/execute-api/" in auth
    assert seen[0].headers["x-api-key"] == "key-123" and "x-amz-date" in seen[0].headers
    local = DccClient("http://127.0.0.1:8000", transport=_httpx.MockTransport(handler))
    local.workers()
    assert "authorization" not in seen[1].headers


def test_a_redirect_to_storage_carries_none_of_the_api_s_credentials(monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path: Path) -> None:
    from dcc.client import DccClient

    for k, v in {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_SESSION_TOKEN": "tok",
                 "AWS_DEFAULT_REGION": "eu-west-1", "DCC_API_KEY": "key-123"}.items():
        monkeypatch.setenv(k, v)
    presigned = "https://bkt.s3.eu-west-2.amazonaws.com/jobs/j/out?X-Amz-Signature=abc"
    stored: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host.endswith(".s3.eu-west-2.amazonaws.com"):
            stored.append(request)
            # (as S3 does: a presigned request with an x-amz-* header the URL did not sign is refused)
            if any(h.startswith("x-amz-") or h in ("authorization", "x-api-key") for h in request.headers):
                return httpx.Response(403, text="<Error><Code>AccessDenied</Code></Error>")
            return httpx.Response(200, content=b"stored bytes")
        assert request.headers["authorization"].startswith("AWS4-HMAC-SHA256")
        return httpx.Response(302, headers={"Location": presigned})

    api = DccClient("https://abc123.execute-api.eu-west-2.amazonaws.com/prod", transport=httpx.MockTransport(handler))
    assert api.stdout("job-1") == b"stored bytes"          # a log too long for a Lambda reply
    assert api.download_output("job-1", "out", tmp_path / "out") == (12, False)
    assert (tmp_path / "out").read_bytes() == b"stored bytes" and len(stored) == 2
    assert all(str(r.url) == presigned for r in stored)


def test_the_websocket_of_a_deployment_is_its_own_api_and_its_connect_is_signed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from websockets.sync.server import ServerConnection, serve

    from dcc.client import DccClient

    port = free_port()
    for k, v in {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_SESSION_TOKEN": "tok",
                 "DCC_API_REGION": "eu-west-1", "DCC_WEBSOCKET_URL": f"ws://127.0.0.1:{port}/prod"}.items():
        monkeypatch.setenv(k, v)
    handshakes: list[tuple[str, dict[str, str]]] = []

    def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        handshakes.append((ws.request.path, dict(ws.request.headers)))
        assert json.loads(ws.recv()) == {"action": "subscribe", "jobIds": ["job-1"]}
        ws.send(json.dumps({"type": "job", "job": job_view(state="running")}))
        ws.send(json.dumps({"type": "job", "job": job_view(state="succeeded", exitCode=0)}))

    with serve(handler, "127.0.0.1", port) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        seen: list[str] = []
        # (the REST API's own /v1/ws is not asked: nothing answers at port 9)
        view = DccClient("http://127.0.0.1:9").wait_until_done("job-1", on_change=lambda v: seen.append(v["state"]))
        server.shutdown()
    assert view["state"] == "succeeded" and seen == ["running", "succeeded"]
    [(path, headers)] = handshakes
    assert path == "/prod"
    auth = {k.lower(): v for k, v in headers.items()}
    assert auth["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-1/execute-api/aws4_request" in auth["authorization"]
    assert auth["x-amz-security-token"] == "tok" and "x-amz-date" in auth


def test_a_websocket_that_knows_no_such_job_is_left_for_the_api(monkeypatch: pytest.MonkeyPatch) -> None:
    import http.server
    import threading

    from websockets.sync.server import ServerConnection, serve

    from dcc.client import DccClient

    class Api(http.server.BaseHTTPRequestHandler):  # (the job's own deployment: it knows the job)
        def do_GET(self) -> None:  # noqa: N802
            body = json.dumps(job_view(state="succeeded", exitCode=0)).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    def other_deployment(ws: ServerConnection) -> None:
        json.loads(ws.recv())
        ws.send(json.dumps({"type": "error", "jobId": "job-1", "error": "not found"}))

    port = free_port()
    monkeypatch.setenv("DCC_WEBSOCKET_URL", f"ws://127.0.0.1:{port}/prod")  # left over from another stack
    api = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    with serve(other_deployment, "127.0.0.1", port) as ws_server:
        threading.Thread(target=ws_server.serve_forever, daemon=True).start()
        view = DccClient(f"http://127.0.0.1:{api.server_address[1]}").wait_until_done("job-1")
        ws_server.shutdown()
    api.shutdown()
    api.server_close()
    assert view["state"] == "succeeded"


def test_a_piped_list_is_a_job_a_line_with_no_empty_column(api: FakeApi) -> None:
    image = "registry.example.invalid:5000/some/very/long/organisation/name/image-with-a-long-name:v1.2.3-build.456"
    api.on("GET", "/v1/jobs", {"status_code": 200, "json": {"jobs": [
        job_view("j1", image=image, state="succeeded", exitCode=0), job_view("j2", state="cancelled")],
        "cursor": None}})

    res = run(api, "list")  # (CliRunner's stdout is not a terminal)

    lines = res.stdout.splitlines()
    assert res.exit_code == 0 and len(lines) == 3, res.stdout  # the header and a line per job
    rows = [line.split() for line in lines[1:]]
    assert [row[:4] for row in rows] == [["j1", "succeeded", "cpu", image], ["j2", "cancelled", "cpu", "img:1"]]
    assert len(rows[0]) == len(rows[1]) == len(lines[0].split()) and rows[1][4] == "-"
