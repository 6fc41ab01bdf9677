"""A local dcc for TES tests: every TES reply it sends is checked against the spec's schemas (spec_check)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from dcc.local import LocalDcc
from dcc.settings import Settings
from tests.e2e_support import serve_local
from tests.tes.spec_check import PREFIX, schema_for, violations

BUCKET = "tes-data"


@dataclass
class SpecChecker:
    """ASGI middleware: checks each 200 reply of a TES route against its schema, and records what breaks."""

    checked: int = 0
    problems: list[str] = field(default_factory=list)

    def wrap(self, app: Any) -> Any:
        async def checked_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
                await app(scope, receive, send)
                return
            status, body = 0, bytearray()

            async def capture(message: dict[str, Any]) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                elif message["type"] == "http.response.body":
                    body.extend(message.get("body", b""))
                    if not message.get("more_body"):
                        self._check(scope["method"], scope["path"], status, bytes(body))
                await send(message)

            await app(scope, receive, capture)

        return checked_app

    def _check(self, method: str, path: str, status: int, body: bytes) -> None:
        name = schema_for(method, path)
        if name is None or status != 200:
            if status < 400:
                self.problems.append(f"{method} {path}: {status} from no TES route of the spec")
            return
        self.checked += 1
        try:
            doc = json.loads(body)
        except ValueError:
            self.problems.append(f"{method} {path}: the body is not JSON")
            return
        self.problems.extend(f"{method} {path}: {v}" for v in violations(name, doc))


@dataclass
class TesServer:
    local: LocalDcc
    http: httpx.Client
    url: str
    """The service's base URL (without /ga4gh/tes/v1), as TES clients take it."""
    files: Path
    """A folder tasks may read and write as file:// URLs."""
    checker: SpecChecker

    def wait(self, task_id: str, *, timeout: float = 60) -> dict[str, Any]:
        """The task in FULL view once it is in a final state."""
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            task = self.http.get(f"{PREFIX}/tasks/{task_id}", params={"view": "FULL"}).json()
            if task["state"] in ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED"):
                return task
            time.sleep(0.1)
        raise AssertionError(f"task {task_id} did not end: {task}")


@pytest.fixture
def tes_server(redis_url: str, tmp_path: Path, docker_host: str, test_image: str, moto_s3: str) -> Iterator[TesServer]:
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    files = tmp_path / "files"
    files.mkdir()
    settings = Settings(redis_url=redis_url, storage_url=str(tmp_path / "storage"),
                        tes_locations=(f"file://{files}/", f"s3://{BUCKET}/shared/"),
                        allowed_buckets=frozenset({BUCKET}),
                        max_gpus_per_worker=1)  # as if GPU workers ran elsewhere: GPU tasks wait in the gpu queue
    checker = SpecChecker()
    with serve_local(tmp_path / "local", settings, workers=2, wrap=checker.wrap) as (local, http):
        yield TesServer(local=local, http=http, url=str(http.base_url).rstrip("/"), files=files, checker=checker)
    assert checker.checked > 0, "no TES reply was checked against the spec"
    assert not checker.problems, "replies outside the TES 1.1 schemas:\n" + "\n".join(checker.problems)
