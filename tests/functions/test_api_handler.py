"""The API Lambda handler called with API Gateway REST proxy events from tests/events/, on moto S3 and real Redis."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from dcc.bootstrap import build_service
from dcc.settings import Settings
from functions.api import handler
from tests.lambda_events import event

pytestmark = pytest.mark.redis



@pytest.fixture
def s3_service(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "eu-west-1"}.items():
        monkeypatch.setenv(k, v)
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket="dcc-jobs",
                                         CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        settings = Settings(redis_url=redis_url, storage_url="s3://dcc-jobs/data")
        handler.configure(build_service(settings))
        yield settings
        handler.configure(None)


def test_submit_then_get_through_lambda_events(s3_service: Settings) -> None:
    reply = handler.lambda_handler(event("submit_job"), None)
    assert reply["statusCode"] == 201, reply
    job = json.loads(reply["body"])
    assert job["state"] == "queued" and job["meta"] == {"via": "apigw"}
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="dcc-jobs")["Contents"]]
    assert len(keys) == 1 and keys[0].startswith(f"data/jobs/{job['id']}/inputs/") and keys[0].endswith("/in.txt")
    got = handler.lambda_handler(event("get_job", JOB_ID=job["id"]), None)
    assert got["statusCode"] == 200 and json.loads(got["body"])["id"] == job["id"]


def test_bad_input_event_is_a_400_and_writes_nothing(s3_service: Settings) -> None:
    reply = handler.lambda_handler(event("submit_bad_input"), None)
    assert reply["statusCode"] == 400
    assert "inputs.0.name" in json.loads(reply["body"])["error"]
    assert "Contents" not in boto3.client("s3").list_objects_v2(Bucket="dcc-jobs")


def test_unknown_job_event_is_404(s3_service: Settings) -> None:
    reply = handler.lambda_handler(event("get_job", JOB_ID="does-not-exist"), None)
    assert reply["statusCode"] == 404 and "not found" in json.loads(reply["body"])["error"]


def test_openapi_document_lists_the_routes(s3_service: Settings) -> None:
    reply = handler.lambda_handler(event("get_job", JOB_ID="x", **{"/v1/jobs/x": "/openapi.json"}), None)
    doc = json.loads(reply["body"])
    assert reply["statusCode"] == 200
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/cancel"} <= set(doc["paths"])
    # errors are declared as they are sent: a 400 in our shape, not Powertools' 422
    operations = [op for ops in doc["paths"].values() for op in ops.values()]
    assert operations and all("422" not in op["responses"] for op in operations)
    assert all(op["responses"]["400"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
               for op in operations)
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    # the outputs route names its path parameter; each route declares the errors and redirects it sends
    output = doc["paths"]["/v1/jobs/{job_id}/outputs/{path}"]["get"]
    assert {p["name"] for p in output["parameters"]} == {"job_id", "path"}
    assert {"302", "404", "409"} <= set(output["responses"]) and not any(".+" in p for p in doc["paths"])
    assert {"201", "202", "400", "413", "415"} <= set(doc["paths"]["/v1/jobs"]["post"]["responses"])
    assert "404" in doc["paths"]["/v1/jobs/{job_id}"]["get"]["responses"]
    assert {"302", "409"} <= set(doc["paths"]["/v1/jobs/{job_id}/result"]["get"]["responses"])
    bad = _post("/v1/jobs", '{"image": 5}')
    assert bad["statusCode"] == 400
    sent = json.loads(bad["body"])
    schema = doc["components"]["schemas"]["Error"]
    assert set(schema["required"]) <= set(sent) <= set(schema["properties"]), sent


def _post(path: str, body: str, *, b64: bool = False) -> dict:
    import base64

    ev = event("submit_job")
    ev["path"] = ev["requestContext"]["path"] = path
    ev["body"], ev["isBase64Encoded"] = (base64.b64encode(body.encode("latin-1")).decode(), True) if b64 else (body,
                                                                                                             False)
    return handler.lambda_handler(ev, None)


@pytest.mark.parametrize("path", ["/v1/jobs", "/ga4gh/tes/v1/tasks"])
def test_bodies_json_cannot_carry_safely_are_400s_and_write_nothing(s3_service: Settings, path: str) -> None:
    tes = path.startswith("/ga4gh")
    task = '{"executors":[{"image":"x","command":["echo","\\ud800"]}]}'
    for body, b64, said in (
        ('{"image":"\xff\xfe"}', True, "not valid"),  # (UTF-8 / JSON)
        ("[" * 100_000 + "]" * 100_000, False, "nests too deeply"),
        ('{"image":"x","parameters":{"maxDuration":' + "9" * 5000 + "}}", False,
         "not valid JSON" if tes else "too many digits"),
        (task if tes else '{"image":"x","command":["echo","\\ud800"]}', False, "not valid Unicode"),
    ):
        reply = _post(path, body, b64=b64)
        assert reply["statusCode"] == 400 and said in json.loads(reply["body"])["error"], (body[:40], reply)
    assert "Contents" not in boto3.client("s3").list_objects_v2(Bucket="dcc-jobs")
    assert handler.current_service().store.redis.keys("{dcc}:job:*") == []


def test_a_bug_is_a_json_500_not_a_crash(s3_service: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("oops")

    monkeypatch.setattr(handler.current_service(), "get", broken)
    reply = handler.lambda_handler(event("get_job", JOB_ID="abc"), None)
    assert reply["statusCode"] == 500 and "KeyError" in json.loads(reply["body"])["error"]


def test_unknown_routes_and_bad_page_tokens_say_what_is_wrong_in_json(s3_service: Settings) -> None:
    reply = handler.lambda_handler(event("get_job", JOB_ID="x", **{"/v1/jobs/x": "/v2/nothing"}), None)
    assert reply["statusCode"] == 404 and json.loads(reply["body"])["error"] == "no such route: GET /v2/nothing"
    ev = event("get_job", JOB_ID="x", **{"/v1/jobs/x": "/ga4gh/tes/v1/tasks"})
    ev["queryStringParameters"] = {"page_token": "garbage"}
    ev["multiValueQueryStringParameters"] = {"page_token": ["garbage"]}
    reply = handler.lambda_handler(ev, None)
    assert reply["statusCode"] == 400 and json.loads(reply["body"])["error"].startswith("page_token:")


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("DELETE", "/v1/jobs/abc", "GET, HEAD"),
    ("PUT", "/v1/jobs", "GET, HEAD, POST"),
    ("GET", "/v1/jobs/abc/cancel", "POST"),
    ("DELETE", "/ga4gh/tes/v1/tasks", "GET, HEAD, POST"),
    ("POST", "/test/cpu", "GET"),  # (a HEAD there would run a job)
])
def test_a_route_asked_with_a_method_it_does_not_take_is_a_405_naming_the_ones_it_does(
        s3_service: Settings, method: str, path: str, allowed: str) -> None:
    ev = event("get_job", JOB_ID="abc", **{"/v1/jobs/abc": path})
    ev["httpMethod"] = ev["requestContext"]["httpMethod"] = method
    reply = handler.lambda_handler(ev, None)
    assert reply["statusCode"] == 405, reply
    assert reply["multiValueHeaders"]["Allow"] == [allowed]
    assert json.loads(reply["body"])["error"] == f"{method} is not allowed on {path}; use {allowed}"
    assert handler.current_service().store.redis.keys("{dcc}:job:*") == []


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_a_body_that_is_not_json_is_a_415_in_our_shape(s3_service: Settings, content_type: str) -> None:
    ev = event("submit_job")  # (its JSON body, labelled as something else: curl -d does this)
    ev["headers"] = {**ev["headers"], "Content-Type": content_type}
    ev["multiValueHeaders"] = {**ev["multiValueHeaders"], "Content-Type": [content_type]}
    reply = handler.lambda_handler(ev, None)
    assert reply["statusCode"] == 415 and "application/json" in json.loads(reply["body"])["error"]
    assert handler.current_service().store.redis.keys("{dcc}:job:*") == []


@pytest.mark.parametrize(("path", "name"), [("/v1/stats", "window"), ("/v1/jobs/x/wait", "timeout")])
def test_a_number_that_is_not_finite_in_a_query_says_so(s3_service: Settings, path: str, name: str) -> None:
    ev = event("get_job", JOB_ID="x", **{"/v1/jobs/x": path})
    ev["queryStringParameters"] = {name: "nan"}
    ev["multiValueQueryStringParameters"] = {name: ["nan"]}
    reply = handler.lambda_handler(ev, None)
    error = json.loads(reply["body"])["error"]
    assert reply["statusCode"] == 400 and error.startswith(f"{name}:") and "finite" in error, error


def _headers(reply: dict) -> dict[str, str]:
    """A reply's headers, one value each, as API Gateway merges ``headers`` and ``multiValueHeaders``."""
    merged = dict(reply.get("headers") or {})
    merged.update({k: ", ".join(v) for k, v in (reply.get("multiValueHeaders") or {}).items()})
    return merged


