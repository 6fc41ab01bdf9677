"""The composition root: pick the adapters the settings name and build the service and the worker's parts."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

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


def build_store(settings: Settings) -> JobStore:
    """The Redis job store the settings name."""
    client = connect(settings.redis_url, socket_timeout=settings.redis_socket_timeout)
    return JobStore(
        client,
        prefix=settings.key_prefix,
        lease_seconds=settings.lease_seconds,
        retention_seconds=settings.retention_seconds,
        max_attempts=settings.max_attempts,
        fast_retention_seconds=settings.fast_result_seconds,
    )


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
