"""The composition root: pick the adapters the settings name and build the service and the worker's parts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

from dcc.service import JobService
from dcc.settings import Settings
from dcc.storage import Storage
from dcc.store import JobStore, connect


def build_storage(url: str) -> Storage:
    """``s3://bucket/prefix`` → S3; anything else is a local directory."""
    if url.startswith("s3://"):
        from dcc.s3_storage import S3Storage

        parsed = urlparse(url)
        return S3Storage(parsed.netloc, prefix=parsed.path.lstrip("/"))
    from dcc.local_storage import LocalStorage

    path = Path(url.removeprefix("file://"))
    path.mkdir(parents=True, exist_ok=True)
    return LocalStorage(path)


def redis_url_with_secret(url: str, secret_arn: str | None, *, client: Any = None) -> str:
    """``url`` with the auth token from Secrets Manager put in, when a secret is named and the URL has none."""
    parsed = urlparse(url)
    if not secret_arn or parsed.password:
        return url
    import boto3

    token = (client or boto3.client("secretsmanager")).get_secret_value(SecretId=secret_arn)["SecretString"]
    host = parsed.netloc.rsplit("@", 1)[-1]
    return parsed._replace(netloc=f":{quote(token, safe='')}@{host}").geturl()


def build_store(settings: Settings) -> JobStore:
    """The Redis job store the settings name (with its auth token from ``DCC_REDIS_SECRET_ARN`` if set)."""
    url = redis_url_with_secret(settings.redis_url, os.environ.get("DCC_REDIS_SECRET_ARN"))
    client = connect(url, socket_timeout=settings.redis_socket_timeout)
    store = JobStore(
        client,
        prefix=settings.key_prefix,
        lease_seconds=settings.lease_seconds,
        retention_seconds=settings.retention_seconds,
        max_attempts=settings.max_attempts,
        fast_retention_seconds=settings.fast_result_seconds,
    )
    store.check_version()
    return store


def build_service(settings: Settings, *, storage: Storage | None = None, store: JobStore | None = None) -> JobService:
    """The API's service for these settings."""
    from dcc.url_inputs import check_url

    def check(url: str) -> None:
        check_url(url, allowed_buckets=settings.allowed_buckets, allow_private=settings.allow_private_urls)

    store = store or build_store(settings)
    notify = None
    endpoint = os.environ.get("DCC_WEBSOCKET_ENDPOINT")
    if endpoint:  # on AWS: state changes the API makes (a cancel) are pushed to WebSocket subscribers
        import boto3

        from dcc.push import WebsocketPusher

        notify = WebsocketPusher(store, boto3.client("apigatewaymanagementapi", endpoint_url=endpoint)).push
    return JobService(store=store, storage=storage or build_storage(settings.storage_url), settings=settings,
                      check_url=check, notify=notify)
