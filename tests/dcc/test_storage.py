"""Both storage adapters against one suite: a local directory, and S3 on moto."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from dcc.errors import ObjectNotFound, StorageError
from dcc.local_storage import LocalStorage
from dcc.s3_storage import S3Storage
from dcc.storage import Storage

UNSAFE = ["../x", "/etc/passwd", "a/../../b", "a//b", "a/./b", "", "a\\b", "x\x00y"]


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Storage]:
    if request.param == "local":
        yield LocalStorage(tmp_path / "root")
        return
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket="jobs")
        yield S3Storage("jobs", prefix="deploy1")


def test_round_trips_bytes_and_files(storage: Storage, tmp_path: Path) -> None:
    storage.put_bytes("jobs/a/x.txt", b"hello")
    assert storage.get_bytes("jobs/a/x.txt") == b"hello"
    assert storage.exists("jobs/a/x.txt") and not storage.exists("jobs/a/y.txt")
    storage.put_bytes("jobs/a/x.txt", b"again")  # replaces
    with storage.open("jobs/a/x.txt") as f:
        assert f.read() == b"again"
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(6 * 1024 * 1024 + 123))
    storage.put_file("jobs/a/sub/big.bin", big)
    back = tmp_path / "back.bin"
    storage.download("jobs/a/sub/big.bin", back)
    assert back.read_bytes() == big.read_bytes()


def test_lists_in_key_order_and_deletes_by_prefix(storage: Storage) -> None:
    for key in ("jobs/b/2", "jobs/a/1", "jobs/b/1/deep", "jobs/c"):
        storage.put_bytes(key, key.encode())
    assert list(storage.list("jobs/b/")) == [("jobs/b/1/deep", 13), ("jobs/b/2", 8)]
    storage.delete_prefix("jobs/b/")
    assert [k for k, _ in storage.list("jobs/")] == ["jobs/a/1", "jobs/c"]
    storage.delete_prefix("nothing/here/")  # no error


def test_missing_key_is_object_not_found(storage: Storage, tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFound):
        storage.get_bytes("jobs/none")
    with pytest.raises(ObjectNotFound):
        storage.download("jobs/none", tmp_path / "x")


@pytest.mark.parametrize("key", UNSAFE)
def test_unsafe_keys_are_refused_and_nothing_is_written(storage: Storage, tmp_path: Path, key: str) -> None:
    with pytest.raises(StorageError):
        storage.put_bytes(key, b"pwned")
    with pytest.raises(StorageError):
        storage.get_bytes(key)
    assert list(storage.list("")) == []
    assert not (tmp_path / "x").exists() and not (tmp_path / "b").exists()


def test_presigned_url_names_bucket_and_key(storage: Storage) -> None:
    storage.put_bytes("jobs/a/out.txt", b"x")
    url = storage.presigned_url("jobs/a/out.txt")
    if isinstance(storage, LocalStorage):
        assert url is None
    else:
        assert url is not None and "jobs" in url and "deploy1/jobs/a/out.txt" in url and "Signature" in url


def test_local_storage_refuses_links_out_of_its_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("s3cret")
    root = tmp_path / "root"
    root.mkdir()
    (root / "jobs").symlink_to(outside)
    storage = LocalStorage(root)
    with pytest.raises(StorageError):
        storage.put_bytes("jobs/new", b"x")
    with pytest.raises(StorageError):
        storage.get_bytes("jobs/secret")
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
