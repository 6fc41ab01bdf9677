"""A small HTTP client for the dcc API (``functions/api/routes.py``), on httpx.

    DccClientError             anything that kept a call from getting an answer
    ├── DccApiError            the API answered with an error status (the server's ``error`` text)
    └── DccUnreachable         no answer: connection refused, DNS, timeout, bad URL

Tests inject an ``httpx.MockTransport`` with ``transport=``.
"""

from __future__ import annotations

import builtins  # the method DccClient.list shadows list in the class body
import json
import os
import re
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from websockets.exceptions import WebSocketException
from websockets.sync.client import connect as ws_connect

from dcc.errors import DccError
from dcc.jobs import JOB_ID_PATTERN, TERMINAL_STATES

LONG_POLL_MAX = 25.0  # the API refuses longer waits (API Gateway's 29 s integration timeout)
_JOB_ID = re.compile(JOB_ID_PATTERN)
_TERMINAL = frozenset(state.value for state in TERMINAL_STATES)


class SigV4Auth(httpx.Auth):
    """Signs each request for an IAM-authorized API Gateway with the caller's AWS credentials (botocore)."""

    requires_request_body = True

    def __init__(self, region: str) -> None:
        import botocore.session

        self.region = region
        self.credentials = botocore.session.get_session().get_credentials()
        if self.credentials is None:
            raise DccClientError("this API needs AWS credentials (IAM auth): none were found")

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers.update(self.headers(request.method, request.url, body=request.content))
        yield request

    def headers(self, method: str, url: httpx.URL, *, body: bytes = b"") -> dict[str, str]:
        """The headers that sign ``method url`` (a ``wss://`` URL is signed as the ``https://`` request it opens
        with, as API Gateway checks a WebSocket API's ``$connect``)."""
        from botocore.auth import SigV4Auth as BotoSigV4
        from botocore.awsrequest import AWSRequest

        if url.scheme in ("ws", "wss"):
            url = url.copy_with(scheme="https" if url.scheme == "wss" else "http")
        signed = AWSRequest(method=method, url=str(url), data=body, headers={"host": url.host})
        BotoSigV4(self.credentials.get_frozen_credentials(), "execute-api", self.region).add_auth(signed)
        return {name: signed.headers[name] for name in ("Authorization", "X-Amz-Date", "X-Amz-Security-Token")
                if name in signed.headers}


def aws_auth_for(url: httpx.URL) -> SigV4Auth | None:
    """SigV4 for ``*.execute-api.<region>.amazonaws.com`` (or when DCC_API_REGION names the region), else none."""
    match = re.match(r"^[a-z0-9]+\.execute-api\.([a-z0-9-]+)\.amazonaws\.com$", url.host or "")
    region = os.environ.get("DCC_API_REGION") or (match.group(1) if match else None)
    if region is None or os.environ.get("DCC_API_SIGV4", "1") == "0":
        return None
    return SigV4Auth(region)


class DccClientError(DccError):
    """A call to the dcc API did not succeed."""


class _UnknownThere(Exception):
    """The websocket knows no such job (``DCC_WEBSOCKET_URL`` may name another deployment's): ask the API."""


class DccApiError(DccClientError):
    """The API answered with an error status; ``message`` is the server's ``error`` text."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{message} (HTTP {status})")
        self.status = status
        self.message = message


class DccUnreachable(DccClientError):
    """No answer from the API (or from the storage an output redirects to)."""


def is_terminal(view: dict[str, Any]) -> bool:
    """Whether a job view is in a state nothing leaves."""
    return view.get("state") in _TERMINAL


def _job_path(job_id: str) -> str:
    # refuse here what the server would 404 anyway, so an id like '../workers' never reaches a URL
    if not _JOB_ID.match(job_id):
        raise DccClientError(f"{job_id!r} is not a job id")
    return f"/v1/jobs/{job_id}"


def _error_message(response: httpx.Response) -> str:
    """The server's ``error`` text; API Gateway's own ``message``; else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        for key in ("error", "message"):
            if isinstance(body.get(key), str):
                return str(body[key])
    text = " ".join(response.text.split())[:200]
    return text or response.reason_phrase or "request failed"


