"""Both storage adapters against one suite: a local directory, and S3 on moto."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import httpx
import pytest
import requests
from moto import mock_aws

from dcc.errors import ObjectNotFound, StorageError
from dcc.local_storage import LocalStorage
from dcc.s3_storage import S3Storage
from dcc.storage import Storage

BUCKET = "jobs-bucket"
UNSAFE = ["../x", "/etc/passwd", "a/../../b", "a//b", "a/./b", "", "a\\b", "x\x00y", "./x", "a/.."]


def everything_stored(storage: Storage, tmp_path: Path) -> list[str]:
    """Every file under the test's directory (local) or every key in the whole bucket (S3)."""
    if isinstance(storage, LocalStorage):
        return sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if not p.is_dir())
    reply = boto3.client("s3").list_objects_v2(Bucket=BUCKET)
    return [obj["Key"] for obj in reply.get("Contents", [])]


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Storage]:
    if request.param == "local":
        yield LocalStorage(tmp_path / "root")
        return
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield S3Storage(BUCKET, prefix="deploy1")


def test_puts_gets_and_replaces(storage: Storage) -> None:
    assert not storage.exists("jobs/a/x.txt")
    storage.put_bytes("jobs/a/x.txt", b"hello", content_type="text/plain")
    assert storage.get_bytes("jobs/a/x.txt") == b"hello"
    assert storage.exists("jobs/a/x.txt") and not storage.exists("jobs/a/y.txt")
    storage.put_bytes("jobs/a/x.txt", b"again")
    with storage.open("jobs/a/x.txt") as f:
        assert f.read(2) == b"ag"
        assert f.read() == b"ain"
    storage.put_bytes("jobs/a/empty", b"")
    assert storage.get_bytes("jobs/a/empty") == b"" and storage.exists("jobs/a/empty")


def test_big_file_round_trips_through_put_file_and_download(storage: Storage, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(9 * 1024 * 1024 + 123))  # past boto3's 8 MiB multipart threshold
    storage.put_file("jobs/a/sub/big.bin", big, content_type="application/octet-stream")
    assert list(storage.list("jobs/a/sub/")) == [("jobs/a/sub/big.bin", big.stat().st_size)]
    back = tmp_path / "back.bin"
    storage.download("jobs/a/sub/big.bin", back)
    assert back.read_bytes() == big.read_bytes()
    if isinstance(storage, S3Storage):  # it went up in parts
        etag = boto3.client("s3").head_object(Bucket=BUCKET, Key="deploy1/jobs/a/sub/big.bin")["ETag"]
        assert "-" in etag


class Stop(Exception):
    pass


def test_a_download_stops_when_its_progress_says_so_and_leaves_no_file(storage: Storage, tmp_path: Path) -> None:
    size = 20 * 1024 * 1024  # S3: in ranged parts, fetched by several threads at once
    storage.put_bytes("jobs/a/big.bin", b"b" * size)
    seen: list[int] = []

    def progress(done: int) -> None:
        seen.append(done)
        if done >= 2 << 20:
            raise Stop

    with pytest.raises(Stop):
        storage.download("jobs/a/big.bin", tmp_path / "back.bin", progress=progress)
    assert not (tmp_path / "back.bin").exists() and not list(tmp_path.glob("back.bin*"))
    assert seen == sorted(seen) and seen[-1] < size  # told of the bytes so far, and stopped before the end
    complete: list[int] = []
    storage.download("jobs/a/big.bin", tmp_path / "back.bin", progress=complete.append)
    assert complete[-1] == size == (tmp_path / "back.bin").stat().st_size


def test_lists_in_key_order(storage: Storage) -> None:
    keys = ["jobs/b/2", "jobs/a/1", "jobs/a0", "jobs/b/1/deep", "jobs/c", "jobs/a-b", "other/x"]
    for key in keys:
        storage.put_bytes(key, key.encode())
    # "-" < "/" < "0": key order, not a depth-first walk of directories
    assert list(storage.list("jobs/a")) == [("jobs/a-b", 8), ("jobs/a/1", 8), ("jobs/a0", 7)]
    assert list(storage.list("jobs/b/")) == [("jobs/b/1/deep", 13), ("jobs/b/2", 8)]
    assert [k for k, _ in storage.list("")] == sorted(keys)
    assert list(storage.list("jobs/nothing/")) == [] and list(storage.list("nowhere/")) == []