def _asked(method: str, path: str) -> dict:
    ev = event("get_job", JOB_ID="x", **{"/v1/jobs/x": path})
    ev["httpMethod"] = ev["requestContext"]["httpMethod"] = method
    return handler.lambda_handler(ev, None)


def test_head_answers_as_get_without_the_body(s3_service: Settings) -> None:
    from dcc.jobs import JobState, Outcome
    from dcc.storage import attempt_prefix

    service = build_service(s3_service)
    job = json.loads(handler.lambda_handler(event("submit_job"), None)["body"])["id"]
    claim = service.store.claim("cpu", "w1")
    assert claim is not None
    service.storage.put_bytes(f"{attempt_prefix(job, 1)}stderr", b"\x00\xff\xfe\x80")  # (a reply in base64)
    assert service.store.finish(claim, Outcome(state=JobState.SUCCEEDED, exit_code=0))
    for path in ("/healthz", f"/v1/jobs/{job}", f"/v1/jobs/{job}/stderr", "/v1/jobs/nope", "/openapi.json"):
        got, head = _asked("GET", path), _asked("HEAD", path)
        body = base64.b64decode(got["body"]) if got["isBase64Encoded"] else got["body"].encode()
        assert (head["statusCode"], head["body"]) == (got["statusCode"], ""), path
        # the same headers as the GET's, and the length of the GET's body (decoded, when it came in base64)
        assert _headers(head) == {**_headers(got), "Content-Length": str(len(body))}, path
    assert _asked("GET", f"/v1/jobs/{job}/stderr")["isBase64Encoded"]
    assert _headers(_asked("HEAD", f"/v1/jobs/{job}/stderr"))["Content-Length"] == "4"  # (not its base64's 8)
    assert _asked("HEAD", "/v1/jobs/nope")["statusCode"] == 404


