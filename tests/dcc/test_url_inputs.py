"""Which URLs a job may name as inputs (pure, with a stand-in resolver), and fetching from S3 (moto) and HTTP."""

from __future__ import annotations

import http.server
import ipaddress
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from dcc.errors import InvalidJob, JobSystemError
from dcc.url_inputs import check_url, fetch_http, fetch_url

BUCKETS = frozenset({"inputs-ok"})


def resolver_for(table: dict[str, str]):  # type: ignore[no-untyped-def]
    def resolve(host: str, port: int, **_: object) -> list[tuple]:
        try:
            ipaddress.ip_address(host)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (host, port))]  # literals resolve to themselves
        except ValueError:
            pass
        if host not in table:
            raise socket.gaierror("unknown host")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (table[host], port))]
    return resolve


@pytest.mark.parametrize(("url", "words"), [
    ("https://127.0.0.1/x", "not a public address"),
    ("https://localhost/x", "not a public address"),
    ("https://10.1.2.3/x", "not a public address"),
    ("https://172.16.0.1/x", "not a public address"),
    ("https://192.168.1.1/x", "not a public address"),
    ("https://169.254.169.254/latest/meta-data/", "not a public address"),
    ("https://[::1]/x", "not a public address"),
    ("https://[fe80::1]/x", "not a public address"),
    ("https://100.64.0.1/x", "not a public address"),
    ("https://[::ffff:127.0.0.1]/x", "not a public address"),
    ("https://metadata.internal/x", "not a public address"),
    ("https://nowhere.invalid/x", "does not resolve"),
    ("http://example.com/x", "scheme"),
    ("ftp://example.com/x", "scheme"),
    ("file:///etc/passwd", "scheme"),
    ("s3://other-bucket/key", "allow-list"),
    ("s3://inputs-ok/", "s3://bucket/key"),
    ("https://user:pw@example.com/x", "user names"),
])
def test_refused(url: str, words: str) -> None:
    resolve = resolver_for({"localhost": "127.0.0.1", "metadata.internal": "169.254.169.254",
                            "example.com": "93.184.215.14"})
    with pytest.raises(InvalidJob) as info:
        check_url(url, allowed_buckets=BUCKETS, resolver=resolve)
    assert words in str(info.value)


def test_public_https_and_allowed_buckets_pass() -> None:
    resolve = resolver_for({"example.com": "93.184.215.14"})
    check_url("https://example.com/data.csv", allowed_buckets=BUCKETS, resolver=resolve)
    check_url("s3://inputs-ok/path/to/key", allowed_buckets=BUCKETS, resolver=resolve)


def test_fetch_from_s3_respects_max_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in {"AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="inputs-ok")
        s3.put_object(Bucket="inputs-ok", Key="d/data.bin", Body=b"x" * 1000)
        assert fetch_url("s3://inputs-ok/d/data.bin", tmp_path / "a", allowed_buckets=BUCKETS, max_bytes=1000) == 1000
        assert (tmp_path / "a").read_bytes() == b"x" * 1000
        with pytest.raises(JobSystemError) as info:
            fetch_url("s3://inputs-ok/d/data.bin", tmp_path / "b", allowed_buckets=BUCKETS, max_bytes=999)
        assert info.value.code == "input_fetch_failed" and not info.value.retryable
        with pytest.raises(JobSystemError) as info:
            fetch_url("s3://inputs-ok/missing", tmp_path / "c", allowed_buckets=BUCKETS, max_bytes=10)
        assert not info.value.retryable


@pytest.fixture
def http_server() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/data":
                body = b"payload"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            elif self.path == "/to-metadata":
                self.send_response(302)
                self.send_header("Location", "https://169.254.169.254/latest/meta-data/")
                self.end_headers()
            elif self.path == "/to-data":
                self.send_response(302)
                self.send_header("Location", "/data")
                self.end_headers()
            else:
                self.send_response(404)
                self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_fetch_follows_safe_redirects_only(http_server: str, tmp_path: Path) -> None:
    # loopback is only reachable with allow_private (a development setting); the redirect check still runs
    dest = tmp_path / "d"
    assert fetch_url(f"{http_server}/to-data", dest, allowed_buckets=BUCKETS, allow_private=True, max_bytes=100) == 7
    assert dest.read_bytes() == b"payload"
    with pytest.raises(JobSystemError) as info:
        fetch_url(f"{http_server}/missing", dest, allowed_buckets=BUCKETS, allow_private=True, max_bytes=100)
    assert "404" in str(info.value) and not info.value.retryable
    with pytest.raises(JobSystemError) as info:
        fetch_url(f"{http_server}/data", dest, allowed_buckets=BUCKETS, max_bytes=100)
    assert "scheme" in str(info.value)  # without allow_private: http and loopback are refused before connecting


def test_every_redirect_is_checked(http_server: str, tmp_path: Path) -> None:
    def check(url: str) -> None:  # the test server itself is allowed; anything else gets the real check
        if not url.startswith(http_server):
            check_url(url, allowed_buckets=frozenset())

    with pytest.raises(JobSystemError) as info:
        fetch_http(f"{http_server}/to-metadata", tmp_path / "m", check=check, max_bytes=100)
    assert "redirect refused" in str(info.value) and "169.254.169.254" in str(info.value)
    assert not (tmp_path / "m").exists()
