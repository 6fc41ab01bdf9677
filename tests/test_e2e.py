"""End to end through HTTP against local mode: real redis-server, real Docker engine, local storage."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from dcc.local import LocalDcc, _running
from dcc.settings import Settings
from tests.e2e_support import serve_local, wait_done, wait_state

pytestmark = [pytest.mark.redis, pytest.mark.docker]


@pytest.fixture
def settings(redis_url: str, tmp_path: Path, docker_host: str) -> Settings:
    return Settings(redis_url=redis_url, storage_url=str(tmp_path / "storage"), lease_seconds=3.0,
                    max_inline_bytes=64 * 1024, max_attempts=3,
                    max_gpus_per_worker=1)  # as if GPU workers ran elsewhere: GPU jobs wait in the gpu queue


@pytest.fixture
def api(settings: Settings, tmp_path: Path) -> Iterator[tuple[LocalDcc, httpx.Client]]:
    with serve_local(tmp_path / "local", settings, workers=2) as running:
        yield running


def post_ascii_json(client: httpx.Client, path: str, body: object) -> httpx.Response:
    """POST ``body`` as JSON with every non-ASCII character escaped (so strings JSON allows but UTF-8 cannot
    encode, such as a lone "\\ud800", reach the server as a client could send them)."""
    return client.post(path, content=json.dumps(body), headers={"content-type": "application/json"})


def submit(client: httpx.Client, body: dict, expect: int = 201) -> dict:
    reply = client.post("/v1/jobs", json=body)
    assert reply.status_code == expect, reply.text
    return reply.json()


def test_inputs_in_outputs_out(api: tuple[LocalDcc, httpx.Client], test_image: str) -> None:
    _, client = api
    binary = bytes(range(256))
    job = submit(client, {
        "image": test_image,
        "command": ["sh", "-c", "mkdir -p $OUTPUTS/sub && cat /inputs/greeting /inputs/dir/name > $OUTPUTS/sub/joined"
                    " && cp /inputs/blob $OUTPUTS/blob && echo out-$DCC_JOB_ID && echo err >&2"],
        "inputs": [{"name": "greeting", "value": "hello "}, {"name": "dir/name", "value": "world"},
                   {"name": "blob", "value": base64.b64encode(binary).decode(), "encoding": "base64"}],
        "appendStdOut": True,
        "meta": {"owner": "test", "n": [1, 2]},
    })
    assert job["state"] == "queued" and job["queue"] == "cpu"
    done = wait_done(client, job["id"])
    assert done["state"] == "succeeded" and done["exitCode"] == 0, done
    assert sorted(done["outputs"]) == ["blob", "sub/joined"]
    assert done["stdout"] == f"out-{job['id']}\n" and "stderr" not in done
    assert done["meta"] == {"owner": "test", "n": [1, 2]}
    assert done["timings"]["queueWait"] >= 0 and done["timings"]["runTime"] > 0
    assert client.get(f"/v1/jobs/{job['id']}/outputs/sub/joined").content == b"hello world"
    assert client.get(f"/v1/jobs/{job['id']}/outputs/blob").content == binary
    # an output is a signed link to its file, streamed from disk (as S3's presigned URLs are on AWS)
    link = client.get(f"/v1/jobs/{job['id']}/outputs/blob", follow_redirects=False)
    assert link.status_code == 302 and link.headers["location"].startswith(
        f"/_files/jobs/{job['id']}/attempt-1/outputs/blob?")
    assert client.get(link.headers["location"]).content == binary
    for bad in (link.headers["location"].replace("outputs/blob", "outputs/sub/joined"),  # another file
                link.headers["location"][:-1] + ("0" if link.headers["location"][-1] != "0" else "1"),  # forged
                re.sub(r"expires=\d+", "expires=1", link.headers["location"])):  # expired
        reply = client.get(bad)
        assert reply.status_code == 403 and "not valid or has expired" in reply.json()["error"]
    assert client.get(f"/v1/jobs/{job['id']}/stderr").text == "err\n"
    result = client.get(f"/v1/jobs/{job['id']}/result").json()
    assert result["state"] == "succeeded" and result["job"]["image"] == test_image
    assert "value" not in result["job"]["inputs"][0]  # inline contents stay out of result.json


def test_nonzero_exit_fails_and_is_not_retried(api: tuple[LocalDcc, httpx.Client], test_image: str) -> None:
    _, client = api
    job = submit(client, {"image": test_image, "command": ["sh", "-c", "exit 7"]})
    done = wait_done(client, job["id"])
    assert (done["state"], done["exitCode"], done["attempts"]) == ("failed", 7, 1)


def test_max_duration_times_out(api: tuple[LocalDcc, httpx.Client], test_image: str) -> None:
    _, client = api
    job = submit(client, {"image": test_image, "command": ["sleep", "60"], "parameters": {"maxDuration": 1}})
    started = time.monotonic()
    done = wait_done(client, job["id"], timeout=30)
    assert done["state"] == "timed_out"
    assert time.monotonic() - started < 20


def test_cancel_queued_and_running(settings: Settings, tmp_path: Path, test_image: str) -> None:
    with serve_local(tmp_path / "local", settings, workers=1) as (_, client):
        running = submit(client, {"image": test_image, "command": ["sleep", "60"]})
        queued = submit(client, {"image": test_image, "command": ["true"]})
        wait_state(client, running["id"], "running")
        reply = client.post(f"/v1/jobs/{queued['id']}/cancel")
        assert reply.status_code == 200 and reply.json()["state"] == "cancelled"
        started = time.monotonic()
        assert client.post(f"/v1/jobs/{running['id']}/cancel").json()["state"] == "running"
        done = wait_done(client, running["id"], timeout=20)
        assert done["state"] == "cancelled"
        assert time.monotonic() - started < 3  # killed within a second, plus the result's storage
        # cancelling a finished job leaves it as it is
        assert client.post(f"/v1/jobs/{running['id']}/cancel").json()["state"] == "cancelled"
        assert client.get(f"/v1/jobs/{queued['id']}").json()["state"] == "cancelled"


def test_missing_image_is_a_system_error_but_not_the_workers(api: tuple[LocalDcc, httpx.Client],
                                                              test_image: str) -> None:
    _, client = api
    jobs = [submit(client, {"image": image, "command": ["true"]})
            for image in ("dcc-no-such-image:404", "nonexistent.invalid/dcc:1")]
    for job in jobs:
        # no registry answers here: a pull that fails on the network is retried (3 attempts), each waiting on DNS
        done = wait_done(client, job["id"], timeout=240)
        assert done["state"] == "error"
        assert done["error"]["code"] in ("image_not_found", "image_pull_failed")
        assert done["error"]["message"]
    # six failed pulls in a row, more than the system errors that make a worker unhealthy: not its fault
    assert all(w["health"] == "HEALTHY" for w in client.get("/v1/workers").json()["workers"])
    ok = submit(client, {"image": test_image, "command": ["true"]})
    assert wait_done(client, ok["id"])["state"] == "succeeded"


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/../../x", "x/", "./x", "a\nb", "a\\b", ".dcc-tmp-x",
                                  "d/.dcc-tmp-x", "a\ud800"])
def test_bad_input_names_are_refused_with_nothing_written(api: tuple[LocalDcc, httpx.Client], settings: Settings,
                                                          name: str) -> None:
    local, client = api
    reply = post_ascii_json(client, "/v1/jobs", {"image": "busybox", "inputs": [{"name": name, "value": "pwned"}]})
    assert reply.status_code == 400
    assert "inputs.0.name" in reply.json()["error"]
    storage = Path(settings.storage_url)
    assert not storage.exists() or not any(storage.rglob("*"))
    assert local.service.store.redis.keys("{dcc}:job:*") == []


def test_url_input_to_instance_metadata_is_refused(api: tuple[LocalDcc, httpx.Client]) -> None:
    _, client = api
    for url in ("https://169.254.169.254/latest/meta-data/", "https://127.0.0.1/", "s3://not-allowed/key"):
        reply = client.post("/v1/jobs", json={"image": "busybox",
                                              "inputs": [{"name": "x", "value": url, "source": "url"}]})
        assert reply.status_code == 400, url
        assert "inputs.0.value" in reply.json()["error"]


def test_validation_errors_name_the_field(api: tuple[LocalDcc, httpx.Client]) -> None:
    _, client = api
    reply = client.post("/v1/jobs", json={"command": ["x"]})
    assert reply.status_code == 400 and "image" in reply.json()["error"]
    reply = client.post("/v1/jobs", json={"image": "x", "parameters": {"memory": 10**9}})
    assert reply.status_code == 400 and "parameters.memory" in reply.json()["error"]
    reply = client.post("/v1/jobs", content=b"{not json", headers={"content-type": "application/json"})
    assert reply.status_code == 400 and reply.json()["details"] == [
        {"field": "body", "message": "not valid JSON: Expecting property name enclosed in double quotes"}]


def test_text_that_cannot_run_or_be_stored_is_refused(api: tuple[LocalDcc, httpx.Client], settings: Settings) -> None:
    local, client = api
    for body, field in (
        ({"image": "x", "env": {"A": "\ud800"}}, "env.A"),  # JSON's "\ud800": not encodable, not storable
        ({"image": "x", "command": ["echo", "\udcff"]}, "command[1]"),
        ({"image": "x", "meta": {"k": ["\udfff"]}}, "meta.k[0]"),
        ({"image": "x", "inputs": [{"name": "a", "value": "\ud800"}]}, "inputs[0].value"),
        ({"image": "x", "command": ["echo", "a\x00b"]}, "command"),
        ({"image": "x", "workingDir": "/a\x00b"}, "workingDir"),
        ({"image": "x\x00y"}, "image"),
        ({"image": "x", "parameters": {"memory": 1}}, "parameters.memory"),  # Docker's minimum is 6 MiB
        ({"image": "x", "parameters": {"cpus": 0.001}}, "parameters.cpus"),
        ({"image": "x", "meta": json.loads("[" * 100 + "]" * 100)}, "meta nests deeper"),
        # no guessing at types: a string or a boolean is not a number, "yes" or 1 is not a boolean
        ({"image": "x", "fast": "yes"}, "fast"),
        ({"image": "x", "wait": 1}, "wait"),
        ({"image": "x", "appendStdOut": "true"}, "appendStdOut"),
        ({"image": "x", "parameters": {"gpu": True}}, "parameters.gpu"),
        ({"image": "x", "parameters": {"maxDuration": "60"}}, "parameters.maxDuration"),
        ({"image": "x", "parameters": {"memory": 64.5}}, "parameters.memory"),  # (64.0 is taken for 64)
        ({"image": "x", "parameters": {"cpus": "2"}}, "parameters.cpus"),
        # outputs to keep are patterns relative to /outputs
        ({"image": "x", "keepOutputs": ["../x"]}, "pattern 0 ('../x') must not contain '..'"),
        ({"image": "x", "keepOutputs": ["*.txt", "!/etc/*"]}, "pattern 1 ('!/etc/*') must be relative to /outputs"),
        ({"image": "x", "keepOutputs": [""]}, "pattern 0 ('') must not be empty"),
        ({"image": "x", "keepOutputs": "*.txt"}, "keepOutputs"),
        ({"image": "x", "keepOutputs": ["*"] * 33}, "keepOutputs"),
        ({"image": "x", "keepOutputs": ["./a.txt"]}, "pattern 0 ('./a.txt') must not start with './'"),
        ({"image": "x", "keepOutputs": ["a/./y.txt"]}, "pattern 0 ('a/./y.txt') must be a normalized path"),
        ({"image": "x", "keepOutputs": ["a//b"]}, "pattern 0 ('a//b') must be a normalized path"),
        ({"image": "x", "keepOutputs": ["!!x.txt"]}, "pattern 0 ('!!x.txt') must not start with '!!'"),
        ({"image": "x", "keepOutputs": ["plots/"]}, "pattern 0 ('plots/') names a folder: 'plots/**' keeps"),
        ({"image": "x", "keepOutputs": ["**/a/**/a/**/b"]}, "has more than 2 '**'"),
        ({"image": "x", "keepOutputs": ["***/a/***/b/***"]}, "has more than 2 '**'"),
    ):
        reply = post_ascii_json(client, "/v1/jobs", body)
        assert reply.status_code == 400 and field in reply.json()["error"], (body, reply.text)
    storage = Path(settings.storage_url)
    assert not storage.exists() or not any(storage.rglob("*"))
    assert local.service.store.redis.keys("{dcc}:job:*") == []


def test_local_mode_refuses_gpu_jobs_its_own_worker_cannot_run(settings: Settings, tmp_path: Path, test_image: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # no GPU on this machine, and no limit set: a GPU job would wait forever, so it is refused
    with serve_local(tmp_path / "plain", settings.with_(max_gpus_per_worker=None), workers=1) as (local, client):
        reply = client.post("/v1/jobs", json={"image": test_image, "command": ["true"], "parameters": {"gpu": 1}})
        assert reply.status_code == 400, reply.text
        assert reply.json()["error"] == ("parameters.gpu: 1 GPUs is more than any worker of this deployment has "
                                         "(0)")
        assert client.get("/v1/queues").json()["queues"]["gpu"] == 0
        for path in ("/test/gpu", "/test/gpu/2/1"):
            reply = client.get(path)
            assert reply.status_code == 400 and reply.json()["error"] == (
                "no worker of this deployment has a GPU: there is no GPU job to test"), reply.text
    # a worker given two (data-flow-only) GPUs takes jobs of up to two
    monkeypatch.setenv("DISABLE_NVIDIA_RUNTIME", "true")
    monkeypatch.setenv("DCC_GPUS", "2")
    with serve_local(tmp_path / "gpus", settings.with_(max_gpus_per_worker=None), workers=1) as (local, client):
        job = submit(client, {"image": test_image, "command": ["true"], "parameters": {"gpu": 2}})
        assert wait_done(client, job["id"])["state"] == "succeeded"
        reply = client.post("/v1/jobs", json={"image": test_image, "command": ["true"], "parameters": {"gpu": 3}})
        assert reply.status_code == 400 and "(2)" in reply.json()["error"], reply.text
        [worker] = client.get("/v1/workers").json()["workers"]
        assert worker["class"] == "local" and worker["slots"] == {"cpu": local.slots, "gpu": 2}
        assert worker["gpus"] == ["0", "1"]
        assert [g["index"] for g in worker["gpuInfo"]] == ["0", "1"]


def test_containers_docker_refuses_end_the_job_without_retries_or_harm_to_the_worker(
        api: tuple[LocalDcc, httpx.Client], test_image: str) -> None:
    _, client = api
    # the image has no default command; a command not in it (by name or path), or a folder; a working folder
    # that is a file, or under a read-only one; more CPUs than the machine has: Docker refuses each (400 or 500)
    cpus = float(os.cpu_count() or 1) + 1
    jobs = [submit(client, {"image": test_image, **body})
            for body in ({}, {"command": ["no-such-program"]}, {"command": ["/bin/typo"]}, {"command": ["/etc"]},
                         {"command": ["true"], "workingDir": "/bin/sh"},
                         {"command": ["true"], "workingDir": "/inputs/new"},
                         {"command": ["true"], "parameters": {"cpus": cpus}}) * 2]
    for job in jobs:
        done = wait_done(client, job["id"])
        assert (done["state"], done["error"]["code"], done["attempts"]) == ("error", "container_refused", 1), done
        assert done["error"]["message"].startswith("Docker")
    deadline = time.monotonic() + 20
    while not (workers := client.get("/v1/workers").json()["workers"]) and time.monotonic() < deadline:
        time.sleep(0.2)  # (the first heartbeat comes after one interval)
    assert workers and all(w["health"] == "HEALTHY" for w in workers)  # the job's fault, not the machine's
    ok = submit(client, {"image": test_image, "command": ["true"]})
    assert wait_done(client, ok["id"])["state"] == "succeeded"


def test_only_the_outputs_asked_for_are_kept(api: tuple[LocalDcc, httpx.Client], test_image: str) -> None:
    _, client = api
    script = "cd $OUTPUTS && mkdir -p plots tmp && echo 1 > a.csv && echo 2 > plots/p.svg && echo 3 > tmp/x.csv"
    for fast in (False, True):
        job = submit(client, {"image": test_image, "command": ["sh", "-c", script], "fast": fast,
                              "keepOutputs": ["*.csv", "plots/**"]})
        done = job if fast else wait_done(client, job["id"])
        assert done["state"] == "succeeded" and sorted(done["outputs"]) == ["a.csv", "plots/p.svg"], done
        assert client.get(f"/v1/jobs/{job['id']}/outputs/a.csv").text == "1\n"
        assert client.get(f"/v1/jobs/{job['id']}/outputs/tmp/x.csv").status_code == 404
        view = client.get(f"/v1/jobs/{job['id']}").json()
        assert view["outputs"] == done["outputs"] and view["keepOutputs"] == ["*.csv", "plots/**"]


def test_outputs_whose_names_cannot_be_kept_are_removed_and_said_so(api: tuple[LocalDcc, httpx.Client],
                                                                    test_image: str) -> None:
    _, client = api
    script = ("echo ok > $OUTPUTS/ok; echo 1 > \"$OUTPUTS/a\\\\b\"; echo 2 > \"$OUTPUTS/$(printf 'a\\377b')\"; "
              "echo 3 > $OUTPUTS/.dcc-tmp-zz; d=\"$OUTPUTS/$(printf 'd\\001')\"; mkdir \"$d\"; echo 4 > \"$d/x\"")
    for fast in (False, True):
        job = submit(client, {"image": test_image, "command": ["sh", "-c", script], "fast": fast})
        done = job if fast else wait_done(client, job["id"])
        assert done["state"] == "succeeded" and done["outputs"] == ["ok"], done
        stderr = client.get(f"/v1/jobs/{job['id']}/stderr").text
        assert stderr.count("[dcc: output ") == 4 and "a\\xffb" in stderr, stderr
    listing = client.get("/v1/jobs", params={"limit": 100})
    assert listing.status_code == 200 and len(listing.json()["jobs"]) >= 2


def test_inline_inputs_past_the_limit_get_413(api: tuple[LocalDcc, httpx.Client], settings: Settings) -> None:
    local, client = api
    big = "x" * (settings.max_inline_bytes + 1)
    reply = client.post("/v1/jobs", json={"image": "busybox", "inputs": [{"name": "big", "value": big}]})
    assert reply.status_code == 413 and "limit" in reply.json()["error"]
    assert local.service.store.redis.keys("{dcc}:job:*") == []


def test_a_request_body_larger_than_api_gateway_takes_gets_413(api: tuple[LocalDcc, httpx.Client]) -> None:
    local, client = api
    from dcc.local import MAX_BODY_BYTES

    reply = client.post("/v1/jobs", content=b"{" + b" " * MAX_BODY_BYTES + b"}",
                        headers={"content-type": "application/json"})
    assert reply.status_code == 413 and f"larger than {MAX_BODY_BYTES} bytes" in reply.json()["error"]
    assert local.service.store.redis.keys("{dcc}:job:*") == []


def test_a_job_description_past_the_limit_gets_413(api: tuple[LocalDcc, httpx.Client], settings: Settings) -> None:
    local, client = api
    for body in ({"image": "x", "meta": {"blob": "m" * settings.max_spec_bytes}},
                 {"image": "x", "command": ["echo", *["c" * (settings.max_spec_bytes // 4)] * 5]}):
        reply = client.post("/v1/jobs", json=body)
        assert reply.status_code == 413 and "description" in reply.json()["error"], reply.text
    assert local.service.store.redis.keys("{dcc}:job:*") == []


def test_same_client_id_twice_makes_one_job(api: tuple[LocalDcc, httpx.Client], test_image: str) -> None:
    _, client = api
    first = submit(client, {"id": "my-job-1", "image": test_image, "command": ["true"]})
    again = submit(client, {"id": "my-job-1", "image": test_image, "command": ["false"]}, expect=200)
    assert again["id"] == first["id"] == "my-job-1" and again["command"] == ["true"]
    assert wait_done(client, "my-job-1")["state"] == "succeeded"


def test_unknown_job_and_unsafe_output_paths(api: tuple[LocalDcc, httpx.Client], test_image: str) -> None:
    _, client = api
    assert client.get("/v1/jobs/nope").status_code == 404
    assert client.post("/v1/jobs/nope/cancel").status_code == 404
    job = submit(client, {"image": test_image, "command": ["sh", "-c", "echo hi > $OUTPUTS/a"]})
    wait_done(client, job["id"])
    assert client.get(f"/v1/jobs/{job['id']}/outputs/a").content == b"hi\n"
    assert client.get(f"/v1/jobs/{job['id']}/outputs/b").status_code == 404
    assert client.get(f"/v1/jobs/{job['id']}/outputs/..%2F..%2Fresult.json").status_code == 400


def test_listing_pages_through_jobs(api: tuple[LocalDcc, httpx.Client], test_image: str) -> None:
    local, client = api
    ids = {submit(client, {"image": "dcc-no-such-image:1", "parameters": {"gpu": 1}})["id"] for _ in range(5)}
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/jobs", params=params).json()
        seen += [j["id"] for j in page["jobs"]]
        cursor = page["cursor"]
        if not cursor:
            break
    assert set(seen) == ids and len(seen) == 5
    queued = client.get("/v1/jobs", params={"state": "queued"}).json()["jobs"]
    assert {j["id"] for j in queued} == ids  # no GPU worker here: they wait in the gpu queue
    assert client.get("/v1/jobs", params={"state": "bogus"}).status_code == 400
    assert client.get("/v1/queues").json()["queues"]["gpu"] == 5


def _worker_when(client: httpx.Client, check: Callable[[dict[str, Any]], object],
                 timeout: float = 20) -> dict[str, Any]:
    """Poll ``GET /v1/workers`` until its one worker passes ``check``; that worker."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = client.get("/v1/workers").json()["workers"]
        if workers and check(workers[0]):
            assert len(workers) == 1, workers
            return dict(workers[0])
        time.sleep(0.2)
    raise AssertionError(f"no worker as expected within {timeout} s: {workers}")


