"""``dcc proxy``: requests reach the deployed API signed (SigV4), with the API key, and come back unchanged."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from dcc.proxy import build_proxy

TARGET = "https://abc123defg.execute-api.eu-west-1.amazonaws.com/prod"


def call(app: Any, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """One request to the proxy's ASGI app, in process."""
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8001") as c:
            return await c.request(method, url, **kwargs)

    return asyncio.run(go())


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret",
                 "AWS_SESSION_TOKEN": "session-token"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("DCC_API_KEY", raising=False)
    monkeypatch.delenv("DCC_API_REGION", raising=False)


def test_requests_are_signed_and_forwarded_under_the_stage(aws_credentials: None) -> None:
    seen: list[httpx.Request] = []

    def api(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"id": "t1"}, headers={"x-amzn-requestid": "r1"})

    app = build_proxy(TARGET, api_key="k-123", transport=httpx.MockTransport(api))
    reply = call(app, "POST", "/ga4gh/tes/v1/tasks?view=FULL", json={"executors": []},
                 headers={"Authorization": "Bearer from-the-tes-client"})
    assert (reply.status_code, reply.json(), reply.headers["x-amzn-requestid"]) == (200, {"id": "t1"}, "r1")
    [sent] = seen
    assert str(sent.url) == f"{TARGET}/ga4gh/tes/v1/tasks?view=FULL"
    assert sent.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-1/execute-api/aws4_request" in sent.headers["authorization"]
    assert sent.headers["x-amz-security-token"] == "session-token"
    assert sent.headers["x-api-key"] == "k-123"
    assert sent.headers["host"] == "abc123defg.execute-api.eu-west-1.amazonaws.com"
    assert sent.content == b'{"executors":[]}'


def test_redirects_and_errors_come_back_as_they_are(aws_credentials: None) -> None:
    def api(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/outputs/a"):
            return httpx.Response(302, headers={"Location": "https://bucket.s3.amazonaws.com/a?X-Amz-Signature=x"})
        return httpx.Response(404, json={"error": "job x not found"})

    app = build_proxy(TARGET, transport=httpx.MockTransport(api))
    moved = call(app, "GET", "/v1/jobs/x/outputs/a")
    missing = call(app, "GET", "/v1/jobs/x")
    assert moved.status_code == 302 and moved.headers["location"].startswith("https://bucket.s3.amazonaws.com/")
    assert (missing.status_code, missing.json()) == (404, {"error": "job x not found"})


def test_an_unreachable_api_is_a_502(aws_credentials: None) -> None:
    def api(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("no route", request=request)

    reply = call(build_proxy(TARGET, transport=httpx.MockTransport(api)), "GET", "/v1/queues")
    assert reply.status_code == 502 and "unreachable" in reply.json()["error"]


def test_a_head_keeps_the_length_of_the_get_s_body(aws_credentials: None) -> None:
    def api(request: httpx.Request) -> httpx.Response:
        assert request.method == "HEAD"
        return httpx.Response(200, headers={"content-length": "1234", "content-type": "text/plain"})

    reply = call(build_proxy(TARGET, transport=httpx.MockTransport(api)), "HEAD", "/v1/jobs/x/stdout")
    assert (reply.status_code, reply.headers["content-length"], reply.content) == (200, "1234", b"")
