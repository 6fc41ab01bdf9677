"""Which URLs a job may name as inputs (pure, with a stand-in resolver), and fetching from S3 (moto) and HTTP(S).

No network exists here but loopback, so HTTP(S) downloads run against servers on 127.0.0.1: either with
``allow_private=True`` (development mode, which also allows ``http://``) or through ``fetch_http`` with a
check that maps a made-up name to 127.0.0.1, the way the real check maps a public name to its address.
"""

from __future__ import annotations

import contextlib
import datetime
import http.server
import ipaddress
import socket
import ssl
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from moto import mock_aws

from dcc.errors import InvalidJob, JobSystemError
from dcc.url_inputs import MAX_REDIRECTS, check_url, fetch_http, fetch_url, is_public

BUCKETS = frozenset({"inputs-ok"})
PUBLIC = "93.184.215.14"
NAMES = {"localhost": ["127.0.0.1"], "metadata.internal": ["169.254.169.254"], "example.com": [PUBLIC],
         "mixed.example": [PUBLIC, "10.0.0.7"], "v6.example": ["2606:4700::1111"],
         "mapped.example": ["::ffff:10.0.0.1"], "empty.example": []}


def resolver_for(table: dict[str, list[str]]) -> Callable[..., list[tuple[Any, ...]]]:
    """A getaddrinfo stand-in: literals resolve to themselves, names from ``table``, others fail."""
    def resolve(host: str, port: int, **_: object) -> list[tuple[Any, ...]]:
        try:
            ipaddress.ip_address(host)
            addresses = [host]
        except ValueError:
            if host not in table:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
            addresses = table[host]
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                for a in addresses]
    return resolve


@pytest.mark.parametrize(("url", "words"), [
    ("https://127.0.0.1/x", "resolves to 127.0.0.1, which is not a public address"),
    ("https://localhost/x", "resolves to 127.0.0.1"),
    ("https://10.1.2.3/x", "not a public address"),
    ("https://172.16.0.1/x", "not a public address"),
    ("https://192.168.1.1/x", "not a public address"),
    ("https://169.254.169.254/latest/meta-data/", "not a public address"),
    ("https://metadata.internal/x", "resolves to 169.254.169.254"),
    ("https://[::1]/x", "not a public address"),
    ("https://[fe80::1]/x", "not a public address"),
    ("https://100.64.0.1/x", "not a public address"),
    ("https://[::ffff:127.0.0.1]/x", "not a public address"),
    ("https://[::ffff:169.254.169.254]/x", "not a public address"),
    ("https://[64:ff9b::a9fe:a9fe]/x", "not a public address"),  # NAT64 to the metadata address
    ("https://[2002:a9fe:a9fe::1]/x", "not a public address"),  # 6to4 of it
    ("https://[fec0::1]/x", "not a public address"),  # site-local
    ("https://0.0.0.0/x", "not a public address"),
    ("https://[::]/x", "not a public address"),
    ("https://224.0.0.1/x", "not a public address"),
    ("https://240.0.0.1/x", "not a public address"),
    ("https://mixed.example/x", "resolves to 10.0.0.7"),  # one private answer is enough
    ("https://mapped.example/x", "not a public address"),
    ("https://nowhere.invalid/x", "does not resolve"),
    ("https://empty.example/x", "does not resolve"),
    ("http://example.com/x", "scheme 'http' is not allowed"),
    ("ftp://example.com/x", "scheme 'ftp'"),
    ("file:///etc/passwd", "scheme 'file'"),
    ("gopher://127.0.0.1:6379/_FLUSHALL", "scheme 'gopher'"),
    ("example.com/x", "scheme 'none'"),
    ("s3://other-bucket/key", "'other-bucket' is not on this deployment's allow-list"),
    ("s3://inputs-ok/", "not an s3://bucket/key URL"),
    ("s3://inputs-ok/key?versionId=1", "may not contain"),
    ("https://user:pw@example.com/x", "user names or passwords"),
    ("https://user@example.com/x", "user names or passwords"),
    ("https://@example.com/x", "user names or passwords"),
    ("https:///x", "has no host"),
    ("https://example.com:99999/x", "not a valid URL"),
])
def test_refused(url: str, words: str) -> None:
    with pytest.raises(InvalidJob) as info:
        check_url(url, allowed_buckets=BUCKETS, resolver=resolver_for(NAMES))
    assert words in str(info.value) and info.value.field == "url"


def test_no_buckets_means_no_s3_urls() -> None:
    with pytest.raises(InvalidJob, match="allow-list"):
        check_url("s3://inputs-ok/key", allowed_buckets=frozenset())