def test_workers_report_health_typed(api: tuple[LocalDcc, httpx.Client], test_image: str) -> None:
    from typer.testing import CliRunner

    from dcc.cli import app

    _, client = api
    job = submit(client, {"image": test_image, "command": ["sleep", "30"]})
    busy = _worker_when(client, lambda w: w["running"])
    assert {k: v for k, v in busy.items() if k not in ("id", "host", "seen")} == {
        "health": "HEALTHY", "class": "local", "slots": {"cpu": 2}, "running": [job["id"]], "gpus": [],
        "gpusHeld": [], "gpuInfo": [], "idleSince": None, "draining": False}
    assert isinstance(busy["seen"], float) and abs(time.time() - busy["seen"]) < 5
    shown = CliRunner().invoke(app, ["--api", str(client.base_url), "workers"])
    [header, row] = shown.stdout.splitlines()
    assert header.split()[:2] == ["ID", "HEALTH"] and row.split()[:2] == [busy["id"], "HEALTHY"], shown.stdout
    assert f" {job['id']} " in row and " cpu=2 " in row and " s ago" in row and "[" not in row, row
    as_json = CliRunner().invoke(app, ["--api", str(client.base_url), "workers", "--json"])
    assert json.loads(as_json.stdout)[0]["running"] == [job["id"]]
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    idle = _worker_when(client, lambda w: not w["running"])
    assert isinstance(idle["idleSince"], float) and idle["idleSince"] > busy["seen"]
    assert client.get("/healthz").json() == {"ok": True}


