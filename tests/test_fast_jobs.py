"""Fast jobs, waiting submits and statistics, end to end through HTTP against local mode."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dcc.local import LocalDcc
from dcc.settings import Settings
from tests.e2e_support import serve_local, wait_done

pytestmark = [pytest.mark.redis, pytest.mark.docker]


@pytest.fixture
def settings(redis_url: str, tmp_path: Path, docker_host: str) -> Settings:
    return Settings(redis_url=redis_url, storage_url=str(tmp_path / "storage"), wait_seconds=5.0,
                    max_fast_inline_bytes=1000,
                    max_gpus_per_worker=1)  # as if GPU workers ran elsewhere: GPU jobs wait in the gpu queue


@pytest.fixture
def api(settings: Settings, tmp_path: Path) -> Iterator[tuple[LocalDcc, httpx.Client]]:
    with serve_local(tmp_path / "local", settings, workers=2) as running:
        yield running


def test_fast_job_replies_with_its_result(api: tuple[LocalDcc, httpx.Client], settings: Settings,
                                          test_image: str) -> None:
    local, client = api
    reply = client.post("/v1/jobs", json={
        "fast": True, "image": test_image,
        "inputs": [{"name": "in.txt", "value": "fast input"},
                   {"name": "b.bin", "value": base64.b64encode(b"\x00\xff\x10").decode(), "encoding": "base64"}],
        "command": ["sh", "-c", "cp /inputs/in.txt $OUTPUTS/copy.txt; cp /inputs/b.bin $OUTPUTS/b.bin; "
                                "echo to-out; echo to-err >&2; exit 3"]})
    assert reply.status_code == 201, reply.text
    job = reply.json()
    assert (job["state"], job["exitCode"], job["stdout"], job["stderr"]) == ("failed", 3, "to-out\n", "to-err\n")
    assert job["outputFiles"]["copy.txt"] == {"encoding": "utf8", "content": "fast input", "truncated": False}
    assert base64.b64decode(job["outputFiles"]["b.bin"]["content"]) == b"\x00\xff\x10"
    assert client.get(f"/v1/jobs/{job['id']}/outputs/b.bin").content == b"\x00\xff\x10"
    assert client.get(f"/v1/jobs/{job['id']}/stdout").text == "to-out\n"
    storage = Path(settings.storage_url)
    assert not (storage / "jobs" / job["id"]).exists()  # nothing of a fast job goes to storage
    ttl = local.service.store.redis.ttl(local.service.store.job_key(job["id"]))
    assert 0 < ttl <= settings.fast_result_seconds


def test_fast_job_past_the_wait_limit_answers_202(settings: Settings, tmp_path: Path, test_image: str) -> None:
    with serve_local(tmp_path / "local", settings.with_(wait_seconds=1.0), workers=1) as (_, client):
        started = time.monotonic()
        reply = client.post("/v1/jobs", json={"fast": True, "image": test_image, "command": ["sleep", "3"]})
        assert reply.status_code == 202 and reply.json()["state"] in ("queued", "running")
        assert time.monotonic() - started < 2.5
        assert wait_done(client, reply.json()["id"])["state"] == "succeeded"


def test_standard_job_with_wait_replies_when_done(api: tuple[LocalDcc, httpx.Client], test_image: str) -> None:
    _, client = api
    reply = client.post("/v1/jobs", json={"wait": True, "image": test_image,
                                          "command": ["sh", "-c", "echo x > $OUTPUTS/o"]})
    assert reply.status_code == 201 and reply.json()["state"] == "succeeded" and reply.json()["outputs"] == ["o"]


def test_fast_job_limits(api: tuple[LocalDcc, httpx.Client], settings: Settings) -> None:
    local, client = api
    big = client.post("/v1/jobs", json={"fast": True, "image": "x", "inputs": [{"name": "a", "value": "y" * 1001}]})
    assert big.status_code == 413 and "fast" in big.json()["error"]
    url = client.post("/v1/jobs", json={"fast": True, "image": "x",
                                        "inputs": [{"name": "a", "value": "s3://b/k", "source": "url"}]})
    assert url.status_code == 400 and "inline inputs only" in url.json()["error"]
    assert local.service.store.redis.keys("{dcc}:job:*") == []


def test_standard_inputs_are_not_kept_in_redis(api: tuple[LocalDcc, httpx.Client], test_image: str) -> None:
    local, client = api
    job = client.post("/v1/jobs", json={"image": test_image, "command": ["cat", "/inputs/secret"],
                                        "appendStdOut": True,
                                        "inputs": [{"name": "secret", "value": "only-in-storage"}]}).json()
    assert "only-in-storage" not in local.service.store.redis.hget(local.service.store.job_key(job["id"]), "spec")
    assert wait_done(client, job["id"])["stdout"] == "only-in-storage"


def test_stats_endpoint(api: tuple[LocalDcc, httpx.Client], test_image: str) -> None:
    _, client = api
    for code in (0, 0, 1):
        client.post("/v1/jobs", json={"fast": True, "image": test_image, "command": ["sh", "-c", f"exit {code}"]})
    stats = client.get("/v1/stats").json()
    assert stats["states"]["succeeded"] == 2 and stats["states"]["failed"] == 1
    assert stats["queues"]["cpu"]["jobs"] == 3 and stats["queues"]["cpu"]["runTime"]["p95"] > 0
    assert sum(stats["jobsPerWorker"].values()) == 3


def test_smoke_paths(settings: Settings, tmp_path: Path, test_image: str) -> None:
    with serve_local(tmp_path / "local", settings.with_(smoke_image=test_image), workers=1) as (local, client):
        smoke = client.get("/test/cpu")
        assert smoke.status_code == 200 and smoke.json()["stdout"] == "ok\n"
        ids = client.get("/test/cpu/3/0").json()["ids"]
        assert len(ids) == 3 and all(wait_done(client, i)["state"] == "succeeded" for i in ids)
        assert client.get("/test/gpu/2/1").json()["ids"] and client.get("/v1/queues").json()["queues"]["gpu"] == 2
        assert client.get("/test/cpu/0/1").status_code == 400 and client.get("/test/tpu/1/1").status_code == 400
        health = client.get("/test")
        assert health.status_code == 200 and "succeeded within" in health.json()["reason"]
    broken = settings.with_(smoke_image="dcc-no-such-image:1")
    local_redis = local.service.store.redis
    local_redis.flushall()
    with serve_local(tmp_path / "local2", broken, workers=1) as (_, client):
        health = client.get("/test")
        assert health.status_code == 503 and "error" in health.json()["reason"]
        smoke = client.get("/test/cpu")  # (its job ended in error: a monitor sees it in the status)
        assert smoke.status_code == 503 and smoke.json()["state"] == "error"


def test_a_reply_of_a_log_cut_at_the_limit_shows_its_end(settings: Settings, tmp_path: Path,
                                                          test_image: str) -> None:
    # 200,000 lines of ~70 bytes take ~28 MB in the engine's store, past 8 MiB: the start is gone, and what is
    # left (~3 MB) is more than a reply holds, so the reply's 1 MiB of stdout is its end, not a slice of its middle
    pad = "x" * 64
    with serve_local(tmp_path / "cut", settings.with_(max_log_bytes=8 << 20), workers=1) as (_, client):
        for body in ({"fast": True}, {"wait": True, "appendStdOut": True}):
            reply = client.post("/v1/jobs", json={"image": test_image, **body,
                                                  "command": ["sh", "-c", f"seq 200000 | sed 's/$/ {pad}/'"]})
            job = reply.json()
            assert job["state"] == "succeeded", job
            assert job["stdout"].startswith("[dcc: truncated]\n")
            assert job["stdout"].endswith(f"\n199999 {pad}\n200000 {pad}\n")
            assert len(job["stdout"].encode()) <= (1 << 20) + 20


def test_a_fast_job_that_writes_binary_gets_a_reply_that_fits_and_each_part_whole_on_its_own(
        api: tuple[LocalDcc, httpx.Client], test_image: str) -> None:
    from dcc.replies import REPLY_BUDGET, reply_bytes

    _, client = api
    # 1 MiB of control characters on stdout would take 7 MiB in a Lambda reply; a file of zeros goes as base64
    script = ("head -c 1048576 /dev/zero | tr '\\0' '\\1'; head -c 300000 /dev/zero > $OUTPUTS/zeros; "
              "printf 'caf\\303\\251 \\342\\202\\254' > $OUTPUTS/text.txt")
    reply = client.post("/v1/jobs", json={"fast": True, "image": test_image, "command": ["sh", "-c", script]})
    assert reply.status_code == 201, reply.text[:300]
    job = reply.json()
    assert job["state"] == "succeeded" and reply_bytes(job) <= REPLY_BUDGET
    assert job["outputFiles"]["zeros"]["encoding"] == "base64"
    assert base64.b64decode(job["outputFiles"]["zeros"]["content"]) == b"\0" * 300_000
    assert job["outputFiles"]["text.txt"] == {"encoding": "utf8", "content": "café €", "truncated": False}
    kept, note = job["stdout"].split("\n[dcc: ")
    assert 500_000 < len(kept) < (1 << 20) and set(kept) == {"\x01"} and "stdout serves it" in note
    assert client.get(f"/v1/jobs/{job['id']}/stdout").content == b"\x01" * (1 << 20)


def test_a_result_too_long_for_a_reply_comes_from_storage_whole(api: tuple[LocalDcc, httpx.Client],
                                                                test_image: str) -> None:
    from dcc.client import DccClient

    _, client = api
    reply = client.post("/v1/jobs", json={"wait": True, "appendStdOut": True, "image": test_image,
                                          "command": ["sh", "-c", "head -c 1048576 /dev/zero | tr '\\0' '\\1'"]})
    job = reply.json()
    assert job["state"] == "succeeded" and "GET /v1/jobs/" in job["stdout"]  # (the view: cut to fit)
    stored = client.get(f"/v1/jobs/{job['id']}/result")  # 7 MiB in a Lambda reply: a redirect (followed)
    assert [r.status_code for r in stored.history] == [302] and "/_files/" in str(stored.url)
    with DccClient(str(client.base_url)) as dcc:
        result = dcc.result(job["id"])
    assert result["stdout"] == "\x01" * (1 << 20) and result["attempts"] == 1