@pytest.mark.parametrize("url", [
    "https://example.com/data.csv",
    "https://example.com:8443/data.csv?x=1",
    "https://v6.example/x",
    f"https://{PUBLIC}/x",
    "https://[64:ff9b::808:808]/x",  # NAT64 to a public IPv4 address
    "s3://inputs-ok/path/to/key",
])
def test_allowed(url: str) -> None:
    check_url(url, allowed_buckets=BUCKETS, resolver=resolver_for(NAMES))


def test_allow_private_lets_loopback_and_http_through_but_not_other_schemes_or_buckets() -> None:
    check_url("http://127.0.0.1:8080/x", allowed_buckets=BUCKETS, allow_private=True, resolver=resolver_for({}))
    check_url("https://localhost/x", allowed_buckets=BUCKETS, allow_private=True, resolver=resolver_for({}))
    for url in ("ftp://127.0.0.1/x", "s3://other-bucket/key", "http://u:p@127.0.0.1/x"):
        with pytest.raises(InvalidJob):
            check_url(url, allowed_buckets=BUCKETS, allow_private=True)


def test_is_public_is_false_for_garbage() -> None:
    assert not is_public("not-an-address") and is_public(PUBLIC) and not is_public("fe80::1%eth0")


# --- S3 -------------------------------------------------------------------------------------------------------


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket="inputs-ok")
        client.create_bucket(Bucket="not-allowed")
        yield client


def test_fetch_from_s3_respects_max_bytes(s3: Any, tmp_path: Path) -> None:
    s3.put_object(Bucket="inputs-ok", Key="d/data.bin", Body=b"x" * 1000)
    s3.put_object(Bucket="not-allowed", Key="secret", Body=b"s")
    dest = tmp_path / "a"
    assert fetch_url("s3://inputs-ok/d/data.bin", dest, allowed_buckets=BUCKETS, max_bytes=1000) == 1000
    assert dest.read_bytes() == b"x" * 1000
    for url, max_bytes in (("s3://inputs-ok/d/data.bin", 999), ("s3://inputs-ok/missing", 10),
                           ("s3://not-allowed/secret", 10)):
        with pytest.raises(JobSystemError) as info:
            fetch_url(url, tmp_path / "b", allowed_buckets=BUCKETS, s3_client=s3, max_bytes=max_bytes)
        assert info.value.code == "input_fetch_failed" and not info.value.retryable
        assert not (tmp_path / "b").exists()


class Stop(Exception):
    pass


def stop_past(limit: int, seen: list[int]) -> Callable[[int], None]:
    def progress(done: int) -> None:
        seen.append(done)
        if done > limit:
            raise Stop
    return progress


def test_a_download_from_s3_stops_when_its_progress_says_so(s3: Any, tmp_path: Path) -> None:
    s3.put_object(Bucket="inputs-ok", Key="big", Body=b"x" * (5 << 20))
    seen: list[int] = []
    with pytest.raises(Stop):
        fetch_url("s3://inputs-ok/big", tmp_path / "b", allowed_buckets=BUCKETS, s3_client=s3, max_bytes=10 << 20,
                  progress=stop_past(1 << 20, seen))
    assert seen == [1 << 20, 2 << 20] and not (tmp_path / "b").exists()  # told after each piece; then no file


# --- HTTP(S) --------------------------------------------------------------------------------------------------


@dataclass
class Server:
    url: str
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Host header)
    server_names: list[str | None] = field(default_factory=list)  # TLS SNI seen


