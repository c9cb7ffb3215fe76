"""ObjectStore against a real SeaweedFS S3 server."""

from __future__ import annotations

import hashlib
import logging
import uuid
from typing import Any

import httpx
import pytest
import urllib3

from granary.settings import Settings
from storage.objectstore import ObjectNotFound, ObjectStore, RangeBeyondObject, StorageError

pytestmark = pytest.mark.integration


@pytest.fixture
def bucket(store: ObjectStore) -> str:
    name = f"t-{uuid.uuid4().hex[:12]}"
    store.ensure_bucket(name)
    return name


def test_round_trip_stat_list_delete(store: ObjectStore, bucket: str) -> None:
    data = "你好, granary\n".encode() * 1000
    info = store.put_bytes(bucket, "a/b/one.txt", data, "text/plain")
    store.put_bytes(bucket, "a/two.txt", b"2")
    assert info.size == len(data)
    assert store.get_bytes(bucket, "a/b/one.txt") == data
    assert b"".join(store.stream(bucket, "a/b/one.txt", chunk_size=1000)) == data
    assert store.stat(bucket, "a/b/one.txt").size == len(data)
    assert sorted(o.key for o in store.list(bucket, "a/")) == ["a/b/one.txt", "a/two.txt"]
    store.delete(bucket, "a/two.txt")
    assert not store.exists(bucket, "a/two.txt")
    with pytest.raises(ObjectNotFound):
        store.get_bytes(bucket, "a/two.txt")


def test_range_reads_return_and_count_exactly_the_bytes_asked(store: ObjectStore,
                                                                bucket: str) -> None:
    from storage.objectstore import reads_by_object

    data = bytes(range(256)) * 40
    store.put_bytes(bucket, "r/blob", data)
    with reads_by_object() as read:
        assert store.get_range(bucket, "r/blob", 0, 1) == data[:1]
        assert store.get_range(bucket, "r/blob", 1000, 300) == data[1000:1300]
        assert store.get_range(bucket, "r/blob", len(data) - 5, 5) == data[-5:]
    assert read == {f"s3://{bucket}/r/blob": 306}
    # the object ends before the range, or before its start: an error that says what next
    for offset in (len(data) - 5, len(data) + 100):
        with pytest.raises(RangeBeyondObject, match=f"is {len(data)} bytes.*Write it again"):
            store.get_range(bucket, "r/blob", offset, 10)
    with pytest.raises(ObjectNotFound):
        store.get_range(bucket, "r/none", 0, 10)
    with pytest.raises(ValueError, match="must be"):
        store.get_range(bucket, "r/blob", 0, 0)


def test_listing_pages_through_many_objects(store: ObjectStore, bucket: str) -> None:
    for i in range(1205):
        store.put_bytes(bucket, f"many/{i:05d}", b"x")
    assert len(list(store.list(bucket, "many/"))) == 1205


def test_presigned_get_is_fetchable_over_http(store: ObjectStore, bucket: str) -> None:
    store.put_bytes(bucket, "share/file.bin", b"\x00\x01payload")
    url = store.presigned_get(bucket, "share/file.bin")
    r = httpx.get(url)
    assert r.status_code == 200 and r.content == b"\x00\x01payload"
    tampered = url.replace("file.bin", "other.bin")
    assert httpx.get(tampered).status_code in (403, 404)


def test_write_atomic_promotes_and_leaves_no_temporary(store: ObjectStore, bucket: str) -> None:
    store.write_atomic(bucket, "out/manifest.json", b'{"v": 1}')
    info = store.write_atomic(bucket, "out/manifest.json", b'{"v": 2}')
    assert store.get_bytes(bucket, "out/manifest.json") == b'{"v": 2}'
    # what the write returns without asking the server again is what the server holds
    held = store.stat(bucket, "out/manifest.json")
    assert (info.size, info.etag.strip('"')) == (held.size, held.etag.strip('"')) == \
        (8, hashlib.md5(b'{"v": 2}').hexdigest())
    assert [o.key for o in store.list(bucket, "_tmp/")] == []


