"""URL inputs: which URLs a job may name, and fetching them on the worker.

A job may name ``s3://bucket/key`` (buckets on the deployment's allow-list) or ``https://host/path`` whose
host resolves only to public addresses, so a job cannot reach instance metadata, Redis or anything else
on the private network through its inputs. The check runs at submit and again before each fetch and each
redirect (DNS may change in between).

Fetching closes the gap between checking a name and connecting to it: the worker resolves the host once,
checks every address, and connects to a checked address itself (the request goes to the IP, with the
``Host`` header and the TLS server name, SNI and certificate check, still those of the host name), so a
second, different DNS answer is never used.

``allow_private=True`` (development and tests only) skips the address check, allows plain ``http://`` too
and connects by name.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.parse import SplitResult, urlsplit

import httpx

from dcc.errors import InvalidJob, JobSystemError
from dcc.storage import Progress

Resolver = Callable[..., Sequence[tuple[Any, ...]]]  # socket.getaddrinfo's shape
MAX_REDIRECTS = 5
_CHUNK = 1 << 20
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # an IPv4 address behind a NAT64 gateway
_RETRYABLE_STATUS = {408, 429}  # 4xx that another attempt may get past; other 4xx are final


def is_public(address: str) -> bool:
    """Whether an IP address is public unicast (not private, loopback, link-local, CGNAT, reserved, ...)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in _NAT64 else None)
        if embedded is not None:  # judged by the IPv4 address it stands for
            return is_public(str(embedded))
        if ip.sixtofour is not None and not is_public(str(ip.sixtofour)):
            return False
        if ip.is_site_local:
            return False
    return ip.is_global and not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
                                 or ip.is_reserved or ip.is_unspecified or ip in _CGNAT)


def check_url(url: str, *, allowed_buckets: frozenset[str], allow_private: bool = False,
              resolver: Resolver = socket.getaddrinfo) -> None:
    """Raise ``InvalidJob`` saying why ``url`` may not be fetched for a job."""
    _checked_addresses(url, allowed_buckets=allowed_buckets, allow_private=allow_private, resolver=resolver)


def _invalid(message: str) -> InvalidJob:
    return InvalidJob(message, field="url")


def _checked_addresses(url: str, *, allowed_buckets: frozenset[str], allow_private: bool,
                       resolver: Resolver) -> tuple[str, ...]:
    """Check ``url``; return the addresses an http(s) fetch may connect to (empty: s3, or by name)."""
    try:
        parsed = urlsplit(url)
        port = parsed.port
    except ValueError as exc:
        raise _invalid(f"{url!r} is not a valid URL: {exc}") from exc
    if parsed.scheme == "s3":
        _check_s3(url, parsed, allowed_buckets)
        return ()
    schemes = ("https", "http") if allow_private else ("https",)
    if parsed.scheme not in schemes:
        raise _invalid(f"URL scheme {parsed.scheme or 'none'!r} is not allowed (use https:// or s3://)")
    if "@" in parsed.netloc:
        raise _invalid("URLs with user names or passwords are not allowed")
    try:  # the host name as httpx will send it (IDNA 2008), so the name checked is the name fetched
        host = httpx.URL(url).raw_host.decode("ascii")
    except httpx.InvalidURL as exc:
        raise _invalid(f"{url!r} is not a valid URL: {exc}") from exc
    if not host:
        raise _invalid(f"{url!r} has no host")
    if allow_private:
        return ()
    try:
        infos = resolver(host, port or 443, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError, ValueError) as exc:
        raise _invalid(f"host {host!r} does not resolve") from exc
    addresses = tuple(dict.fromkeys(str(info[4][0]) for info in infos))  # unique, in the resolver's order
    if not addresses:
        raise _invalid(f"host {host!r} does not resolve")
    for address in addresses:
        if not is_public(address):
            raise _invalid(f"host {host!r} resolves to {address}, which is not a public address")
    return addresses