@pytest.mark.parametrize("path", ["/test/cpu", "/test/gpu", "/test/cpu/3/1", "/test/gpu/1/0", "/test"])
def test_head_on_a_route_that_runs_jobs_is_a_405_and_queues_nothing(s3_service: Settings, path: str) -> None:
    reply = _asked("HEAD", path)
    headers = _headers(reply)
    assert (reply["statusCode"], headers["Allow"], headers["Content-Type"]) == (405, "GET", "application/json")
    assert json.loads(reply["body"]) == {"error": f"HEAD is not allowed on {path}: it would run jobs, as a GET "
                                                  "there does; use GET"}
    assert headers["Content-Length"] == str(len(reply["body"].encode()))
    store = handler.current_service().store
    assert store.queue_depths() == {"queues": {"cpu": 0, "gpu": 0}, "running": 0}
    assert store.redis.keys("{dcc}:job:*") == []
    assert _asked("POST", path)["statusCode"] == 405 and _headers(_asked("POST", path))["Allow"] == "GET"


@pytest.mark.parametrize(("path", "name", "value"), [
    ("/ga4gh/tes/v1/tasks", "page_size", "\u00b2"),  # a digit to str.isdigit, not to int()
    ("/ga4gh/tes/v1/tasks", "page_size", "--5"),
    ("/ga4gh/tes/v1/tasks", "page_token", "W1tb" * 400),  # base64 of "[[[...": a parser's recursion limit
    ("/v1/jobs", "cursor", "W1tb" * 400),
    ("/v1/jobs", "cursor", base64.urlsafe_b64encode(b"[" + b"9" * 400 + b', "a"]').decode()),  # (no float holds it)
])
def test_odd_paging_values_are_400s_not_500s(s3_service: Settings, path: str, name: str, value: str) -> None:
    ev = event("get_job", JOB_ID="x", **{"/v1/jobs/x": path})
    ev["queryStringParameters"] = {name: value}
    ev["multiValueQueryStringParameters"] = {name: [value]}
    reply = handler.lambda_handler(ev, None)
    assert reply["statusCode"] == 400 and json.loads(reply["body"])["error"].startswith(name), reply