class DccClient:
    """The dcc API at ``base_url``. Thread-safe as httpx.Client is; close it (or use ``with``) when done."""

    def __init__(self, base_url: str, *, transport: httpx.BaseTransport | None = None, timeout: float = 30.0,
                 min_poll_interval: float = 0.5, patience: float = 120.0) -> None:
        try:
            url = httpx.URL(base_url)
        except httpx.InvalidURL as exc:
            raise DccClientError(f"{base_url!r} is not a valid URL: {exc}") from exc
        if url.scheme not in ("http", "https") or not url.host:
            raise DccClientError(f"{base_url!r} is not an http(s) URL")
        if url.query or url.fragment or "?" in base_url or "#" in base_url:  # (paths would be added after them)
            raise DccClientError(f"{base_url!r} is not a base URL: give http(s)://host[:port][/stage], with no "
                                 "query or fragment")
        self.base_url = base_url.rstrip("/")
        self.transport = transport  # an injected transport (tests) has no websocket: wait long-polls then
        self.timeout = timeout
        # a server whose long-poll returns at once must not turn wait_until_done into a busy loop
        self.min_poll_interval = min_poll_interval
        self.patience = patience
        """How long ``wait_until_done`` keeps trying through an outage of the API (a restart, a 502/503/504)."""
        headers = {"x-api-key": os.environ["DCC_API_KEY"]} if os.environ.get("DCC_API_KEY") else {}
        self._http = httpx.Client(base_url=self.base_url, transport=transport, timeout=timeout,
                                  follow_redirects=False, auth=aws_auth_for(url), headers=headers)

    def __enter__(self) -> DccClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except httpx.ConnectError as exc:
            raise DccUnreachable(f"the dcc API is unreachable at {self._where(exc)} ({exc})") from exc
        except httpx.TimeoutException as exc:
            raise DccUnreachable(f"no answer in time from {self._where(exc)} ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise DccUnreachable(f"cannot talk to {self._where(exc)}: {exc}") from exc

    def _where(self, exc: httpx.TransportError) -> str:
        shown = str(httpx.URL(self.base_url).copy_with(username=None, password=None))  # never echo a password
        try:
            url = exc.request.url
        except RuntimeError:
            return shown
        # a redirected output download fails at storage, not at the API
        return shown if str(url).startswith(self.base_url) else f"{url.scheme}://{url.host}"

    def _request(self, method: str, path: str, *, timeout: float | None = None, **kwargs: Any) -> httpx.Response:
        with self._translated():
            response = self._http.request(method, path, timeout=timeout or self.timeout, **kwargs)
        if response.is_error:
            raise DccApiError(response.status_code, _error_message(response))
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            raise DccApiError(response.status_code, f"the API answered {path} with something not JSON") from exc

    def submit(self, job: dict[str, Any]) -> dict[str, Any]:
        """Submit a job (the ``POST /v1/jobs`` body); return its view. Idempotent when ``job`` has an ``id``."""
        view: dict[str, Any] = self._json("POST", "/v1/jobs", json=job)
        return view

    def get(self, job_id: str) -> dict[str, Any]:
        """The job's view."""
        view: dict[str, Any] = self._json("GET", _job_path(job_id))
        return view

    def wait(self, job_id: str, timeout: float = 20.0) -> dict[str, Any]:
        """One long-poll: the view once the job is terminal, or as it is after ``timeout`` s (at most 25)."""
        timeout = max(0.0, min(timeout, LONG_POLL_MAX))
        view: dict[str, Any] = self._json("GET", f"{_job_path(job_id)}/wait", params={"timeout": timeout},
                                          timeout=timeout + self.timeout)
        return view

    def wait_until_done(self, job_id: str, *, on_change: Callable[[dict[str, Any]], None] | None = None,
                        poll: float = 20.0, on_outage: Callable[[str], None] | None = None) -> dict[str, Any]:
        """Follow the job until it is terminal, over the websocket (else long-polls); call ``on_change(view)``
        first and whenever state, worker or attempt changes. Returns the terminal view.

        Once the job is found, an outage of the API (unreachable, or a 502/503/504) is waited out for up to
        ``patience`` s, telling ``on_outage`` why at its start: the job goes on meanwhile.
        """
        _job_path(job_id)  # (an id no job can have is refused at once, before any websocket is opened)
        seen: list[dict[str, Any]] = []

        def changed(view: dict[str, Any]) -> None:
            seen.append(view)
            if on_change is not None:
                on_change(view)

        if self.transport is None:
            try:
                return self._watch_websocket(job_id, changed)
            except (OSError, WebSocketException, TimeoutError, _UnknownThere):
                pass  # no websocket here (or it dropped, as when the API restarts; or it is another deployment's,
                # which knows no such job: the API says whether the job exists): long-poll instead
        return self._long_poll(job_id, on_change, poll, on_outage, last=seen[-1] if seen else None)

    def websocket_url(self) -> str:
        """Where live status is served: ``DCC_WEBSOCKET_URL`` (on AWS, the stack's ``WebSocketUrl`` output: a WebSocket
        API of its own), else the API's own ``/v1/ws`` (local mode)."""
        given = os.environ.get("DCC_WEBSOCKET_URL", "").strip()
        if given:
            return given.rstrip("/")
        return self.base_url.replace("https://", "wss://", 1).replace("http://", "ws://", 1) + "/v1/ws"

    def _watch_websocket(self, job_id: str, on_change: Callable[[dict[str, Any]], None] | None) -> dict[str, Any]:
        url = self.websocket_url()
        auth = aws_auth_for(httpx.URL(url))  # (a WebSocket API's $connect takes IAM auth, as the REST API does)
        headers = auth.headers("GET", httpx.URL(url)) if auth is not None else None
        with ws_connect(url, open_timeout=5, additional_headers=headers) as ws:
            ws.send(json.dumps({"action": "subscribe", "jobIds": [job_id]}))
            while True:
                message = json.loads(ws.recv(timeout=3600))
                if message.get("type") == "error" and message.get("jobId") == job_id:
                    raise _UnknownThere(job_id)
                view = message.get("job")
                if message.get("type") != "job" or not view or view.get("id") != job_id:
                    continue
                if on_change is not None:
                    on_change(view)
                if is_terminal(view):
                    return dict(view)

    def _long_poll(self, job_id: str, on_change: Callable[[dict[str, Any]], None] | None, poll: float,
                   on_outage: Callable[[str], None] | None = None, *,
                   last: dict[str, Any] | None = None) -> dict[str, Any]:
        """Follow the job by long-polls; ``last``: its view as a websocket that dropped last showed it."""
        def key(view: dict[str, Any]) -> tuple[Any, ...]:
            return view.get("state"), view.get("worker"), view.get("attempts"), view.get("cancelRequested")

        seen = key(last) if last is not None else None
        # (a job already found, over a websocket that dropped: an outage then is waited out from the start)
        view = self._through_outages(lambda: self.get(job_id), on_outage) if last is not None else self.get(job_id)
        while True:
            if key(view) != seen:
                seen = key(view)
                if on_change is not None:
                    on_change(view)
            if is_terminal(view):
                return view
            started = time.monotonic()
            view = self._through_outages(lambda: self.wait(job_id, poll), on_outage)
            elapsed = time.monotonic() - started
            if not is_terminal(view) and elapsed < self.min_poll_interval:
                time.sleep(self.min_poll_interval - elapsed)

    def _through_outages(self, call: Callable[[], dict[str, Any]],
                         on_outage: Callable[[str], None] | None) -> dict[str, Any]:
        """``call()``, tried again through an outage of the API of up to ``patience`` s."""
        began: float | None = None
        pause = 0.5
        while True:
            try:
                return call()
            except (DccUnreachable, DccApiError) as exc:
                if isinstance(exc, DccApiError) and exc.status not in (502, 503, 504):
                    raise
                now = time.monotonic()
                if began is None:
                    began = now
                    if on_outage is not None:
                        on_outage(f"{exc}; trying again for up to {self.patience:.0f} s")
                if now - began + pause > self.patience:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 5.0)

    def list(self, *, state: str | None = None, limit: int | None = None,
             cursor: str | None = None) -> dict[str, Any]:
        """One page of jobs, newest first: ``{"jobs": [...], "cursor": str | None}``."""
        params = {k: v for k, v in {"state": state, "limit": limit, "cursor": cursor}.items() if v is not None}
        page: dict[str, Any] = self._json("GET", "/v1/jobs", params=params)
        return page

    def iter_jobs(self, *, state: str | None = None, page_size: int = 100) -> Iterator[dict[str, Any]]:
        """Every job, newest first, following the cursors."""
        cursor: str | None = None
        while True:
            page = self.list(state=state, limit=page_size, cursor=cursor)
            yield from page.get("jobs", [])
            cursor = page.get("cursor")
            if not cursor:
                return

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel the job (a finished one is left as it is); return its view."""
        view: dict[str, Any] = self._json("POST", f"{_job_path(job_id)}/cancel")
        return view

    def stdout(self, job_id: str) -> bytes:
        """The finished job's standard output (``DccApiError`` 409 while it has not ended)."""
        return self._read(f"{_job_path(job_id)}/stdout")

    def stderr(self, job_id: str) -> bytes:
        """The finished job's standard error (``DccApiError`` 409 while it has not ended)."""
        return self._read(f"{_job_path(job_id)}/stderr")

    def _read(self, path: str) -> bytes:
        with self._stream(path) as response:
            return response.read()

    @contextmanager
    def _stream(self, path: str) -> Iterator[httpx.Response]:
        """GET ``path`` as a stream, following the API's redirect to storage (a presigned URL) with none of this
        client's credentials: S3 refuses a presigned request that carries unsigned ``x-amz-*`` headers (httpx keeps
        them on a redirect, and drops only ``Authorization``), and an API key is not storage's business."""
        with self._translated():
            with self._http.stream("GET", path) as response:
                location = response.headers.get("location") if response.is_redirect else None
                if location is None:
                    if response.is_error:
                        response.read()
                        raise DccApiError(response.status_code, _error_message(response))
                    yield response
                    return
            with httpx.Client(transport=self.transport, timeout=self.timeout, follow_redirects=True) as plain, \
                    plain.stream("GET", response.url.join(location)) as stored:
                if stored.is_error:
                    stored.read()
                    raise DccApiError(stored.status_code, f"storage refused the download: {stored.text[:300]}")
                yield stored

    def result(self, job_id: str) -> dict[str, Any]:
        """The finished job's ``result.json`` (from storage, where it is longer than the API's reply may carry)."""
        path = f"{_job_path(job_id)}/result"
        try:
            doc: dict[str, Any] = json.loads(self._read(path))
        except ValueError as exc:
            raise DccApiError(200, f"the API answered {path} with something not JSON") from exc
        return doc

    def outputs(self, job_id: str) -> builtins.list[str]:
        """Paths of the job's output files, relative to its /outputs."""
        return list(self.get(job_id).get("outputs") or [])

    def download_output(self, job_id: str, path: str, dest: Path) -> tuple[int, bool]:
        """Stream one output file to ``dest`` (following a redirect to storage); return its size, and whether
        only its first part was kept (the server says so in ``X-Dcc-Truncated``).

        The file appears at ``dest`` only once complete. The caller decides whether ``dest`` is a safe
        place for ``path``.
        """
        url = f"{_job_path(job_id)}/outputs/{quote(path, safe='/')}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".dcc-part-{uuid.uuid4().hex[:12]}")  # (short: dest's name may be at the limit)
        try:
            size = 0
            with open(tmp, "xb") as out, self._stream(url) as response:
                truncated = response.headers.get("x-dcc-truncated") == "true"
                for chunk in response.iter_bytes():
                    out.write(chunk)
                    size += len(chunk)
            os.replace(tmp, dest)
            return size, truncated
        finally:
            tmp.unlink(missing_ok=True)

    def workers(self) -> builtins.list[dict[str, Any]]:
        """Live workers and their health."""
        return list(self._json("GET", "/v1/workers").get("workers", []))

    def queues(self) -> dict[str, Any]:
        """Queue depths and running jobs: ``{"queues": {...}, "running": n, "runningByQueue": {...}}``."""
        depths: dict[str, Any] = self._json("GET", "/v1/queues")
        return depths
