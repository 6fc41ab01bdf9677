"""The WebSocket API Lambda and the pusher, with events from tests/events/, real Redis and a stubbed
API Gateway management client (botocore Stubber)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import pytest
from botocore.stub import Stubber

from dcc.bootstrap import build_service
from dcc.jobs import JobRecord, JobSpec, JobState, Outcome
from dcc.push import USAGE, WebsocketPusher
from dcc.settings import Settings
from dcc.store import JobStore
from functions.api import handler as api
from functions.api import websocket
from tests.lambda_events import event

pytestmark = pytest.mark.redis



@pytest.fixture
def wired(redis_url: str, tmp_path: Path) -> Iterator[tuple[WebsocketPusher, Stubber]]:
    service = build_service(Settings(redis_url=redis_url, storage_url=str(tmp_path / "storage")))
    api.configure(service)
    client = boto3.client("apigatewaymanagementapi", region_name="eu-west-1",
                          endpoint_url="https://ws123.execute-api.eu-west-1.amazonaws.com/prod",
                          aws_access_key_id="t", aws_secret_access_key="t")
    pusher = WebsocketPusher(service.store, client, find=lambda i: websocket._view(service, i))
    websocket.configure(pusher)
    with Stubber(client) as stub:
        yield pusher, stub
        stub.assert_no_pending_responses()
    websocket.configure(None)
    api.configure(None)


def _subscriptions(store: JobStore) -> list[str]:
    """The subscription keys left (not where the last push of each job stands, which expires by itself)."""
    return [k for k in store.redis.keys("{dcc}:ws:*") if not k.startswith("{dcc}:ws:sent:")]


def _queued(store: JobStore, job_id: str) -> None:
    store.create(JobRecord(id=job_id, spec=JobSpec(image="x"), state=JobState.QUEUED, queue="cpu",
                           submitted_at=time.time()), only_if_new=True)


def _subscribe(job_id: str) -> dict:
    """A subscribe event for ``job_id`` alone."""
    request = event("ws_subscribe", JOB_ID=job_id)
    request["body"] = json.dumps({"action": "subscribe", "jobIds": [job_id]})
    return request


def sent(stub_data: bytes) -> dict:
    return json.loads(stub_data)


def test_subscribe_sends_state_at_once_then_every_change(wired: tuple[WebsocketPusher, Stubber]) -> None:
    pusher, stub = wired
    store = pusher.store
    _queued(store, "job1")
    posted: list[tuple[str, dict]] = []
    original = pusher.client.post_to_connection

    def record(**kwargs: object) -> object:
        posted.append((str(kwargs["ConnectionId"]), sent(kwargs["Data"])))  # type: ignore[arg-type]
        return original(**kwargs)

    pusher.client.post_to_connection = record  # type: ignore[method-assign]
    for _ in range(2):
        stub.add_response("post_to_connection", {})
    assert websocket.lambda_handler(event("ws_connect"), None) == {"statusCode": 200}
    assert websocket.lambda_handler(event("ws_subscribe", JOB_ID="job1"), None) == {"statusCode": 200}
    assert posted[0] == ("Abc123=", {"type": "job", "job": store.get("job1").view()})
    assert posted[1] == ("Abc123=", {"type": "error", "jobId": "unknown-job", "error": "not found"})
    claim = store.claim("cpu", "w")
    stub.add_response("post_to_connection", {})
    assert pusher.push("job1") == 1 and posted[-1][1]["job"]["state"] == "running"
    store.finish(claim, Outcome(state=JobState.SUCCEEDED, exit_code=0))
    stub.add_response("post_to_connection", {})
    assert pusher.push("job1") == 1 and posted[-1][1]["job"]["state"] == "succeeded"
    assert websocket.lambda_handler(event("ws_disconnect"), None) == {"statusCode": 200}
    assert pusher.push("job1") == 0  # nobody watches any more: nothing is posted
    assert _subscriptions(store) == []


def test_gone_connections_are_dropped(wired: tuple[WebsocketPusher, Stubber]) -> None:
    pusher, stub = wired
    _queued(pusher.store, "job2")
    stub.add_response("post_to_connection", {})
    stub.add_response("post_to_connection", {})
    websocket.lambda_handler(event("ws_subscribe", JOB_ID="job2"), None)
    stub.add_client_error("post_to_connection", service_error_code="GoneException", http_status_code=410)
    assert pusher.push("job2") == 0
    assert _subscriptions(pusher.store) == []


def test_an_id_that_cannot_be_a_job_is_not_found_and_spoils_nothing(wired: tuple[WebsocketPusher, Stubber]) -> None:
    pusher, stub = wired
    _queued(pusher.store, "job3")
    posted: list[dict] = []
    original = pusher.client.post_to_connection

    def record(**kwargs: object) -> object:
        posted.append(sent(kwargs["Data"]))  # type: ignore[arg-type]
        return original(**kwargs)

    pusher.client.post_to_connection = record  # type: ignore[method-assign]
    for _ in range(3):
        stub.add_response("post_to_connection", {})
    request = event("ws_subscribe", JOB_ID="x")
    request["body"] = '{"action": "subscribe", "jobIds": ["../etc", "job3", 7]}'
    assert websocket.lambda_handler(request, None)["statusCode"] == 200
    assert [(m["type"], m.get("jobId") or m["job"]["id"], m.get("error")) for m in posted] == [
        ("job", "job3", None), ("error", "../etc", "not found"), ("error", 7, "not a job id: ids are strings")]
    assert pusher.store.redis.smembers("{dcc}:ws:conn:Abc123=") == {"job3"}


def _recorded(pusher: WebsocketPusher) -> list[tuple[str, dict]]:
    """What the pusher posts from now on (to no real connection)."""
    posted: list[tuple[str, dict]] = []

    def record(**kwargs: object) -> object:
        posted.append((str(kwargs["ConnectionId"]), sent(kwargs["Data"])))  # type: ignore[arg-type]
        return {}

    pusher.client.post_to_connection = record  # type: ignore[method-assign]
    return posted


def test_bad_subscribe_is_a_400_and_the_client_is_told_how(wired: tuple[WebsocketPusher, Stubber]) -> None:
    posted = _recorded(wired[0])
    bad = event("ws_subscribe", JOB_ID="x")
    for body in ("not json", "[1, 2]",
                 '{"action": "subscribe", "jobIds": "abc"}',  # not three jobs a, b and c
                 json.dumps({"action": "subscribe", "jobIds": [f"j{i}" for i in range(1001)]})):
        bad["body"] = body
        assert websocket.lambda_handler(bad, None)["statusCode"] == 400, body
    other = event("ws_subscribe", JOB_ID="x")  # a message no route takes comes to $default
    other["requestContext"]["routeKey"] = "$default"
    other["body"] = '{"action": "watch", "jobIds": ["x"]}'
    assert websocket.lambda_handler(other, None)["statusCode"] == 400
    assert [m for _, m in posted] == [{"type": "error", "error": USAGE}] * 5
    assert _subscriptions(wired[0].store) == []


def test_an_id_watched_before_its_job_is_submitted_is_pushed_from_queued(
        wired: tuple[WebsocketPusher, Stubber]) -> None:
    pusher, _ = wired
    posted = _recorded(pusher)
    subscribe = event("ws_subscribe", JOB_ID="mine-1")
    subscribe["body"] = '{"action": "subscribe", "jobIds": ["mine-1"]}'
    assert websocket.lambda_handler(subscribe, None)["statusCode"] == 200
    assert posted == [("Abc123=", {"type": "error", "jobId": "mine-1", "error": "not found"})]
    api.current_service().notify = pusher.push  # as bootstrap wires it when a websocket endpoint is set
    submit = event("submit_job")
    submit["body"] = json.dumps({**json.loads(submit["body"]), "id": "mine-1"})
    assert api.lambda_handler(submit, None)["statusCode"] == 201
    assert posted[1] == ("Abc123=", {"type": "job", "job": pusher.store.get("mine-1").view()})
    assert posted[1][1]["job"]["state"] == "queued"
    unsubscribe = event("ws_subscribe", JOB_ID="x")
    unsubscribe["requestContext"]["routeKey"] = "unsubscribe"
    unsubscribe["body"] = '{"action": "unsubscribe", "jobIds": ["mine-1"]}'
    assert websocket.lambda_handler(unsubscribe, None)["statusCode"] == 200
    assert pusher.push("mine-1") == 0 and len(posted) == 2
    assert _subscriptions(pusher.store) == []


def test_a_connection_watches_at_most_1000_jobs_across_its_messages(wired: tuple[WebsocketPusher, Stubber]) -> None:
    pusher, _ = wired
    posted = _recorded(pusher)
    subscribe = event("ws_subscribe", JOB_ID="x")
    subscribe["body"] = json.dumps({"action": "subscribe", "jobIds": [f"j{i}" for i in range(999)]})
    websocket.lambda_handler(subscribe, None)
    subscribe["body"] = json.dumps({"action": "subscribe", "jobIds": ["j5", "k1", "k2", "k3"]})  # (j5: watched)
    websocket.lambda_handler(subscribe, None)
    answers = [m for _, m in posted[999:]]
    assert [(a["jobId"], a["error"].split(":")[0]) for a in answers] == [
        ("j5", "not found"), ("k1", "not found"), ("k2", "not watched"), ("k3", "not watched")]
    assert pusher.store.redis.scard("{dcc}:ws:conn:Abc123=") == 1000


def test_a_push_never_sends_a_state_again_or_an_older_one_after_a_newer(wired: tuple[WebsocketPusher, Stubber]) -> None:
    pusher, _ = wired
    store = pusher.store
    _queued(store, "job4")
    posted = _recorded(pusher)
    subscribe = _subscribe("job4")
    websocket.lambda_handler(subscribe, None)
    views: dict[str, dict] = {"queued": store.get("job4").view()}
    claim = store.claim("cpu", "w")
    views["running"] = store.get("job4").view()
    # two changes close together, both pushed by whoever made them, each reading the view as it was then
    assert pusher.push("job4") == 1          # the claim's push reads `running`
    assert pusher.push("job4") == 0          # a second push of `running` (read after a later change): no repeat
    pusher.find = lambda job_id: views["queued"]  # a push that read the job before it was claimed, sent late
    assert pusher.push("job4") == 0
    pusher.find = lambda job_id: websocket._view(api.current_service(), job_id)
    store.finish(claim, Outcome(state=JobState.SUCCEEDED, exit_code=0))
    assert pusher.push("job4") == 1
    assert [m["job"]["state"] for _, m in posted] == ["queued", "running", "succeeded"]


def test_a_job_submitted_again_under_an_id_whose_record_expired_is_pushed_afresh(
        wired: tuple[WebsocketPusher, Stubber]) -> None:
    pusher, _ = wired
    store = pusher.store
    posted = _recorded(pusher)
    subscribe = _subscribe("nightly")
    websocket.lambda_handler(subscribe, None)

    def submit() -> None:
        _queued(store, "nightly")

    submit()
    assert pusher.push("nightly") == 1
    store.finish(store.claim("cpu", "w"), Outcome(state=JobState.SUCCEEDED, exit_code=0))
    assert pusher.push("nightly") == 1
    store.redis.delete(store.job_key("nightly"))  # its record expired; the id is used again
    submit()
    assert pusher.push("nightly") == 1
    assert [m.get("job", {}).get("state") for _, m in posted] == [None, "queued", "succeeded", "queued"]


def test_one_connection_s_trouble_does_not_cost_the_others_their_push(wired: tuple[WebsocketPusher, Stubber]) -> None:
    pusher, _ = wired
    store = pusher.store
    _queued(store, "job5")
    posted = _recorded(pusher)
    for connection in ("first=", "second="):
        subscribe = event("ws_subscribe", JOB_ID="job5")
        subscribe["requestContext"]["connectionId"] = connection
        subscribe["body"] = '{"action": "subscribe", "jobIds": ["job5"]}'
        websocket.lambda_handler(subscribe, None)
    recorded = pusher.client.post_to_connection

    def throttled(**kwargs: Any) -> object:
        if kwargs["ConnectionId"] == "first=":
            raise botocore.exceptions.ClientError({"Error": {"Code": "LimitExceededException"}}, "PostToConnection")
        return recorded(**kwargs)

    pusher.client.post_to_connection = throttled  # type: ignore[method-assign]
    store.claim("cpu", "w")
    assert pusher.push("job5") == 1
    assert posted[-1] == ("second=", {"type": "job", "job": store.get("job5").view()})


def _limited(pusher: WebsocketPusher) -> tuple[list[tuple[str, dict]], list[int]]:
    """What the pusher posts from now on, and each message's size, refused over 128 KB as API Gateway does."""
    sizes: list[int] = []
    posted = _recorded(pusher)
    recorded = pusher.client.post_to_connection

    def limited(**kwargs: Any) -> object:
        sizes.append(len(kwargs["Data"]))
        if len(kwargs["Data"]) > 128 * 1024:
            raise botocore.exceptions.ClientError({"Error": {"Code": "PayloadTooLargeException"}}, "PostToConnection")
        return recorded(**kwargs)

    pusher.client.post_to_connection = limited  # type: ignore[method-assign]
    return posted, sizes