def test_odd_events_get_a_4xx_saying_what_is_wrong(s3_service: Settings) -> None:
    bad64 = event("submit_job")
    bad64["body"], bad64["isBase64Encoded"] = "not base64 at all!", True
    reply = handler.lambda_handler(bad64, None)
    assert reply["statusCode"] == 400 and "base64" in json.loads(reply["body"])["error"]
    shouted = event("submit_job")  # media types are case-insensitive
    shouted["headers"] = {**shouted["headers"], "Content-Type": "APPLICATION/JSON"}
    shouted["multiValueHeaders"] = {**shouted["multiValueHeaders"], "Content-Type": ["APPLICATION/JSON"]}
    assert handler.lambda_handler(shouted, None)["statusCode"] == 201
    headless = event("submit_job")
    del headless["httpMethod"]
    reply = handler.lambda_handler(headless, None)
    assert reply["statusCode"] == 400 and "httpMethod" in json.loads(reply["body"])["error"]


def test_a_log_too_long_for_a_lambda_reply_is_a_redirect_to_storage(s3_service: Settings) -> None:
    from dcc.jobs import JobState, Outcome
    from dcc.service import LOG_REPLY_BYTES
    from dcc.storage import attempt_prefix

    service = build_service(s3_service)
    job = json.loads(handler.lambda_handler(event("submit_job"), None)["body"])["id"]
    claim = service.store.claim("cpu", "w1")
    assert claim is not None and claim.job.id == job
    service.storage.put_bytes(f"{attempt_prefix(job, 1)}stdout", b"x" * (LOG_REPLY_BYTES + 1))
    service.storage.put_bytes(f"{attempt_prefix(job, 1)}stderr", b"e" * LOG_REPLY_BYTES)
    assert service.store.finish(claim, Outcome(state=JobState.SUCCEEDED, exit_code=0))

    def get(stream: str) -> dict:
        return handler.lambda_handler(event("get_job", JOB_ID=job, **{f"/v1/jobs/{job}": f"/v1/jobs/{job}/{stream}"}),
                                      None)

    # a log a reply can carry comes in it (base64: API Gateway decodes it, its binary media types being */*)
    small = get("stderr")
    assert small["statusCode"] == 200 and small["isBase64Encoded"]
    assert base64.b64decode(small["body"]) == b"e" * LOG_REPLY_BYTES
    assert len(json.dumps(small)) < 6 * 1024 * 1024                       # what a Lambda reply may hold
    # a longer one is a redirect to a presigned URL of the object
    big = get("stdout")
    assert big["statusCode"] == 302 and big["body"] == ""
    location = big["multiValueHeaders"]["Location"][0] if "multiValueHeaders" in big else big["headers"]["Location"]
    assert f"/data/jobs/{job}/attempt-1/stdout?" in location and "X-Amz-Signature" in location


