"""What survives: Redis dying mid-job, records expiring (result.json remains), S3 storage end to end."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest

from dcc.settings import Settings
from tests.conftest import RedisServer
from tests.e2e_support import serve_local, wait_done, wait_state

pytestmark = [pytest.mark.redis, pytest.mark.docker]


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own, to kill and start again."""
    redis = RedisServer(tmp_path / "redis")
    redis.dir.mkdir()
    redis.start()
    yield redis
    redis.stop()


def test_redis_dying_mid_job_loses_nothing(tmp_path: Path, docker_host: str, test_image: str,
                                           own_redis: RedisServer) -> None:
    redis = own_redis
    settings = Settings(redis_url=redis.url, storage_url=str(tmp_path / "storage"), lease_seconds=10.0)
    with serve_local(tmp_path / "local", settings, workers=1) as (_, client):
        running = client.post("/v1/jobs", json={"image": test_image, "command": ["sh", "-c", "sleep 3; echo ok"],
                                                "appendStdOut": True}).json()
        queued = client.post("/v1/jobs", json={"image": test_image, "command": ["echo", "second"],
                                               "appendStdOut": True}).json()
        wait_state(client, running["id"], "running")
        time.sleep(1.2)  # let the append-only file take the writes (appendfsync everysec)
        redis.stop(kill=True)
        assert client.get(f"/v1/jobs/{running['id']}").status_code == 503  # (no result yet: unavailable, not 404)
        time.sleep(3)  # the job ends while Redis is away; the worker keeps its report (and wrote result.json)
        # a finished job is served from its result.json while Redis is away: its state, logs and result
        away = client.get(f"/v1/jobs/{running['id']}")
        assert away.status_code == 200 and away.json()["state"] == "succeeded", away.text
        assert client.get(f"/v1/jobs/{running['id']}/stdout").text == "ok\n"
        assert client.get(f"/v1/jobs/{running['id']}/result").json()["exitCode"] == 0
        assert client.get(f"/v1/jobs/{running['id']}/wait", params={"timeout": 1}).json()["state"] == "succeeded"
        redis.start_on_same_port()
        first = wait_done(client, running["id"], timeout=60)
        second = wait_done(client, queued["id"], timeout=60)
    assert (first["state"], first["stdout"], first["attempts"]) == ("succeeded", "ok\n", 1)
    assert (second["state"], second["stdout"]) == ("succeeded", "second\n")


@pytest.mark.parametrize("outage", ["restart", "hang"])
def test_a_redis_outage_longer_than_a_lease_costs_running_jobs_nothing(tmp_path: Path, docker_host: str,
                                                                       test_image: str, own_redis: RedisServer,
                                                                       outage: str) -> None:
    redis = own_redis
    settings = Settings(redis_url=redis.url, storage_url=str(tmp_path / "storage"), lease_seconds=3.0)
    with serve_local(tmp_path / "local", settings, workers=1) as (_, client):
        job = client.post("/v1/jobs", json={"image": test_image, "command": ["sh", "-c", "sleep 10; echo ok"],
                                            "appendStdOut": True}).json()
        wait_state(client, job["id"], "running")
        time.sleep(1.2)  # (appendfsync everysec)
        if outage == "restart":
            redis.stop(kill=True)
            time.sleep(6)  # twice the lease: no worker can renew meanwhile
            redis.start_on_same_port()
        else:  # Redis hangs, as one failing over or cut off does: no restart, and its uptime runs on
            assert redis.proc is not None
            redis.proc.send_signal(signal.SIGSTOP)
            try:
                time.sleep(6)
            finally:
                redis.proc.send_signal(signal.SIGCONT)
        done = wait_done(client, job["id"], timeout=60)
    # the leases that lapsed while Redis was away were renewed, not reaped (the reaper, which may reach Redis before
    # the worker does, held back after a restart or a silence of every worker): the job ran once, to its end
    assert (done["state"], done["stdout"], done["attempts"]) == ("succeeded", "ok\n", 1), done


