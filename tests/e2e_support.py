"""Running local mode inside the tests: the real ASGI server on a free port, a worker, the reaper."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from dcc.local import LocalDcc, build_app
from dcc.settings import Settings
from tests.conftest import free_port


@contextmanager
def serve_local(data_dir: Path, settings: Settings, *, workers: int | None = 2, reap_seconds: float = 0.5,
                wrap: Callable[[Any], Any] | None = None) -> Iterator[tuple[LocalDcc, httpx.Client]]:
    """Start local mode (API over HTTP, worker, reaper) and yield it with an HTTP client for its API.

    ``wrap``: applied to the ASGI app (e.g. middleware that checks every response).
    """
    local = LocalDcc(data_dir, workers=workers, settings=settings, reap_seconds=reap_seconds)
    local.start()
    port = free_port()
    app = wrap(build_app()) if wrap else build_app()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60, follow_redirects=True)  # (to outputs)
    try:
        yield local, client
    finally:
        client.close()
        server.should_exit = True
        thread.join(10)
        local.stop(grace=5)


def wait_done(client: httpx.Client, job_id: str, timeout: float = 60) -> dict:
    """Long-poll until the job is terminal; fail if it is not by ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = client.get(f"/v1/jobs/{job_id}/wait", params={"timeout": min(20, timeout)})
        reply.raise_for_status()
        view = reply.json()
        if view["state"] in ("succeeded", "failed", "timed_out", "cancelled", "error"):
            return view
    raise AssertionError(f"job {job_id} did not end within {timeout}s: {view}")


def wait_state(client: httpx.Client, job_id: str, state: str, timeout: float = 30) -> dict:
    """Poll until the job reaches ``state``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = client.get(f"/v1/jobs/{job_id}").json()
        if view["state"] == state:
            return view
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {state}: {view}")