def test_raw_bucket_versioning_keeps_old_versions(store: ObjectStore) -> None:
    name = f"v-{uuid.uuid4().hex[:12]}"
    store.ensure_bucket(name, versioning=True)
    first = store.put_bytes(name, "k", b"one")
    store.put_bytes(name, "k", b"two")
    assert first.version_id
    assert store.get_bytes(name, "k", version_id=first.version_id) == b"one"
    assert store.get_bytes(name, "k") == b"two"


def test_wrong_credentials_are_refused(s3: Settings, bucket: str) -> None:
    bad = ObjectStore.connect(s3.endpoint, "nobody", "wrong-secret-wrong", retries=0)
    with pytest.raises(StorageError, match="refused the credentials"):
        bad.put_bytes(bucket, "x", b"x")


def test_unreachable_server_fails_clearly_after_retries() -> None:
    dead = ObjectStore.connect("127.0.0.1:9", "a", "b", retries=2, backoff=0.05)
    with pytest.raises(StorageError, match="did not answer after 3 attempts"):
        dead.get_bytes("bucket", "key")


class _CutListings:
    """Wraps the SDK's urllib3 pool: the listing requests numbered in ``cut`` (1 = the first)
    fail at the HTTP layer as a dropped connection would, before reaching the server."""

    def __init__(self, http: Any, cut: set[int]) -> None:
        self.http, self.cut, self.listings = http, cut, 0

    def urlopen(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if method == "GET" and "list-type=2" in url:
            self.listings += 1
            if self.listings in self.cut:
                raise urllib3.exceptions.ProtocolError(
                    "Connection aborted.", ConnectionResetError("reset by the test"))
        return self.http.urlopen(method, url, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.http, name)


def test_a_listing_cut_between_pages_is_retried_and_returns_every_key_once(
        s3: Settings, bucket: str, caplog: pytest.LogCaptureFixture) -> None:
    store = ObjectStore.connect(**s3.to_minio(), backoff=0.01)
    keys = sorted(f"p/{i:03d}-{uuid.uuid4().hex[:6]}" for i in range(23))
    for k in keys:
        store.put_bytes(bucket, k, k.encode())
    store.put_bytes(bucket, "q/outside", b"x")
    cutter = _CutListings(store._client._http, cut={3, 5, 6})
    store._client._http = cutter
    paged = store._client._list_objects  # pages of 5 keys, not the SDK's fixed 1000
    store._client._list_objects = lambda *a, **kw: paged(*a, **{**kw, "max_keys": 5})
    with caplog.at_level(logging.WARNING, logger="storage.retry"):
        listed = [o.key for o in store.list(bucket, "p/")]
    assert listed == keys  # every key exactly once, in order, none outside the prefix
    # 23 keys in pages of 5: 5 requests, plus the 3 cut ones tried again
    assert cutter.listings == 5 + 3
    retries = [r.getMessage() for r in caplog.records]
    assert len(retries) == 3 and all(
        m.startswith(f"list s3://{bucket}/p/ failed (ProtocolError") for m in retries)


def test_a_listing_of_a_missing_bucket_or_with_bad_credentials_is_not_retried(
        s3: Settings, bucket: str) -> None:
    store = ObjectStore.connect(**s3.to_minio(), backoff=0.01)
    counter = _CutListings(store._client._http, cut=set())
    store._client._http = counter
    gone = f"gone-{uuid.uuid4().hex[:8]}"
    with pytest.raises(ObjectNotFound, match=rf"list s3://{gone}/x: NoSuchBucket"):
        list(store.list(gone, "x"))
    assert counter.listings == 1
    bad = ObjectStore.connect(**{**s3.to_minio(), "access_key": "nobody",
                                 "secret_key": "wrong-secret-wrong"}, backoff=0.01)
    counter = _CutListings(bad._client._http, cut=set())
    bad._client._http = counter
    with pytest.raises(StorageError, match=rf"list s3://{bucket}/: the S3 server refused the "
                                           r"credentials \(\w+\)\. Check GRANARY_S3_ACCESS_KEY"):
        list(bad.list(bucket))
    assert counter.listings == 1