def test_leases_that_lapse_while_redis_is_away_are_renewed_not_reaped(own_redis: RedisServer) -> None:
    from dcc.jobs import JobRecord, JobSpec, JobState
    from dcc.store import JobStore, connect

    redis = own_redis
    store = JobStore(connect(redis.url), lease_seconds=2.0)
    store.create(JobRecord(id="j1", spec=JobSpec(image="x"), state=JobState.QUEUED, queue="cpu",
                           submitted_at=time.time()), only_if_new=False)
    claim = store.claim("cpu", "w1")
    assert claim is not None
    time.sleep(1.2)  # (appendfsync everysec)
    redis.stop(kill=True)
    time.sleep(3)  # the lease lapses while no worker can renew it
    redis.start_on_same_port()
    assert store.reap() == {}  # a lease after the restart: the worker has not had its chance yet
    assert store.renew([("j1", claim.attempt)]) == {("j1", claim.attempt): "held"}
    later = JobStore(connect(redis.url), lease_seconds=2.0, restart_grace_seconds=0)
    assert later.reap() == {}  # renewed: nothing to take back even without the grace
    assert store.drop_worker("w1") == {"j1": JobState.QUEUED}  # a worker known to be sick: at once


def test_expired_record_is_served_from_result_json(redis_url: str, tmp_path: Path, docker_host: str,
                                                    test_image: str) -> None:
    settings = Settings(redis_url=redis_url, storage_url=str(tmp_path / "storage"), retention_seconds=1)
    with serve_local(tmp_path / "local", settings, workers=1) as (local, client):
        job = client.post("/v1/jobs", json={"id": "keep-me", "image": test_image,
                                            "command": ["sh", "-c", "echo kept > $OUTPUTS/o"]}).json()
        done = wait_done(client, job["id"])
        deadline = time.monotonic() + 10
        while local.service.store.get("keep-me") is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert local.service.store.get("keep-me") is None  # the Redis record expired
        again = client.get("/v1/jobs/keep-me").json()
        assert (again["state"], again["outputs"], again["exitCode"]) == ("succeeded", ["o"], 0)
        assert again["timings"] == done["timings"]
        assert client.get("/v1/jobs/keep-me/outputs/o").content == b"kept\n"
        # its id stays taken: a resubmission returns the finished job instead of running a second one
        reply = client.post("/v1/jobs", json={"id": "keep-me", "image": test_image, "command": ["false"]})
        assert reply.status_code == 200 and reply.json()["state"] == "succeeded"


def test_a_job_cancelled_while_queued_is_served_from_result_json_too(redis_url: str, tmp_path: Path) -> None:
    settings = Settings(redis_url=redis_url, storage_url=str(tmp_path / "storage"), retention_seconds=1,
                        disable_worker=True)  # (nothing runs: the job stays queued)
    with serve_local(tmp_path / "local", settings) as (local, client):
        job = client.post("/v1/jobs", json={"id": "never-ran", "image": "dcc-busybox:latest"}).json()
        assert client.post(f"/v1/jobs/{job['id']}/cancel").json()["state"] == "cancelled"
        deadline = time.monotonic() + 10
        while local.service.store.get("never-ran") is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert local.service.store.get("never-ran") is None  # the Redis record expired
        again = client.get("/v1/jobs/never-ran")
        assert again.status_code == 200 and again.json()["state"] == "cancelled"


def test_jobs_on_s3_storage(redis_url: str, tmp_path: Path, docker_host: str, test_image: str, moto_s3: str) -> None:
    settings = Settings(redis_url=redis_url, storage_url="s3://dcc-data/env1")
    with serve_local(tmp_path / "local", settings, workers=1) as (_, client):
        job = client.post("/v1/jobs", json={"image": test_image, "inputs": [{"name": "in/x", "value": "s3 input"}],
                                            "command": ["sh", "-c", "cp /inputs/in/x $OUTPUTS/copy; echo hi"]}).json()
        done = wait_done(client, job["id"])
        assert done["state"] == "succeeded" and done["outputs"] == ["copy"]
        reply = client.get(f"/v1/jobs/{job['id']}/outputs/copy", follow_redirects=False)
        assert reply.status_code == 302 and reply.headers["location"].startswith(moto_s3)
        assert httpx.get(reply.headers["location"]).content == b"s3 input"
        assert client.get(f"/v1/jobs/{job['id']}/stdout").text == "hi\n"
    keys = {o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="dcc-data")["Contents"]}
    prefix = f"env1/jobs/{job['id']}/"
    run = prefix + "attempt-1/"  # (each attempt's files apart: a late one cannot overwrite the one that counts)
    assert {prefix + "result.json", run + "stdout", run + "stderr", run + "outputs/copy"} <= keys
    assert os.environ["AWS_ENDPOINT_URL"] == moto_s3
    assert threading.active_count() > 0


