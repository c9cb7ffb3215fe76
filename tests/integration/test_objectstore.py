"""ObjectStore against a real SeaweedFS S3 server."""

from __future__ import annotations

import hashlib
import uuid

import httpx
import pytest

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