def _handler(server: Server) -> type[http.server.BaseHTTPRequestHandler]:
    routes: dict[str, tuple[int, dict[str, str], bytes]] = {
        "/data": (200, {}, b"payload"),
        "/to-data": (302, {"Location": "/data"}, b""),
        "/to-metadata": (302, {"Location": "https://169.254.169.254/latest/meta-data/"}, b""),
        "/to-private-name": (301, {"Location": "https://mixed.example/x"}, b""),
        "/to-s3": (307, {"Location": "s3://inputs-ok/key"}, b""),
        "/to-http": (302, {"Location": "http://example.com/x"}, b""),
        "/loop": (302, {"Location": "/loop"}, b""),
        "/big": (200, {}, b"y" * 5000),
        "/busy": (503, {}, b""),
        "/slow-down": (429, {}, b""),
        "/no-location": (302, {}, b""),
    }

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            server.requests.append((self.path, self.headers.get("Host")))
            if self.path == "/echo-host":
                status, headers, body = 200, {}, str(self.headers.get("Host")).encode()
            elif self.path == "/endless":  # 1 MiB pieces for as long as the client reads
                self.send_response(200)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                with contextlib.suppress(OSError):
                    for _ in range(256):
                        self.wfile.write(b"100000\r\n" + b"e" * (1 << 20) + b"\r\n")
                    self.wfile.write(b"0\r\n\r\n")
                return
            elif self.path == "/chunked":  # no Content-Length: the limit must hold while streaming
                self.send_response(200)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for _ in range(5):
                    self.wfile.write(b"3e8\r\n" + b"z" * 1000 + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")
                return
            else:
                status, headers, body = routes.get(self.path, (404, {}, b""))
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that rejects the certificate (as some tests want) breaks the handshake: not news


@contextlib.contextmanager
def serve(context: ssl.SSLContext | None = None) -> Iterator[Server]:
    """A threaded HTTP server (HTTPS with ``context``) on 127.0.0.1 that records what it was asked."""
    scheme = "https" if context else "http"
    record = Server(url="")
    httpd = _QuietServer(("127.0.0.1", 0), _handler(record))
    if context is not None:
        def note_server_name(sock: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
            record.server_names.append(name)

        context.sni_callback = note_server_name
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    record.url = f"{scheme}://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield record
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.fixture
def http_server() -> Iterator[Server]:
    with serve() as server:
        yield server


def dev_fetch(url: str, dest: Path, *, max_bytes: int = 100) -> int:
    return fetch_url(url, dest, allowed_buckets=BUCKETS, allow_private=True, max_bytes=max_bytes, timeout=5)


def test_a_download_over_http_stops_when_its_progress_says_so(http_server: Server, tmp_path: Path) -> None:
    seen: list[int] = []
    with pytest.raises(Stop):  # (the server would send 256 MiB)
        fetch_url(f"{http_server.url}/endless", tmp_path / "d", allowed_buckets=BUCKETS, allow_private=True,
                  max_bytes=1 << 30, timeout=5, progress=stop_past(2 << 20, seen))
    assert seen == [1 << 20, 2 << 20, 3 << 20] and not (tmp_path / "d").exists()


def test_http_download_in_development_mode(http_server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "d"
    assert dev_fetch(f"{http_server.url}/to-data", dest) == 7 and dest.read_bytes() == b"payload"
    assert [path for path, _ in http_server.requests] == ["/to-data", "/data"]


@pytest.mark.parametrize(("path", "words", "retryable"), [
    ("/missing", "HTTP 404", False),
    ("/busy", "HTTP 503", True),
    ("/slow-down", "HTTP 429", True),
    ("/no-location", "HTTP 302", False),
    ("/big", "5000 bytes, over the limit of 100", False),
    ("/chunked", "larger than the limit of 100 bytes", False),
    ("/loop", f"more than {MAX_REDIRECTS} redirects", False),
    ("/to-s3", "bucket 'inputs-ok' is not on this deployment's allow-list", False),  # no S3 through a redirect
])
def test_http_failures(http_server: Server, tmp_path: Path, path: str, words: str, retryable: bool) -> None:
    dest = tmp_path / "d"
    with pytest.raises(JobSystemError) as info:
        dev_fetch(f"{http_server.url}{path}", dest)
    assert info.value.code == "input_fetch_failed" and words in str(info.value)
    assert info.value.retryable is retryable and not dest.exists()
    if path == "/loop":
        assert len(http_server.requests) == MAX_REDIRECTS + 1


def test_a_closed_port_is_retryable(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(JobSystemError) as info:
        dev_fetch(f"http://127.0.0.1:{port}/x", tmp_path / "d")
    assert info.value.retryable


def test_without_allow_private_nothing_private_is_contacted(http_server: Server, tmp_path: Path) -> None:
    port = http_server.url.rsplit(":", 1)[1]
    resolve = resolver_for({"files.example": ["10.0.0.5"], "loop.example": ["127.0.0.1"]})
    for url in (f"{http_server.url}/data", f"https://127.0.0.1:{port}/data", f"https://loop.example:{port}/data",
                "https://files.example/data", "https://[::ffff:127.0.0.1]/data"):
        with pytest.raises(JobSystemError) as info:
            fetch_url(url, tmp_path / "d", allowed_buckets=BUCKETS, max_bytes=100, resolver=resolve)
        assert "URL refused" in str(info.value) and not info.value.retryable
    assert http_server.requests == []


def pinned_check(server: Server, *, also: Sequence[str] = ()) -> Callable[[str], Sequence[str]]:
    """The production check (with a stand-in resolver), except that ``files.test`` is the test server on
    127.0.0.1, returned after ``also``: as if files.test were a public name that resolves there."""
    resolve = resolver_for(NAMES)

    def check(url: str) -> Sequence[str]:
        if url.split("/")[2].split(":")[0] == "files.test":
            return [*also, "127.0.0.1"]
        check_url(url, allowed_buckets=frozenset(), resolver=resolve)
        return [PUBLIC]
    return check


def test_connects_to_the_checked_address_with_the_host_name_in_host(http_server: Server, tmp_path: Path) -> None:
    # files.test has no DNS entry: reaching the server proves the connection went to the checked address;
    # 127.0.0.2 refuses (nothing listens there), so the next checked address is tried
    port = http_server.url.rsplit(":", 1)[1]
    dest = tmp_path / "d"
    check = pinned_check(http_server, also=["127.0.0.2"])
    assert fetch_http(f"http://files.test:{port}/echo-host", dest, check=check, max_bytes=100, timeout=5) > 0
    assert dest.read_text() == f"files.test:{port}"


@pytest.mark.parametrize(("path", "refused"), [
    ("/to-metadata", "169.254.169.254"),
    ("/to-private-name", "mixed.example"),
    ("/to-http", "scheme 'http'"),
])
def test_every_redirect_is_checked(http_server: Server, tmp_path: Path, path: str, refused: str) -> None:
    port = http_server.url.rsplit(":", 1)[1]
    dest = tmp_path / "m"
    with pytest.raises(JobSystemError) as info:
        fetch_http(f"http://files.test:{port}{path}", dest, check=pinned_check(http_server), max_bytes=100,
                   timeout=5)
    assert "redirect refused" in str(info.value) and refused in str(info.value) and not info.value.retryable
    assert not dest.exists() and [p for p, _ in http_server.requests] == [path]


# --- TLS to a pinned address: SNI and the certificate are checked against the name ----------------------------


@dataclass
class Pki:
    ca: ssl.SSLContext  # a client context trusting only the test CA
    issue: Callable[[str], ssl.SSLContext]  # a server context with a certificate for a name


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dcc test CA")])
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                            crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
               .sign(ca_key, hashes.SHA256()))
    client = ssl.create_default_context(cadata=ca_cert.public_bytes(serialization.Encoding.PEM).decode())

    def issue(name: str) -> ssl.SSLContext:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])).issuer_name(ca_name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
                .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                               critical=False)
                .sign(ca_key, hashes.SHA256()))
        pem = directory / f"{name}.pem"
        pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.load_cert_chain(pem)
        return server

    return Pki(ca=client, issue=issue)