def test_deletes_by_prefix(storage: Storage, tmp_path: Path) -> None:
    for key in ("jobs/b/2", "jobs/a/1", "jobs/b/1/deep", "jobs/c", "jobs/bb"):
        storage.put_bytes(key, b"x")
    storage.delete_prefix("jobs/b/")
    assert [k for k, _ in storage.list("")] == ["jobs/a/1", "jobs/bb", "jobs/c"]
    storage.delete_prefix("jobs/a")  # not only whole directories
    assert [k for k, _ in storage.list("")] == ["jobs/bb", "jobs/c"]
    storage.delete_prefix("nothing/here/")  # no error
    storage.delete_prefix("jobs/")
    assert list(storage.list("")) == [] and everything_stored(storage, tmp_path) == []
    if isinstance(storage, LocalStorage):  # and no empty directories are left behind
        assert list((tmp_path / "root").iterdir()) == []


def test_deletes_more_than_one_request_holds(storage: Storage) -> None:
    for i in range(1005):
        storage.put_bytes(f"jobs/many/{i:04d}", b"")
    storage.put_bytes("jobs/keep", b"k")
    storage.delete_prefix("jobs/many/")
    assert list(storage.list("jobs/")) == [("jobs/keep", 1)]


def test_missing_key_is_object_not_found(storage: Storage, tmp_path: Path) -> None:
    storage.put_bytes("jobs/a/b", b"x")
    for key in ("jobs/none", "jobs/a", "jobs/a/b/c"):  # a "directory" is not an object either
        with pytest.raises(ObjectNotFound):
            storage.get_bytes(key)
        with pytest.raises(ObjectNotFound):
            storage.open(key)
        with pytest.raises(ObjectNotFound):
            storage.download(key, tmp_path / "dest")
        assert not storage.exists(key)
    assert not (tmp_path / "dest").exists()


@pytest.mark.parametrize("key", UNSAFE)
def test_unsafe_keys_are_refused_and_nothing_is_written(storage: Storage, tmp_path: Path, key: str) -> None:
    source = tmp_path / "source"
    source.write_bytes(b"pwned")
    attempts = [
        lambda: storage.put_bytes(key, b"pwned"),
        lambda: storage.put_file(key, source),
        lambda: storage.get_bytes(key),
        lambda: storage.open(key),
        lambda: storage.download(key, tmp_path / "dest"),
        lambda: storage.exists(key),
        lambda: storage.presigned_url(key),
        lambda: storage.delete_prefix(key),
    ]
    if key:  # "" is the prefix of everything, a fine thing to list
        attempts.append(lambda: list(storage.list(key)))
    for attempt in attempts:
        with pytest.raises(StorageError) as info:
            attempt()
        assert type(info.value) is StorageError and "unsafe storage key" in str(info.value)
    assert everything_stored(storage, tmp_path) == (["source"] if isinstance(storage, LocalStorage) else [])
    assert b"pwned" not in Path("/etc/passwd").read_bytes()


def test_a_prefix_is_not_an_object_key(storage: Storage) -> None:
    with pytest.raises(StorageError):
        storage.put_bytes("jobs/a/", b"x")
    assert list(storage.list("")) == []