def _check_s3(url: str, parsed: SplitResult, allowed_buckets: frozenset[str]) -> None:
    if not parsed.netloc or len(parsed.path) < 2:
        raise _invalid(f"{url!r} is not an s3://bucket/key URL")
    if parsed.query or parsed.fragment or url.endswith(("?", "#")):
        raise _invalid(f"{url!r}: an s3:// URL may not contain '?' or '#'")
    if parsed.netloc not in allowed_buckets:
        raise _invalid(f"bucket {parsed.netloc!r} is not on this deployment's allow-list")


class Fetcher(Protocol):
    """Downloads a URL input to a file: ``fetch_url`` with a deployment's settings."""

    def __call__(self, url: str, dest: Path, *, progress: Progress | None = None) -> int: ...


def fetch_url(url: str, dest: Path, *, allowed_buckets: frozenset[str], allow_private: bool = False,
              s3_client: Any = None, max_bytes: int, timeout: float = 60,
              resolver: Resolver = socket.getaddrinfo, progress: Progress | None = None) -> int:
    """Download ``url`` to ``dest`` (at most ``max_bytes``, telling ``progress``); return the size;
    ``JobSystemError`` on failure."""
    if url.split(":", 1)[0].lower() == "s3":
        try:
            check_url(url, allowed_buckets=allowed_buckets, allow_private=allow_private, resolver=resolver)
        except InvalidJob as exc:
            raise _failed(f"{url}: {exc}", retryable=False) from exc
        return _fetch_s3(url, dest, s3_client=s3_client, max_bytes=max_bytes, progress=progress)

    def check(location: str) -> tuple[str, ...]:
        # no buckets: a web server cannot redirect the worker into reading S3 on its behalf
        return _checked_addresses(location, allowed_buckets=frozenset(), allow_private=allow_private,
                                  resolver=resolver)

    return fetch_http(url, dest, check=check, max_bytes=max_bytes, timeout=timeout, progress=progress)


def _failed(message: str, *, retryable: bool, machine: bool = False) -> JobSystemError:
    # retried where another try may work; counted against the worker only where it is its own (its disk): the job
    # named the server
    return JobSystemError("input_fetch_failed", message, retryable=retryable, machine=machine)


def _fetch_s3(url: str, dest: Path, *, s3_client: Any, max_bytes: int, progress: Progress | None) -> int:
    import boto3
    import botocore.exceptions

    parsed = urlsplit(url)
    client = boto3.client("s3") if s3_client is None else s3_client
    try:
        reply = client.get_object(Bucket=parsed.netloc, Key=parsed.path[1:])
        body = reply["Body"]
        try:
            if int(reply.get("ContentLength") or 0) > max_bytes:
                raise _failed(f"{url}: {reply['ContentLength']} bytes, over the limit of {max_bytes}",
                              retryable=False)
            return _save(body.iter_chunks(_CHUNK), dest, max_bytes=max_bytes, url=url, progress=progress)
        finally:
            body.close()
    except botocore.exceptions.ClientError as exc:
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 500)
        raise _failed(f"{url}: {exc}", retryable=status >= 500 or status in _RETRYABLE_STATUS) from exc
    except botocore.exceptions.BotoCoreError as exc:  # (no credentials is the worker's own; a timeout is S3's)
        credentials = (botocore.exceptions.NoCredentialsError, botocore.exceptions.PartialCredentialsError,
                       botocore.exceptions.CredentialRetrievalError)
        raise _failed(f"{url}: {exc}", retryable=True, machine=isinstance(exc, credentials)) from exc


def fetch_http(url: str, dest: Path, *, check: Callable[[str], Sequence[str]], max_bytes: int,
               timeout: float = 60, verify: ssl.SSLContext | bool = True, progress: Progress | None = None) -> int:
    """Download over HTTP(S), following at most ``MAX_REDIRECTS`` redirects.

    ``check(url)`` runs on the URL and on every redirect target: it raises ``InvalidJob`` to refuse one,
    or returns the addresses to connect to (empty: connect by name). Each hop gets a client of its own, so
    no connection made for one host name is reused for another name on the same address.
    """
    for hop in range(MAX_REDIRECTS + 1):
        try:
            addresses = check(url)
        except InvalidJob as exc:
            what = "redirect refused" if hop else "URL refused"
            raise _failed(f"{what}: {url}: {exc}", retryable=False) from exc
        outcome = _get(url, addresses, dest, max_bytes=max_bytes, timeout=timeout, verify=verify, progress=progress)
        if isinstance(outcome, int):
            return outcome
        url = outcome
    raise _failed(f"more than {MAX_REDIRECTS} redirects, the last to {url}", retryable=False)


