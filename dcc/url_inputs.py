"""URL inputs: which URLs a job may name, and fetching them on the worker.

A job may name ``s3://bucket/key`` (buckets on the deployment's allow-list) or ``https://host/path`` whose
host resolves only to public addresses, so a job cannot reach instance metadata, Redis or anything else
on the private network through its inputs. The check runs at submit and again before each fetch and each
redirect (DNS may change in between).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlparse

import httpx

from dcc.errors import InvalidJob, JobSystemError

Resolver = Callable[..., list[tuple[Any, ...]]]
MAX_REDIRECTS = 5
_CGNAT = ipaddress.ip_network("100.64.0.0/10")


def is_public(address: str) -> bool:
    """Whether an IP address is a public unicast one (not private, loopback, link-local, reserved, ...)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved
                or ip.is_unspecified or (ip.version == 4 and ip in _CGNAT)) and ip.is_global


def check_url(url: str, *, allowed_buckets: frozenset[str], allow_private: bool = False,
              resolver: Resolver = socket.getaddrinfo) -> None:
    """Raise ``InvalidJob`` saying why ``url`` may not be fetched for a job."""
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        if not parsed.netloc or not parsed.path.strip("/"):
            raise InvalidJob(f"{url!r} is not an s3://bucket/key URL")
        if parsed.netloc not in allowed_buckets:
            raise InvalidJob(f"bucket {parsed.netloc!r} is not on this deployment's allow-list")
        return
    schemes = ("https", "http") if allow_private else ("https",)
    if parsed.scheme not in schemes:
        raise InvalidJob(f"URL scheme {parsed.scheme or 'none'!r} is not allowed (use https:// or s3://)")
    if parsed.username or parsed.password:
        raise InvalidJob("URLs with user names or passwords are not allowed")
    host = parsed.hostname
    if not host:
        raise InvalidJob(f"{url!r} has no host")
    if allow_private:
        return
    try:
        infos = resolver(host, parsed.port or 443, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as exc:
        raise InvalidJob(f"host {host!r} does not resolve") from exc
    addresses = {info[4][0] for info in infos}
    if not addresses:
        raise InvalidJob(f"host {host!r} does not resolve")
    for address in addresses:
        if not is_public(address):
            raise InvalidJob(f"host {host!r} resolves to {address}, which is not a public address")


def fetch_url(url: str, dest: Path, *, allowed_buckets: frozenset[str], allow_private: bool = False,
              s3_client: Any = None, max_bytes: int, timeout: float = 60) -> int:
    """Download ``url`` to ``dest`` (at most ``max_bytes``); raise ``JobSystemError`` on failure."""
    try:
        check_url(url, allowed_buckets=allowed_buckets, allow_private=allow_private)
    except InvalidJob as exc:
        raise JobSystemError("input_fetch_failed", f"{url}: {exc}", retryable=False) from exc
    if url.startswith("s3://"):
        return _fetch_s3(url, dest, s3_client=s3_client, max_bytes=max_bytes)
    def check_hop(location: str) -> None:
        check_url(location, allowed_buckets=frozenset(), allow_private=allow_private)

    return fetch_http(url, dest, check=check_hop, max_bytes=max_bytes, timeout=timeout)


def _fetch_s3(url: str, dest: Path, *, s3_client: Any, max_bytes: int) -> int:
    import boto3
    import botocore.exceptions

    parsed = urlparse(url)
    client = s3_client or boto3.client("s3")
    try:
        body = client.get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))["Body"]
        return _copy(body.iter_chunks(1 << 20), dest, max_bytes, url)
    except botocore.exceptions.ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 500)
        raise JobSystemError("input_fetch_failed", f"{url}: {exc}", retryable=status >= 500) from exc
    except botocore.exceptions.BotoCoreError as exc:
        raise JobSystemError("input_fetch_failed", f"{url}: {exc}", retryable=True) from exc


def fetch_http(url: str, dest: Path, *, check: Callable[[str], None], max_bytes: int, timeout: float = 60) -> int:
    """Download over HTTP(S), following at most a few redirects, each of which must pass ``check``."""
    with httpx.Client(follow_redirects=False, timeout=timeout) as client:
        for _ in range(MAX_REDIRECTS + 1):
            try:
                with client.stream("GET", url) as reply:
                    if reply.is_redirect:
                        url = urljoin(url, reply.headers.get("location", ""))
                        try:
                            check(url)
                        except InvalidJob as exc:
                            raise JobSystemError("input_fetch_failed", f"redirect refused: {exc}",
                                                 retryable=False) from exc
                        continue
                    if reply.status_code >= 400:
                        raise JobSystemError("input_fetch_failed", f"{url}: HTTP {reply.status_code}",
                                             retryable=reply.status_code >= 500 or reply.status_code == 429)
                    return _copy(reply.iter_bytes(1 << 20), dest, max_bytes, url)
            except httpx.HTTPError as exc:
                raise JobSystemError("input_fetch_failed", f"{url}: {exc}", retryable=True) from exc
    raise JobSystemError("input_fetch_failed", f"more than {MAX_REDIRECTS} redirects", retryable=False)


def _copy(chunks: Any, dest: Path, max_bytes: int, url: str) -> int:
    total = 0
    with dest.open("wb") as f:
        for chunk in chunks:
            total += len(chunk)
            if total > max_bytes:
                raise JobSystemError("input_fetch_failed", f"{url}: larger than {max_bytes} bytes", retryable=False)
            f.write(chunk)
    return total