def test_concurrent_writes_and_deletes_do_not_fail(storage: Storage) -> None:
    errors: list[Exception] = []

    def run(work: Callable[[int], None]) -> None:
        try:
            for i in range(40):
                work(i)
        except Exception as exc:
            errors.append(exc)

    def writer(n: int) -> Callable[[int], None]:
        return lambda i: storage.put_bytes(f"jobs/x/{n}/{i}", b"x")

    threads = [threading.Thread(target=run, args=(writer(n),)) for n in range(3)]
    threads.append(threading.Thread(target=run, args=(lambda i: storage.delete_prefix("jobs/x/"),)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for key, _ in storage.list(""):
        assert storage.get_bytes(key) == b"x"


def test_presigned_url_names_bucket_and_key(storage: Storage) -> None:
    storage.put_bytes("jobs/a/out.txt", b"x")
    url = storage.presigned_url("jobs/a/out.txt", expires=60)
    if isinstance(storage, LocalStorage):
        assert url is None
    else:
        assert url is not None and BUCKET in url and "/deploy1/jobs/a/out.txt?" in url and "Signature" in url
        # fetched as a client would, with nothing but the URL
        assert requests.get(url, timeout=10).content == b"x"  # (moto answers the requests library)


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1", "ap-east-1"])
def test_presigned_urls_are_sigv4_on_the_bucket_s_regional_host(region: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # (botocore's default presigns with SigV2, which S3 is turning off, in us-east-1 and eu-west-1, and puts the
    # others on the global host, which redirects a new bucket's requests and breaks their signature)
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": region}.items():
        monkeypatch.setenv(name, value)
    url = httpx.URL(S3Storage("bkt").presigned_url("jobs/a/out.txt", expires=60) or "")
    assert url.host == f"bkt.s3.{region}.amazonaws.com" and url.path == "/jobs/a/out.txt"
    assert url.params["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256" and f"/{region}/s3/" in url.params["X-Amz-Credential"]


@pytest.mark.parametrize("storage", ["s3"], indirect=True)
def test_s3_errors_are_storage_errors(storage: Storage) -> None:
    storage.put_bytes("jobs/t", b"x", content_type="text/plain")
    assert boto3.client("s3").head_object(Bucket=BUCKET, Key="deploy1/jobs/t")["ContentType"] == "text/plain"
    gone = S3Storage("no-such-bucket")
    with pytest.raises(StorageError) as info:
        gone.put_bytes("jobs/t", b"x")
    assert type(info.value) is StorageError and info.value.__cause__ is not None
    with pytest.raises(StorageError):
        list(gone.list("jobs/"))


def test_a_failed_write_leaves_the_old_object_and_no_temporary_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = LocalStorage(tmp_path / "root")
    storage.put_bytes("jobs/k", b"old")

    def disk_broke(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", disk_broke)
    with pytest.raises(StorageError):
        storage.put_bytes("jobs/k", b"new")
    monkeypatch.undo()
    assert storage.get_bytes("jobs/k") == b"old"
    assert sorted(p.name for p in (tmp_path / "root" / "jobs").iterdir()) == ["k"]
    with pytest.raises(StorageError):
        storage.put_file("jobs/k", tmp_path / "missing")
    assert storage.get_bytes("jobs/k") == b"old"


def test_local_storage_refuses_links_out_of_its_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("s3cret")
    root = tmp_path / "root"
    (root / "real").mkdir(parents=True)
    (root / "jobs").symlink_to(outside)  # a directory link
    (root / "real" / "secret").symlink_to(outside / "secret")  # a file link
    storage = LocalStorage(root)
    for key in ("jobs/new", "jobs/secret", "jobs/deeper/new", "real/secret"):
        with pytest.raises(StorageError, match="link"):
            storage.put_bytes(key, b"x")
    for key in ("jobs/secret", "real/secret"):
        with pytest.raises(StorageError, match="link") as info:
            storage.get_bytes(key)
        assert not isinstance(info.value, ObjectNotFound)
        with pytest.raises(StorageError, match="link"):
            storage.exists(key)
        with pytest.raises(StorageError, match="link"):
            storage.download(key, tmp_path / "dest")
    with pytest.raises(StorageError, match="link"):
        list(storage.list("jobs/"))
    assert list(storage.list("")) == []  # links are not objects
    with pytest.raises(StorageError, match="link"):
        storage.delete_prefix("jobs/x")
    storage.delete_prefix("real/")
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert (outside / "secret").read_text() == "s3cret" and not (tmp_path / "dest").exists()


def test_file_links_are_checked_and_odd_expiries_are_refused_not_errors() -> None:
    from dcc.local_storage import FileLinks

    links = FileLinks("/_files")
    link = links.link("jobs/a/outputs/x y", 60)
    path, _, query = link.partition("?")
    params = dict(p.split("=") for p in query.split("&"))
    assert path == "/_files/jobs/a/outputs/x%20y"
    assert links.check("jobs/a/outputs/x y", params["expires"], params["signature"])
    assert not links.check("jobs/a/outputs/other", params["expires"], params["signature"])
    assert not FileLinks("/_files").check("jobs/a/outputs/x y", params["expires"], params["signature"])  # (its key)
    for expires in ("\u00b2", "9" * 5000, "-1", "", "1"):
        assert not links.check("jobs/a/outputs/x y", expires, params["signature"])