def _get(url: str, addresses: Sequence[str], dest: Path, *, max_bytes: int, timeout: float,
         verify: ssl.SSLContext | bool, progress: Progress | None) -> str | int:
    """GET ``url`` into ``dest`` and return its size, or return a redirect's target (``dest`` untouched)."""
    try:
        target = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise _failed(f"{url}: {exc}", retryable=False) from exc
    # trust_env=False: a proxy from the environment would resolve the name itself (undoing the pinning)
    with httpx.Client(follow_redirects=False, timeout=timeout, verify=verify, trust_env=False) as client:
        for i, address in enumerate(addresses or [None]):
            try:
                request_url, options = _pinned(target, address)
                with client.stream("GET", request_url, **options) as reply:
                    return _handle(url, target, reply, dest, max_bytes=max_bytes, progress=progress)
            except httpx.ConnectError as exc:
                if i + 1 < len(addresses):
                    continue  # e.g. an IPv6 address on a host without IPv6: try the next checked one
                raise _failed(f"{url}: {exc}", retryable=True) from exc
            except httpx.HTTPError as exc:
                raise _failed(f"{url}: {exc}", retryable=True) from exc
    raise AssertionError("unreachable")


def _pinned(target: httpx.URL, address: str | None) -> tuple[httpx.URL, dict[str, Any]]:
    """The request URL and options that reach ``address`` while speaking to ``target``'s host name."""
    if address is None:
        return target, {}
    # Host keeps the name (and a non-default port); the TLS server name (SNI and the certificate check)
    # comes from the sni_hostname extension, which httpcore uses instead of the URL's host
    options: dict[str, Any] = {"headers": {"Host": target.netloc.decode("ascii")}}
    if target.scheme == "https":
        options["extensions"] = {"sni_hostname": target.raw_host.decode("ascii")}
    return target.copy_with(host=address.split("%", 1)[0]), options


def _handle(url: str, target: httpx.URL, reply: httpx.Response, dest: Path, *, max_bytes: int,
            progress: Progress | None) -> str | int:
    if reply.is_redirect and "location" in reply.headers:
        try:
            return str(target.join(reply.headers["location"]).copy_with(fragment=None))
        except httpx.InvalidURL as exc:
            raise _failed(f"{url}: bad redirect location: {exc}", retryable=False) from exc
    if not reply.is_success:
        status = reply.status_code
        raise _failed(f"{url}: HTTP {status}", retryable=status >= 500 or status in _RETRYABLE_STATUS)
    length = reply.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes and not reply.headers.get("content-encoding"):
        raise _failed(f"{url}: {length} bytes, over the limit of {max_bytes}", retryable=False)
    return _save(reply.iter_bytes(_CHUNK), dest, max_bytes=max_bytes, url=url, progress=progress)


def _save(chunks: Iterable[bytes], dest: Path, *, max_bytes: int, url: str, progress: Progress | None = None) -> int:
    """Write ``chunks`` to ``dest``, stopping past ``max_bytes`` or when ``progress`` raises; a failed download
    leaves no file."""
    total = 0
    try:
        with _written(dest, url) as f:
            for chunk in chunks:  # (what reading raises is the source's, an OSError too for some clients)
                total += len(chunk)
                if total > max_bytes:
                    raise _failed(f"{url}: larger than the limit of {max_bytes} bytes", retryable=False)
                try:
                    f.write(chunk)
                except OSError as exc:
                    raise _disk_failed(url, dest, exc) from exc
                if progress is not None:
                    progress(total)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return total


def _written(dest: Path, url: str) -> BinaryIO:
    try:
        return dest.open("wb")
    except OSError as exc:
        raise _disk_failed(url, dest, exc) from exc


def _disk_failed(url: str, dest: Path, exc: OSError) -> JobSystemError:
    """The worker's disk, not the source: retried, and counted against the worker."""
    return _failed(f"{url}: cannot write {dest}: {exc}", retryable=True, machine=True)
