"""Test fixtures that start the real parts: a redis-server on a free port and a Docker engine.

Both are started once per session. The Docker engine is the one ``scripts/docker-engine.sh`` finds or
starts; the test image is made by ``scripts/test-image.sh`` (``docker import`` of a busybox rootfs).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

ROOT = Path(__file__).resolve().parent.parent
TEST_IMAGE = "dcc-busybox:latest"


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A redis-server process of our own, on a free port, with its data under ``dir``."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail("redis-server is not installed (the README's test command installs it)")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir), "--save", "",
             "--appendonly", "yes", "--appendfsync", "everysec"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        pytest.fail("redis-server did not start")

    def start_on_same_port(self) -> None:
        """Start again after a stop, on the same port and data (a restarted server)."""
        self.start()

    def stop(self, *, kill: bool = False) -> None:
        if self.proc is not None:
            self.proc.kill() if kill else self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """URL of the session's redis-server, flushed before each test."""
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    yield redis_server.url


@pytest.fixture(scope="session")
def docker_host() -> str:
    """DOCKER_HOST of a reachable engine that has the test image; exported for the whole session."""
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "docker-engine.sh")], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        pytest.fail(f"no Docker engine: {out.stderr.strip()}")
    host = out.stdout.strip().splitlines()[-1]
    os.environ["DOCKER_HOST"] = host
    made = subprocess.run(["bash", str(ROOT / "scripts" / "test-image.sh"), TEST_IMAGE],
                          capture_output=True, text=True, check=False)
    if made.returncode != 0:
        pytest.fail(f"could not make {TEST_IMAGE}: {made.stderr.strip()}")
    return host


@pytest.fixture(scope="session")
def docker_client(docker_host: str):  # type: ignore[no-untyped-def]
    import docker

    client = docker.DockerClient(base_url=docker_host)
    yield client
    client.close()


@pytest.fixture(scope="session")
def test_image(docker_host: str) -> str:
    return TEST_IMAGE


@pytest.fixture
def moto_s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                 "AWS_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(k, v)
    boto3.client("s3").create_bucket(Bucket="dcc-data")
    yield endpoint
    server.stop()