def test_redis_down_gives_503_not_500(settings: Settings, tmp_path: Path) -> None:
    dead = settings.with_(redis_url="redis://127.0.0.1:1/0", redis_socket_timeout=1.0, disable_worker=True)
    with serve_local(tmp_path / "local", dead, workers=None) as (_, client):
        reply = client.post("/v1/jobs", json={"image": "busybox"})
        assert reply.status_code == 503 and "Redis" in reply.json()["error"]
        assert client.get("/v1/jobs/abc").status_code == 503


def test_head_over_http_has_the_get_s_headers_and_length_and_runs_no_job(settings: Settings, tmp_path: Path) -> None:
    from dcc.jobs import JobState, Outcome
    from dcc.storage import attempt_prefix

    with serve_local(tmp_path / "local", settings.with_(disable_worker=True), workers=None) as (local, client):
        job = submit(client, {"image": "busybox", "command": ["true"]})["id"]
        claim = local.service.store.claim("cpu", "w1")
        assert claim is not None
        local.service.storage.put_bytes(f"{attempt_prefix(job, 1)}stderr", b"\x00\xff\xfe\x80")  # (sent in base64)
        assert local.service.store.finish(claim, Outcome(state=JobState.SUCCEEDED, exit_code=0))
        for path in ("/healthz", f"/v1/jobs/{job}", f"/v1/jobs/{job}/stderr", "/v1/jobs/nope", "/openapi.json"):
            got, head = client.get(path), client.head(path)
            assert (head.status_code, head.content) == (got.status_code, b""), path
            assert head.headers["content-length"] == str(len(got.content)) != "0", path
            assert {k: v for k, v in head.headers.items() if k != "date"} == {
                k: v for k, v in got.headers.items() if k != "date"}, path
        refused = client.head("/test/cpu/2/1")
        assert (refused.status_code, refused.headers["allow"], refused.content) == (405, "GET", b"")
        for method in ("TRACE", "FOO", "PUT"):  # a method no route takes: JSON, and the methods the route takes
            odd = client.request(method, "/v1/jobs")
            assert (odd.status_code, odd.headers["allow"]) == (405, "GET, HEAD, POST"), (method, odd.text)
            assert f"{method} is not allowed on /v1/jobs" in odd.json()["error"]
        assert local.service.store.queue_depths()["queues"] == {"cpu": 0, "gpu": 0}


