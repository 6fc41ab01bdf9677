"""``dcc proxy``: a local HTTP endpoint that forwards every request to a deployed dcc API, signed.

The AWS deployment's REST API uses IAM authorization, which tools such as TES clients (py-tes, Snakemake,
cwl-tes) cannot speak. The proxy listens on the loopback address and sends each request on to the API
with a SigV4 signature made from the caller's AWS credentials (and ``DCC_API_KEY`` as ``x-api-key`` when
set), so those tools point at ``http://127.0.0.1:PORT`` instead. Redirects (presigned output URLs) are
passed back to the client, not followed.
"""

from __future__ import annotations

import os
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dcc.client import aws_auth_for

METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                         "transfer-encoding", "upgrade", "host", "content-length", "authorization",
                         "content-encoding"})


def build_proxy(target: str, *, auth: httpx.Auth | None | str = "auto", api_key: str | None = None,
                transport: httpx.BaseTransport | None = None) -> Starlette:
    """The ASGI app forwarding to ``target`` (the API's base URL, stage included). ``auth="auto"``: SigV4 when
    ``target`` is an ``execute-api`` URL (or ``DCC_API_REGION`` is set)."""
    base = httpx.URL(target.rstrip("/"))
    signer = aws_auth_for(base) if auth == "auto" else auth
    key = api_key if api_key is not None else os.environ.get("DCC_API_KEY")
    client = httpx.Client(transport=transport, timeout=60, follow_redirects=False, trust_env=False)

    def send(method: str, url: str, headers: dict[str, str], body: bytes) -> httpx.Response:
        return client.request(method, url, headers=headers, content=body, auth=signer)  # type: ignore[arg-type]

    async def forward(request: Request) -> Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        if key:
            headers["x-api-key"] = key
        url = f"{base}{request.url.path}" + (f"?{request.url.query}" if request.url.query else "")
        try:
            reply = await run_in_threadpool(send, request.method, url, headers, await request.body())
        except httpx.HTTPError as exc:
            return Response(status_code=502, content=f'{{"error": "the dcc API is unreachable: {exc}"}}',
                            media_type="application/json")
        out: dict[str, Any] = {k: v for k, v in reply.headers.items() if k.lower() not in _HOP_BY_HOP}
        if request.method == "HEAD" and "content-length" in reply.headers:  # (the GET's length: no body to measure)
            out["content-length"] = reply.headers["content-length"]
        return Response(status_code=reply.status_code, content=reply.content, headers=out)

    return Starlette(routes=[Route("/{path:path}", forward, methods=METHODS)])  # the client lives with the app


def serve(target: str, *, host: str = "127.0.0.1", port: int = 8001) -> None:
    """Run the proxy until interrupted."""
    import uvicorn

    uvicorn.run(build_proxy(target), host=host, port=port, log_level="warning")
