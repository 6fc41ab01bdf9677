"""Live status over a websocket in local mode, with a real websocket client."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from websockets.sync.client import connect

from dcc.settings import Settings
from tests.e2e_support import serve_local

pytestmark = [pytest.mark.redis, pytest.mark.docker]


def receive_until(ws, job_id: str, state: str, seen: list[str]) -> dict:  # type: ignore[no-untyped-def]
    while True:
        message = json.loads(ws.recv(timeout=30))
        if message["type"] == "job" and message["job"]["id"] == job_id:
            seen.append(message["job"]["state"])
            if message["job"]["state"] == state:
                return message["job"]


def test_websocket_streams_state_changes(redis_url: str, tmp_path: Path, docker_host: str, test_image: str) -> None:
    settings = Settings(redis_url=redis_url, storage_url=str(tmp_path / "storage"))
    with serve_local(tmp_path / "local", settings, workers=1) as (_, client):
        ws_url = str(client.base_url).replace("http://", "ws://") + "/v1/ws"
        busy = client.post("/v1/jobs", json={"image": test_image, "command": ["sleep", "1"]}).json()
        job = client.post("/v1/jobs", json={"image": test_image, "command": ["sh", "-c", "exit 4"]}).json()
        with connect(ws_url) as first, connect(ws_url) as second:
            for ws in (first, second):
                ws.send(json.dumps({"action": "subscribe", "jobIds": [job["id"]]}))
            seen: list[str] = []
            seen_by_second: list[str] = []
            done = receive_until(first, job["id"], "failed", seen)
            receive_until(second, job["id"], "failed", seen_by_second)
        assert seen[0] == "queued" and "running" in seen and seen[-1] == "failed"
        assert seen_by_second[-1] == "failed" and done["exitCode"] == 4
        # subscribing to a finished job answers with its final state at once; unknown ids say so
        with connect(ws_url) as late:
            late.send(json.dumps({"action": "subscribe", "jobIds": [busy["id"], job["id"], "no-such-job", "../x"]}))
            replies = [json.loads(late.recv(timeout=30)) for _ in range(4)]
            late.send("not json")
            assert "subscribe" in json.loads(late.recv(timeout=10))["error"]
            late.send(json.dumps({"action": "subscribe", "jobIds": busy["id"]}))  # a string, not a list
            assert "subscribe" in json.loads(late.recv(timeout=10))["error"]
            # past the limit of 1000 per connection (3 are watched): the rest are refused by name, not answered
            late.send(json.dumps({"action": "subscribe", "jobIds": [f"job-{i}" for i in range(1000)]}))
            answers = [json.loads(late.recv(timeout=30)) for _ in range(1000)]
            refused = [a["jobId"] for a in answers if "not watched" in a.get("error", "")]
            assert refused == ["job-997", "job-998", "job-999"]
        assert replies[1]["job"]["state"] == "failed"
        assert replies[2] == {"type": "error", "jobId": "no-such-job", "error": "not found"}
        assert replies[3] == {"type": "error", "jobId": "../x", "error": "not found"}  # not an id: one not found


def test_cli_wait_follows_the_websocket(redis_url: str, tmp_path: Path, docker_host: str, test_image: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from dcc.client import DccClient, DccClientError

    settings = Settings(redis_url=redis_url, storage_url=str(tmp_path / "storage"))
    with serve_local(tmp_path / "local", settings, workers=1) as (_, client):
        job = client.post("/v1/jobs", json={"image": test_image, "command": ["sleep", "1"]}).json()
        api = DccClient(str(client.base_url))
        polled: list[str] = []
        monkeypatch.setattr(api, "wait", lambda *a, **k: polled.append("poll"))  # long-poll must not be used
        states: list[str] = []
        done = api.wait_until_done(job["id"], on_change=lambda view: states.append(view["state"]))
        assert done["state"] == "succeeded" and states[-1] == "succeeded" and "running" in states
        assert polled == []
        # an id no job can have (longer than the server quotes back) is refused at once, not waited on for an hour
        refused: list[Exception] = []

        def wait_for_nothing() -> None:
            try:
                api.wait_until_done("x" * 257)
            except DccClientError as exc:
                refused.append(exc)

        waiting = threading.Thread(target=wait_for_nothing, daemon=True)
        waiting.start()
        waiting.join(timeout=20)
        assert not waiting.is_alive() and "is not a job id" in str(refused[0])


def test_unsubscribing_from_everything_leaves_the_server_free(redis_url: str, tmp_path: Path, docker_host: str,
                                                             test_image: str) -> None:
    settings = Settings(redis_url=redis_url, storage_url=str(tmp_path / "storage"))
    with serve_local(tmp_path / "local", settings, workers=1) as (_, client):
        ws_url = str(client.base_url).replace("http://", "ws://") + "/v1/ws"
        first = client.post("/v1/jobs", json={"image": test_image, "command": ["true"]}).json()
        with connect(ws_url) as ws:
            ws.send(json.dumps({"action": "subscribe", "jobIds": [first["id"]]}))
            receive_until(ws, first["id"], "succeeded", [])
            ws.send(json.dumps({"action": "unsubscribe", "jobIds": [first["id"]]}))
            time.sleep(0.5)  # (the listener hears the unsubscribe and has nothing left to watch)
            assert client.get("/healthz", timeout=10).status_code == 200  # the event loop is not spinning
            second = client.post("/v1/jobs", json={"image": test_image, "command": ["true"]}).json()
            ws.send(json.dumps({"action": "subscribe", "jobIds": [second["id"]]}))
            assert receive_until(ws, second["id"], "succeeded", [])["state"] == "succeeded"  # a new listener


def test_an_id_watched_before_its_job_is_submitted_is_sent_from_queued(
        redis_url: str, tmp_path: Path, docker_host: str, test_image: str) -> None:
    settings = Settings(redis_url=redis_url, storage_url=str(tmp_path / "storage"))
    with serve_local(tmp_path / "local", settings, workers=1) as (_, client):
        ws_url = str(client.base_url).replace("http://", "ws://") + "/v1/ws"
        busy = client.post("/v1/jobs", json={"image": test_image, "command": ["sleep", "2"]}).json()
        with connect(ws_url) as ws:
            ws.send(json.dumps({"action": "subscribe", "jobIds": ["mine-1"]}))
            assert json.loads(ws.recv(timeout=30)) == {"type": "error", "jobId": "mine-1", "error": "not found"}
            job = client.post("/v1/jobs", json={"image": test_image, "command": ["true"], "id": "mine-1"}).json()
            seen: list[str] = []
            receive_until(ws, "mine-1", "succeeded", seen)
        assert job["state"] == "queued" and seen[0] == "queued" and "running" in seen, seen
        assert client.get(f"/v1/jobs/{busy['id']}").json()["state"] == "succeeded"  # (it held the only slot)


def test_frames_that_are_not_a_subscription_are_answered_with_the_usage_and_the_connection_stays(
        redis_url: str, tmp_path: Path, docker_host: str, test_image: str) -> None:
    settings = Settings(redis_url=redis_url, storage_url=str(tmp_path / "storage"))
    with serve_local(tmp_path / "local", settings, workers=1) as (_, client):
        ws_url = str(client.base_url).replace("http://", "ws://") + "/v1/ws"
        job = client.post("/v1/jobs", json={"image": test_image, "command": ["true"]}).json()
        with connect(ws_url) as ws:
            for frame in (b'{"action": "subscribe", "jobIds": []}',  # a binary frame
                          "[" * 100_000 + "]" * 100_000,  # nested past what the parser takes
                          json.dumps({"action": "subscribe", "jobIds": [f"j{i}" for i in range(1001)]})):
                ws.send(frame)
                assert "send " in json.loads(ws.recv(timeout=10))["error"]
            ws.send(json.dumps({"action": "subscribe", "jobIds": [job["id"], job["id"], 7, None, job["id"]]}))
            answers = [json.loads(ws.recv(timeout=30)) for _ in range(3)]
            receive_until(ws, job["id"], "succeeded", [])  # (the connection still works)
        assert answers[0]["type"] == "job" and answers[0]["job"]["id"] == job["id"]  # once, though asked thrice
        assert answers[1:] == [{"type": "error", "jobId": value, "error": "not a job id: ids are strings"}
                               for value in (7, None)]
        assert client.get("/healthz").status_code == 200


def test_a_retried_job_is_sent_each_change_once_and_never_an_older_one(redis_url: str, tmp_path: Path,
                                                                      docker_host: str) -> None:
    settings = Settings(redis_url=redis_url, storage_url=str(tmp_path / "storage"))
    with serve_local(tmp_path / "local", settings, workers=1) as (_, client):
        ws_url = str(client.base_url).replace("http://", "ws://") + "/v1/ws"
        with connect(ws_url) as ws:
            ws.send(json.dumps({"action": "subscribe", "jobIds": ["retried"]}))
            assert json.loads(ws.recv(timeout=30))["error"] == "not found"
            # no registry answers here: each pull fails, and is retried up to the attempt limit
            client.post("/v1/jobs", json={"image": "registry.invalid/nothing:1", "id": "retried"})
            seen: list[tuple[int, str]] = []
            while not seen or seen[-1][1] != "error":
                view = json.loads(ws.recv(timeout=60))["job"]
                seen.append((view["attempts"], view["state"]))
        # (its `queued` may be overtaken by the claim before it is read: then the claim's state is sent instead)
        assert seen[0] in ((0, "queued"), (1, "running")) and seen[-1] == (3, "error"), seen
        assert {(2, "running"), (3, "running")} <= set(seen), seen
        assert len(set(seen)) == len(seen), seen  # no repeats
        rank = {"running": 1, "queued": 2, "error": 3}
        assert seen == sorted(seen, key=lambda s: (s[0], rank[s[1]])), seen  # never older after newer
