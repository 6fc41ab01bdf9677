"""The composition root: Redis auth from Secrets Manager (moto), storage chosen by URL."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from dcc.bootstrap import build_storage, redis_url_with_secret
from dcc.local_storage import LocalStorage
from dcc.s3_storage import S3Storage


def test_the_auth_token_comes_from_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in {"AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t", "AWS_DEFAULT_REGION": "eu-west-1"}.items():
        monkeypatch.setenv(k, v)
    with mock_aws():
        arn = boto3.client("secretsmanager").create_secret(Name="redis", SecretString="to/ken+x")["ARN"]
        url = redis_url_with_secret("rediss://master.dcc.cache.amazonaws.com:6379/0", arn)
    assert url == "rediss://:to%2Fken%2Bx@master.dcc.cache.amazonaws.com:6379/0"
    assert redis_url_with_secret("redis://:given@h:1/0", arn) == "redis://:given@h:1/0"  # an explicit one wins
    assert redis_url_with_secret("redis://h:1/0", None) == "redis://h:1/0"


def test_storage_is_chosen_by_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert isinstance(build_storage(str(tmp_path / "s")), LocalStorage) and (tmp_path / "s").is_dir()
    s3 = build_storage("s3://bucket/some/prefix")
    assert isinstance(s3, S3Storage) and (s3.bucket, s3.prefix) == ("bucket", "some/prefix/")