def test_local_mode_sends_bodies_as_the_deployed_api_does_in_base64(s3_service: Settings) -> None:
    from dcc.local import proxy_event

    body = json.dumps({"image": "busybox", "command": ["echo", "é"]}).encode()
    sent = proxy_event(method="POST", path="/v1/jobs", query=[], headers={"content-type": "application/json"},
                       body=body)
    assert sent["isBase64Encoded"] is True and base64.b64decode(sent["body"]) == body  # (binary media types */*)
    reply = handler.lambda_handler(sent, None)
    assert reply["statusCode"] == 201 and json.loads(reply["body"])["command"] == ["echo", "é"]
    empty = proxy_event(method="GET", path="/v1/workers", query=[], headers={}, body=b"")
    assert (empty["body"], empty["isBase64Encoded"]) == (None, False)


def test_the_largest_submit_aws_takes_fits_lambda_s_request_payload(redis_url: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from stacks.dcc_stack import INLINE_INPUT_BYTES  # (what the stack sets DCC_MAX_INLINE_BYTES to)

    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "eu-west-1"}.items():
        monkeypatch.setenv(k, v)
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket="dcc-jobs",
                                         CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        settings = Settings(redis_url=redis_url, storage_url="s3://dcc-jobs/data", max_inline_bytes=INLINE_INPUT_BYTES)
        handler.configure(build_service(settings))
        try:
            def submit(size: int) -> tuple[dict, int]:
                spec = {"image": "x", "inputs": [{"name": "in.bin", "encoding": "base64",
                                                  "value": base64.b64encode(b"\xff" * size).decode()}],
                        "meta": "m" * (settings.max_spec_bytes - 200)}  # (the description near its own limit)
                body = json.dumps(spec).encode()
                # as API Gateway sends it: the body in base64 (binary media types */*)
                sent = event("submit_job")
                sent.update(body=base64.b64encode(body).decode(), isBase64Encoded=True)
                return sent, handler.lambda_handler(sent, None)["statusCode"]

            largest, status = submit(INLINE_INPUT_BYTES)
            size = len(json.dumps(largest).encode())
            assert status == 201 and size < 6_000_000, size  # Lambda's 6 MB request payload
            assert submit(INLINE_INPUT_BYTES + 1)[1] == 413
        finally:
            handler.configure(None)