def _worker_process(settings: Settings, worker_id: str, work: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "REDIS_URL": settings.redis_url, "DCC_STORAGE": settings.storage_url,
           "DCC_WORKER_ID": worker_id, "DCC_WORKER_SLOTS": "1", "DCC_WORK_DIR": str(work),
           "DCC_LEASE_SECONDS": str(settings.lease_seconds)}
    return subprocess.Popen([sys.executable, "-m", "worker_agent"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def test_killed_worker_job_completes_on_another(settings: Settings, tmp_path: Path, test_image: str) -> None:
    api_only = settings.with_(disable_worker=True)
    with serve_local(tmp_path / "local", api_only, workers=None, reap_seconds=0.5) as (local, client):
        first = _worker_process(settings, "worker-a", tmp_path / "wa")
        try:
            job = submit(client, {"image": test_image, "command": ["sh", "-c", "sleep 2; echo done"],
                                  "appendStdOut": True})
            view = wait_state(client, job["id"], "running", timeout=30)
            assert view["worker"] == "worker-a"
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            second = _worker_process(settings, "worker-b", tmp_path / "wb")
            try:
                done = wait_done(client, job["id"], timeout=60)
            finally:
                second.terminate()
                second.wait(30)
        finally:
            if first.poll() is None:
                first.kill()
        assert (done["state"], done["attempts"], done["worker"], done["stdout"]) == ("succeeded", 2, "worker-b",
                                                                                    "done\n")
        assert redis.Redis.from_url(settings.redis_url).zcard("{dcc}:leases") == 0


def test_requests_at_once_are_each_answered_right(api: tuple[LocalDcc, httpx.Client], test_image: str) -> None:
    """Local mode serves requests from many threads through one resolver: none may see another's state."""
    from concurrent.futures import ThreadPoolExecutor

    _, client = api
    blocker = submit(client, {"image": test_image, "command": ["sleep", "30"]})
    waiting = ThreadPoolExecutor(1).submit(client.get, f"/v1/jobs/{blocker['id']}/wait", params={"timeout": 20})

    def session(n: int) -> list[str]:
        problems = []
        with httpx.Client(base_url=client.base_url, timeout=60) as own:
            for i in range(12):
                tag = f"{n}-{i}"
                meta = {"tag": tag, "bulk": list(range(20000))}  # (a body that takes a while to resolve)
                reply = own.post("/v1/jobs", json={"image": test_image, "command": ["true"], "meta": meta,
                                                   "parameters": {"gpu": 1}})  # (queued on gpu: nothing runs it)
                if reply.status_code != 201 or reply.json()["meta"]["tag"] != tag:
                    problems.append(f"submit {tag}: {reply.status_code} {reply.text[:200]}")
                    continue
                got = own.get(f"/v1/jobs/{reply.json()['id']}")
                if got.status_code != 200 or got.json()["meta"]["tag"] != tag:
                    problems.append(f"get {tag}: {got.status_code} {got.text[:200]}")
                bad = own.post("/v1/jobs", json={"image": test_image, "parameters": {"memory": 1}})
                if bad.status_code != 400 or "parameters.memory" not in bad.json().get("error", ""):
                    problems.append(f"bad {tag}: {bad.status_code} {bad.text[:200]}")
                listing = own.get("/v1/jobs", params={"limit": 5})
                if listing.status_code != 200:
                    problems.append(f"list {tag}: {listing.status_code} {listing.text[:200]}")
        return problems

    with ThreadPoolExecutor(6) as pool:
        problems = [p for found in pool.map(session, range(6)) for p in found]
    assert problems == []
    assert not waiting.done()  # all of that was answered while a long-poll was still open
    client.post(f"/v1/jobs/{blocker['id']}/cancel")
    assert waiting.result(timeout=30).json()["state"] == "cancelled"


def test_many_requests_waiting_on_jobs_leave_the_api_free(api: tuple[LocalDcc, httpx.Client], test_image: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    local, client = api
    parked = submit(client, {"image": test_image, "parameters": {"gpu": 1}})  # (queued on gpu: nothing runs it)
    store = local.service.store

    def long_poll(_: int) -> int:
        with httpx.Client(base_url=client.base_url, timeout=60) as own:
            return own.get(f"/v1/jobs/{parked['id']}/wait", params={"timeout": 15}).status_code

    # more than Starlette's default pool of 40 threads, and than redis-py's default of 100 connections a client
    with ThreadPoolExecutor(150) as pool:
        polls = [pool.submit(long_poll, n) for n in range(150)]
        deadline = time.monotonic() + 20  # until each poll waits on the job's events (40 at most, then 100, before)
        while store.redis.pubsub_numsub(store.events_channel(parked["id"]))[0][1] < 150 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get("/healthz").status_code == 200
        assert client.get(f"/v1/jobs/{parked['id']}").json()["state"] == "queued"
        assert not any(p.done() for p in polls)  # answered while every long-poll still waits
        client.post(f"/v1/jobs/{parked['id']}/cancel")
        assert [p.result(timeout=30) for p in polls] == [200] * 150


def test_output_paths_are_decoded_once(api: tuple[LocalDcc, httpx.Client], test_image: str) -> None:
    _, client = api
    job = submit(client, {"image": test_image, "command": [
        "sh", "-c", "echo upper > $OUTPUTS/aA; echo percent > $OUTPUTS/a%41; echo space > \"$OUTPUTS/a b%2F\""]})
    assert wait_done(client, job["id"])["state"] == "succeeded"
    base = f"/v1/jobs/{job['id']}/outputs/"
    assert client.get(base + "aA").text == "upper\n"
    assert client.get(base + "a%2541").text == "percent\n"  # "a%41", encoded: not "aA"
    assert client.get(base + "a%20b%252F").text == "space\n"


def _children(pid: int) -> dict[int, str]:
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)
            name = fields[0].split("(", 1)[1]
            if int(fields[1].split()[1]) == pid:
                found[int(stat.parent.name)] = name
        except (OSError, IndexError, ValueError):
            continue
    return found


def _start_local(data_dir: Path, port: int, **env: str) -> subprocess.Popen[bytes]:
    """``dcc local`` in a process of its own; what it says goes to ``local-PORT.log`` beside the data dir."""
    clean = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DCC_STORAGE")}
    with (data_dir.parent / f"local-{port}.log").open("wb") as said:
        return subprocess.Popen([str(Path(sys.executable).parent / "dcc"), "local", "--port", str(port),
                                 "--data-dir", str(data_dir)], env={**clean, **env}, stdout=said, stderr=said)


def _until_healthy(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("local mode did not come up")


def test_sigterm_stops_local_mode_and_its_redis(tmp_path: Path, docker_host: str, test_image: str) -> None:
    from tests.conftest import free_port

    port = free_port()
    proc = _start_local(tmp_path / "data", port, DCC_GRACE_SECONDS="3")
    try:
        _until_healthy(port)
        redis_pids = [pid for pid, name in _children(proc.pid).items() if name.startswith("redis-server")]
        assert len(redis_pids) == 1
        assert (tmp_path / "data").stat().st_mode & 0o777 == 0o700  # jobs' files and Redis's: this user's alone
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            job = submit(client, {"image": test_image, "command": ["sleep", "60"]})
            wait_state(client, job["id"], "running")
            asked = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            # during the grace the API still answers: the job can be followed, or cancelled
            assert client.get(f"/v1/jobs/{job['id']}").json()["state"] == "running"
        assert proc.wait(timeout=60) != 0
        assert time.monotonic() - asked < 10  # its grace is DCC_GRACE_SECONDS' 3 s (it was always 10 s)
        assert not Path(f"/proc/{redis_pids[0]}").exists()  # stopped with it, not left to init
    finally:
        if proc.poll() is None:
            proc.kill()


def test_local_mode_starts_its_redis_again_when_it_dies(tmp_path: Path, docker_host: str, test_image: str) -> None:
    from tests.conftest import free_port

    port = free_port()
    proc = _start_local(tmp_path / "data", port)
    try:
        _until_healthy(port)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            first = submit(client, {"image": test_image, "command": ["echo", "before"], "appendStdOut": True})
            assert wait_done(client, first["id"])["state"] == "succeeded"
            time.sleep(1.2)  # (appendfsync everysec)
            [redis_pid] = [pid for pid, name in _children(proc.pid).items() if name.startswith("redis-server")]
            os.kill(redis_pid, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while client.get("/healthz").status_code != 200:
                assert time.monotonic() < deadline, "local mode did not start its redis-server again"
                time.sleep(0.2)
            assert client.get(f"/v1/jobs/{first['id']}").json()["stdout"] == "before\n"  # (from its file)
            second = submit(client, {"image": test_image, "command": ["echo", "after"], "appendStdOut": True})
            assert wait_done(client, second["id"])["stdout"] == "after\n"
        assert [pid for pid, name in _children(proc.pid).items() if name.startswith("redis-server")] != [redis_pid]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def test_a_killed_local_mode_is_replaced_cleanly_on_its_data_dir(tmp_path: Path, docker_client, test_image: str,
                                                                  ) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import free_port

    data = tmp_path / "data"
    first_port, second_port = free_port(), free_port()
    first = _start_local(data, first_port, DCC_LEASE_SECONDS="2")
    second = None
    redis_pid = 0
    stack = contextlib.ExitStack()
    try:
        _until_healthy(first_port)
        client = stack.enter_context(httpx.Client(base_url=f"http://127.0.0.1:{first_port}", timeout=30))
        job = submit(client, {"image": test_image, "command": ["sh", "-c", "sleep 6; echo done"]})
        wait_state(client, job["id"], "running")
        deadline = time.monotonic() + 10
        while not (found := docker_client.containers.list(filters={"label": f"dcc.job={job['id']}"})):
            assert time.monotonic() < deadline, "the job's container did not appear"
            time.sleep(0.05)
        [container] = found
        # a second local mode on a data dir in use stops at once, saying why
        refused_port = free_port()
        refused = _start_local(data, refused_port)
        said = (tmp_path / f"local-{refused_port}.log").read_bytes() if refused.wait(timeout=30) else b""
        assert b"is in use by another dcc local (pid" in said, said
        [redis_pid] = [pid for pid, name in _children(first.pid).items() if name.startswith("redis-server")]
        first.kill()  # SIGKILL: its redis-server and the job's container live on
        first.wait(timeout=10)
        assert _running(redis_pid) and container.reload() is None

        second = _start_local(data, second_port, DCC_LEASE_SECONDS="2")
        _until_healthy(second_port)
        assert not _running(redis_pid)  # stopped, not writing the same append-only file as ours
        assert [n for n in _children(second.pid).values() if n.startswith("redis-server")] == ["redis-server"]
        with pytest.raises(Exception, match="404"):  # the orphaned container went (the same worker id)
            container.reload()
        client = stack.enter_context(httpx.Client(base_url=f"http://127.0.0.1:{second_port}", timeout=30))
        done = wait_done(client, job["id"], timeout=60)
        assert (done["state"], done["attempts"]) == ("succeeded", 2), done  # its lease lapsed: it ran again
        assert client.get(f"/v1/jobs/{job['id']}/stdout").text == "done\n"
    finally:
        stack.close()
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # (stops its redis-server too)
                proc.wait(timeout=60)
        if redis_pid and _running(redis_pid):
            os.kill(redis_pid, signal.SIGTERM)


def test_cut_fast_outputs_are_flagged_and_the_cli_says_so(api: tuple[LocalDcc, httpx.Client], settings: Settings,
                                                          test_image: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from dcc.cli import app

    _, client = api
    limit = settings.max_inline_output_bytes
    script = f"head -c {limit - 10} /dev/zero > $OUTPUTS/a; head -c 100 /dev/zero > $OUTPUTS/b; echo x > $OUTPUTS/c"
    job = submit(client, {"image": test_image, "command": ["sh", "-c", script], "fast": True})
    # the small files stay whole, ahead of the large one in name order: a keeps what they leave
    assert job["state"] == "succeeded" and job["outputsTruncated"] and job["outputFiles"]["a"]["truncated"]
    assert [job["outputFiles"][n]["truncated"] for n in "bc"] == [False, False]
    cut = client.get(f"/v1/jobs/{job['id']}/outputs/a")
    whole = client.get(f"/v1/jobs/{job['id']}/outputs/b")
    assert "x-dcc-truncated" not in whole.headers and cut.headers["x-dcc-truncated"] == "true"
    assert (whole.content, client.get(f"/v1/jobs/{job['id']}/outputs/c").content) == (b"\0" * 100, b"x\n")
    result = CliRunner().invoke(app, ["--api", str(client.base_url), "outputs", job["id"], "--to",
                                      str(tmp_path / "got")])
    assert result.exit_code == 1 and "incomplete" in result.output, result.output
    assert "a: only its first" in result.output and (tmp_path / "got" / "a").stat().st_size == limit - 102