def test_waiting_clients_see_the_end_of_a_job_across_a_redis_restart(tmp_path: Path, docker_host: str,
                                                                     test_image: str, own_redis: RedisServer) -> None:
    from websockets.sync.client import connect

    from tests.test_live import receive_until

    settings = Settings(redis_url=own_redis.url, storage_url=str(tmp_path / "storage"), lease_seconds=10.0)
    with serve_local(tmp_path / "local", settings, workers=1) as (_, client):
        ws_url = str(client.base_url).replace("http://", "ws://") + "/v1/ws"
        job = client.post("/v1/jobs", json={"image": test_image, "command": ["sleep", "5"]}).json()
        with connect(ws_url) as ws:
            ws.send(f'{{"action": "subscribe", "jobIds": ["{job["id"]}"]}}')
            seen: list[str] = []
            receive_until(ws, job["id"], "running", seen)
            time.sleep(1.2)  # (appendfsync everysec)
            own_redis.stop(kill=True)
            time.sleep(1)
            own_redis.start_on_same_port()
            # the job's end reaches the socket: the server subscribed again when Redis came back
            assert receive_until(ws, job["id"], "succeeded", seen)["state"] == "succeeded"
        # a fast job whose wait Redis interrupts is answered with the job, not 503: it exists, and runs
        reply: dict[str, httpx.Response] = {}
        fast = threading.Thread(target=lambda: reply.setdefault("r", client.post("/v1/jobs", json={
            "image": test_image, "command": ["sleep", "4"], "fast": True, "id": "fast-through-a-restart"})))
        fast.start()
        time.sleep(1.5)
        own_redis.stop(kill=True)
        time.sleep(1)
        own_redis.start_on_same_port()
        fast.join(60)
        assert reply["r"].status_code in (201, 202), reply["r"].text  # (201: the wait outlasted the restart)
        assert wait_done(client, "fast-through-a-restart", timeout=60)["state"] == "succeeded"


def test_a_long_poll_answers_with_the_state_at_its_timeout(redis_url: str, tmp_path: Path, docker_host: str,
                                                           test_image: str) -> None:
    settings = Settings(redis_url=redis_url, storage_url=str(tmp_path / "storage"))
    with serve_local(tmp_path / "local", settings, workers=1) as (_, client):
        client.post("/v1/jobs", json={"image": test_image, "command": ["sleep", "1"]})  # holds the only slot
        later = client.post("/v1/jobs", json={"image": test_image, "command": ["sleep", "8"]}).json()
        assert later["state"] == "queued"
        reply = client.get(f"/v1/jobs/{later['id']}/wait", params={"timeout": 4})
        assert (reply.status_code, reply.json()["state"]) == (200, "running")  # not as it was when the wait began


def test_the_files_of_a_job_run_before_attempts_kept_their_own_are_still_served(redis_url: str,
                                                                               tmp_path: Path) -> None:
    from dcc.bootstrap import build_service
    from dcc.jobs import JobSpec, JobState, Outcome

    service = build_service(Settings(redis_url=redis_url, storage_url=str(tmp_path / "storage")))
    job_id = service.submit(JobSpec(image="x"))[0].id
    claim = service.store.claim("cpu", "old-worker")
    assert claim is not None
    for name, data in (("stdout", b"old out\n"), ("outputs/a.txt", b"A")):  # where workers before kept them
        service.storage.put_bytes(f"jobs/{job_id}/{name}", data)
    service.store.finish(claim, Outcome(state=JobState.SUCCEEDED, exit_code=0, outputs=["a.txt"]))
    assert service.log(job_id, "stdout").data == b"old out\n"
    assert service.output(job_id, "a.txt").data == b"A"
    service.storage.put_bytes(f"jobs/{job_id}/attempt-1/stdout", b"new out\n")  # the attempt's own comes first
    assert service.log(job_id, "stdout").data == b"new out\n"


def test_local_mode_s_redis_does_not_take_another_server_on_its_port_for_its_own(redis_server: RedisServer,
                                                                                 tmp_path: Path) -> None:
    from dcc.errors import DccError
    from dcc.local import RedisProcess

    own = RedisProcess(tmp_path / "redis")
    taken = int(redis_server.url.rsplit(":", 1)[1].split("/")[0])  # (another Redis answers there)
    with pytest.raises(DccError, match=f"did not start on port {taken}"):
        own.start(port=taken)
    assert own.proc is not None and own.proc.poll() is not None  # ours could not listen, and ended