def test_https_to_a_pinned_address_verifies_the_host_name(pki: Pki, tmp_path: Path) -> None:
    dest = tmp_path / "d"
    with serve(pki.issue("files.test")) as record:
        port = record.url.rsplit(":", 1)[1]
        assert fetch_http(f"https://files.test:{port}/echo-host", dest, check=pinned_check(record), max_bytes=100,
                          timeout=5, verify=pki.ca) > 0
        assert dest.read_text() == f"files.test:{port}" and record.server_names == ["files.test"]


def test_https_to_a_pinned_address_refuses_a_certificate_for_another_name(pki: Pki, tmp_path: Path) -> None:
    dest = tmp_path / "d"
    with serve(pki.issue("other.test")) as record:
        port = record.url.rsplit(":", 1)[1]
        with pytest.raises(JobSystemError, match="certificate") as info:
            fetch_http(f"https://files.test:{port}/data", dest, check=pinned_check(record), max_bytes=100,
                       timeout=5, verify=pki.ca)
        assert info.value.code == "input_fetch_failed" and record.requests == [] and not dest.exists()


def test_a_download_the_workers_own_disk_cannot_take_counts_against_the_worker(tmp_path: Path) -> None:
    from dcc.url_inputs import _save

    with pytest.raises(JobSystemError) as info:
        _save([b"data"], tmp_path / "no-such-folder" / "x", max_bytes=100, url="https://example.org/x")
    assert (info.value.code, info.value.retryable, info.value.machine) == ("input_fetch_failed", True, True)


def test_a_source_that_fails_while_it_is_read_is_not_blamed_on_the_workers_disk(tmp_path: Path) -> None:
    from dcc.url_inputs import _save

    def stalls() -> Iterator[bytes]:
        yield b"part"
        raise TimeoutError("read timed out")  # (an OSError, as some clients' read timeouts are)

    with pytest.raises(TimeoutError):
        _save(stalls(), tmp_path / "x", max_bytes=100, url="s3://b/x")
    assert not (tmp_path / "x").exists()