def test_a_job_whose_view_is_over_a_websocket_message_s_limit_is_pushed_cut_to_fit(
        wired: tuple[WebsocketPusher, Stubber]) -> None:
    pusher, _ = wired
    store = pusher.store
    posted, sizes = _limited(pusher)
    stdout = "".join(f"line {i}\n" for i in range(40_000))  # 400 kB: a long log, asked for with the result
    names = [f"results/sample-{i:05d}/reads.filtered.bam" for i in range(4000)]  # 172 kB of output names
    final = {}
    for job_id, outcome in (("job6", Outcome(state=JobState.SUCCEEDED, exit_code=0, stdout=stdout)),
                            ("job7", Outcome(state=JobState.SUCCEEDED, exit_code=0, outputs=names))):
        _queued(store, job_id)
        websocket.lambda_handler(_subscribe(job_id), None)
        claim = store.claim("cpu", "w")
        assert claim is not None and claim.job.id == job_id
        store.finish(claim, outcome)
        assert pusher.push(job_id) == 1
        final[job_id] = posted[-1][1]["job"]
        assert final[job_id]["state"] == "succeeded" and max(sizes) <= 128 * 1024
    kept, note = final["job6"]["stdout"].split("\n[dcc: ")
    assert stdout.startswith(kept) and len(kept) > 100_000 and "GET /v1/jobs/job6/stdout serves it" in note
    listed = final["job7"]["outputs"]
    assert listed == names[:len(listed)] and final["job7"]["outputsNotListed"] == 4000 - len(listed)