def test_a_long_log_where_storage_has_no_links_is_returned_whole(redis_url: str, tmp_path: Any) -> None:
    from dcc.jobs import JobSpec, JobState, Outcome
    from dcc.service import LOG_REPLY_BYTES
    from dcc.storage import attempt_prefix

    service = build_service(Settings(redis_url=redis_url, storage_url=str(tmp_path / "s")))  # (no signed links)
    job = service.submit(JobSpec(image="x"))[0].id
    claim = service.store.claim("cpu", "w1")
    assert claim is not None
    log = bytes(range(256)) * (LOG_REPLY_BYTES // 256) + b"tail"
    service.storage.put_bytes(f"{attempt_prefix(job, 1)}stdout", log)
    assert service.store.finish(claim, Outcome(state=JobState.SUCCEEDED, exit_code=0))
    got = service.log(job, "stdout")
    assert got.url is None and got.data == log


def _ended_with(service: Any, outcome: Any, **spec: Any) -> str:
    """A job (of ``spec``) claimed and finished with ``outcome``; its id."""
    from dcc.jobs import JobSpec

    record, _ = service.submit(JobSpec(image="x", **spec))
    claim = service.store.claim(record.queue, "w1")
    assert claim is not None and claim.job.id == record.id
    assert service.store.finish(claim, outcome)
    return str(record.id)


def _lambda_size(reply: dict) -> int:
    """What the runtime sends of a reply (its JSON; Python 3.12's runtime leaves non-ASCII unescaped)."""
    return len(json.dumps(reply, ensure_ascii=False).encode())


def test_a_view_whose_logs_json_escapes_blow_up_still_fits_a_lambda_reply(s3_service: Settings) -> None:
    from dcc.jobs import JobState, Outcome
    from dcc.replies import LAMBDA_REPLY_BYTES

    service = build_service(s3_service)
    # a fast job that wrote binary to stdout: 1 MiB of control characters takes 7 MiB in a reply
    binary = "\x01" * (1 << 20)
    job = _ended_with(service, Outcome(state=JobState.SUCCEEDED, exit_code=0, stdout="head\n" + binary,
                                       stderr="\x02" * (1 << 20), inline_outputs={"o": {
                                           "encoding": "utf8", "content": "\x00" * (1 << 20), "truncated": False}},
                                       outputs=["o"]), fast=True)
    for path in (f"/v1/jobs/{job}", f"/v1/jobs/{job}/wait", f"/v1/jobs/{job}/result", "/v1/jobs"):
        reply = handler.lambda_handler(event("get_job", JOB_ID=job, **{f"/v1/jobs/{job}": path}), None)
        assert reply["statusCode"] == 200 and _lambda_size(reply) <= LAMBDA_REPLY_BYTES, (path, _lambda_size(reply))
        body = json.loads(reply["body"])
        shown = body["jobs"][0] if path == "/v1/jobs" else body
        assert shown["stdout"].startswith("head\n\x01") and f"GET /v1/jobs/{job}/stdout serves it" in shown["stdout"]
        assert shown["outputFiles"]["o"]["omitted"]
    # each part in full on its own
    stdout = handler.lambda_handler(event("get_job", JOB_ID=job, **{f"/v1/jobs/{job}": f"/v1/jobs/{job}/stdout"}),
                                    None)
    assert base64.b64decode(stdout["body"]).decode() == "head\n" + binary
    output = handler.lambda_handler(event("get_job", JOB_ID=job, **{f"/v1/jobs/{job}": f"/v1/jobs/{job}/outputs/o"}),
                                    None)
    assert base64.b64decode(output["body"]) == b"\x00" * (1 << 20)


def test_a_result_too_long_for_a_reply_is_a_redirect_and_too_many_output_names_are_counted(
        s3_service: Settings) -> None:
    from dcc.jobs import JobState, Outcome
    from dcc.replies import LAMBDA_REPLY_BYTES
    from dcc.service import result_document, result_key

    service = build_service(s3_service)
    job = _ended_with(service, Outcome(state=JobState.SUCCEEDED, exit_code=0, stdout="\x01" * (1 << 20)),
                      appendStdOut=True)
    record = service.get(job)
    service.storage.put_bytes(result_key(job), json.dumps(result_document(record)).encode())
    reply = handler.lambda_handler(event("get_job", JOB_ID=job, **{f"/v1/jobs/{job}": f"/v1/jobs/{job}/result"}),
                                   None)
    location = reply["multiValueHeaders"]["Location"][0] if "multiValueHeaders" in reply else \
        reply["headers"]["Location"]
    assert reply["statusCode"] == 302 and f"/data/jobs/{job}/result.json?" in location
    # 30,000 output names of 250 bytes (7.5 MB): the view lists those that fit, and says how many it does not
    names = [f"{i:06d}-" + "n" * 243 for i in range(30_000)]
    many = _ended_with(service, Outcome(state=JobState.SUCCEEDED, exit_code=0, outputs=names))
    reply = handler.lambda_handler(event("get_job", JOB_ID=many), None)
    shown = json.loads(reply["body"])
    assert reply["statusCode"] == 200 and _lambda_size(reply) <= LAMBDA_REPLY_BYTES
    assert shown["outputs"] == names[:len(shown["outputs"])] and shown["outputsNotListed"] == 30_000 - len(
        shown["outputs"]) > 0
    # a reply that would still be too large (a bug) is a 500 that says so, not API Gateway's bare 502
    big = {"statusCode": 200, "headers": {}, "isBase64Encoded": False, "body": json.dumps({"x": "\x01" * 1_000_000})}
    guarded = handler._within_limit(big)
    assert guarded["statusCode"] == 500 and f"over the {LAMBDA_REPLY_BYTES} a reply may hold" in guarded["body"]
    assert handler._within_limit({**big, "body": json.dumps({"x": "y" * 1_000_000})})["statusCode"] == 200


def test_an_error_that_quotes_a_huge_value_quotes_its_start(s3_service: Settings) -> None:
    from dcc.replies import LAMBDA_REPLY_BYTES

    reply = _post("/v1/jobs", json.dumps({"image": "x", "keepOutputs": ["a" * 3_200_000]}))
    error = json.loads(reply["body"])
    assert reply["statusCode"] == 400 and _lambda_size(reply) < 10_000, _lambda_size(reply)
    assert error["error"].startswith("keepOutputs") and "characters in all)" in error["error"]
    # a thousand invalid fields: the first hundred are listed, and the message says how many more there were
    reply = _post("/v1/jobs", json.dumps({"image": "x", "inputs": [{"name": "/abs", "value": "v"}] * 1000}))
    error = json.loads(reply["body"])
    assert reply["statusCode"] == 400 and len(error["details"]) == 100 and "(and 900 more)" in error["error"]
    assert _lambda_size(reply) < LAMBDA_REPLY_BYTES // 10


def test_an_input_name_too_long_for_an_s3_key_is_a_400_and_writes_nothing(s3_service: Settings) -> None:
    long_id = "i" * 128
    fits = "/".join(["d" * 99] * 7)  # 699 bytes: with jobs/<128>/inputs/<12>/ and the prefix, under 1024
    over = "/".join(["e" * 99] * 8) + "/" + "f" * 80  # 880 bytes: under dcc's 900, over what the key leaves
    reply = _post("/v1/jobs", json.dumps({"image": "x", "id": long_id, "inputs": [
        {"name": fits, "value": "a"}, {"name": over, "value": "b"}]}))
    assert reply["statusCode"] == 400, reply
    error = json.loads(reply["body"])
    assert error["field"] == "inputs.1.name" and "bytes in UTF-8 here" in error["error"]
    assert "Contents" not in boto3.client("s3").list_objects_v2(Bucket="dcc-jobs")
    reply = _post("/v1/jobs", json.dumps({"image": "x", "id": long_id, "inputs": [{"name": fits, "value": "a"}]}))
    assert reply["statusCode"] == 201
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="dcc-jobs")["Contents"]]
    assert len(keys) == 1 and keys[0].endswith("/" + fits)


def test_every_400_names_its_field_in_details_and_none_says_null(s3_service: Settings) -> None:
    reply = _post("/v1/jobs", json.dumps({"image": "x", "parameters": {"memory": 10**9}}))
    error = json.loads(reply["body"])
    assert reply["statusCode"] == 400 and error["field"] == "parameters.memory"
    assert error["details"] == [{"field": "parameters.memory", "message": error["error"].removeprefix(
        "parameters.memory: ")}] and "over this deployment's maximum" in error["details"][0]["message"]
    handler.configure(build_service(s3_service.with_(max_gpus_per_worker=0)))  # a 400 of no one field
    reply = handler.lambda_handler(event("get_job", JOB_ID="x", **{"/v1/jobs/x": "/test/gpu/1/1"}), None)
    assert reply["statusCode"] == 400 and json.loads(reply["body"]) == {
        "error": "no worker of this deployment has a GPU: there is no GPU job to test"}
