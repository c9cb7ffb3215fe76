"""All object access, over plain S3 through the ``minio`` SDK (MinIO, SeaweedFS, Ceph, AWS...).

Nothing here uses MinIO-only admin APIs. Every request, and every page of a listing, goes
through the one retry policy (:mod:`storage.retry`, limits :data:`storage.retry.S3`):
transient failures (connection refused, timeouts, 5xx, SlowDown) are retried with
exponential backoff; permanent ones (access denied, bad credentials, missing key) raise
:class:`StorageError` at once with what to do.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from storage import keys, retry
from storage.faults import fault_point

log = logging.getLogger(__name__)
T = TypeVar("T")

TRANSIENT_CODES = retry.TRANSIENT_S3_CODES
CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"}


class StorageError(RuntimeError):
    """An object-store operation failed for good; the message says which object and why."""


class ObjectNotFound(StorageError):
    """The object (or bucket) does not exist."""


class RangeBeyondObject(StorageError):
    """A byte range asked of an object ends past the object's end (it was replaced or
    truncated after whatever gave the range was written)."""


@dataclass(frozen=True)
class ObjectInfo:
    bucket: str
    key: str
    size: int
    etag: str
    version_id: str | None = None
    modified: datetime | None = None  # set by list()


class ObjectStore:
    """A thin, retrying facade over one S3 endpoint. Built from ``Settings.to_minio()``."""

    def __init__(
        self,
        client: Any,
        *,
        retries: int | None = None,
        backoff: float | None = None,
        max_backoff: float | None = None,
        limits: retry.Limits = retry.S3,
    ) -> None:
        """``limits``: how hard each request is tried (the policy's :data:`~storage.retry.S3`);
        ``retries`` (after the first try), ``backoff`` (the first wait) and ``max_backoff``
        override parts of it."""
        self._client = client
        changes: dict[str, Any] = {}
        if retries is not None:
            changes["attempts"] = retries + 1
        if backoff is not None:
            changes["first_wait"] = backoff
        if max_backoff is not None:
            changes["max_wait"] = max_backoff
        self._limits = dataclasses.replace(limits, **changes)

    @classmethod
    def connect(cls, endpoint: str, access_key: str, secret_key: str, *, secure: bool = False,
                region: str | None = "us-east-1", **kwargs: Any) -> ObjectStore:
        import urllib3
        from minio import Minio

        # Short connect timeout so a stopped server is noticed quickly and retried by the
        # one policy (``_call``), instead of urllib3's long default; urllib3 itself does not
        # retry (its retries would multiply the policy's and hide the waits from the log).
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=5, read=120),
            retries=False,
            maxsize=10,
        )
        client = Minio(endpoint, access_key=access_key, secret_key=secret_key, secure=secure,
                       region=region, http_client=http)
        return cls(client, **kwargs)

    # ---- retry core ------------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """``fn()`` under the retry policy; its errors translated into :class:`StorageError`
        (:class:`ObjectNotFound` for a missing key, bucket or version) naming ``what``."""
        from minio.error import S3Error

        try:
            return retry.call(fn, what=what, limits=self._limits)
        except retry.RetriesExhausted as e:
            if isinstance(e.last, S3Error):
                raise StorageError(f"{what}: {e.last.code}: {e.last.message} (still after "
                                   f"{e.attempts} attempts); the S3 server is overloaded or "
                                   "failing: retry later") from e.last
            raise StorageError(
                f"{what}: the S3 server did not answer after {e.attempts} attempts "
                f"({retry.describe(e.last)}). Is it running (`granary status`)?") from e.last
        except S3Error as e:
            if e.code in ("NoSuchKey", "NoSuchBucket", "NoSuchVersion"):
                raise ObjectNotFound(f"{what}: {e.code} ({e.message})") from e
            if e.code in CREDENTIAL_CODES:
                raise StorageError(
                    f"{what}: the S3 server refused the credentials ({e.code}). Check "
                    "GRANARY_S3_ACCESS_KEY / GRANARY_S3_SECRET_KEY and the bucket's policy."
                ) from e
            raise StorageError(f"{what}: {e.code}: {e.message}") from e

    # ---- buckets ---------------------------------------------------------------------------
    def ensure_bucket(self, bucket: str, *, versioning: bool = False) -> None:
        from minio.commonconfig import ENABLED
        from minio.versioningconfig import VersioningConfig

        if not self._call(f"check bucket {bucket}", lambda: self._client.bucket_exists(bucket)):
            try:
                self._call(f"create bucket {bucket}", lambda: self._client.make_bucket(bucket))
            except StorageError as e:
                if "BucketAlreadyOwnedByYou" not in str(e) and "BucketAlreadyExists" not in str(e):
                    raise
        if versioning:
            self._call(
                f"enable versioning on {bucket}",
                lambda: self._client.set_bucket_versioning(bucket, VersioningConfig(ENABLED)),
            )

    # ---- objects ---------------------------------------------------------------------------
    def put_bytes(self, bucket: str, key: str, data: bytes,
                  content_type: str = "application/octet-stream",
                  metadata: dict[str, str] | None = None) -> ObjectInfo:
        def put() -> Any:
            return self._client.put_object(bucket, key, io.BytesIO(data), len(data),
                                           content_type=content_type, metadata=metadata)

        res = self._call(f"put s3://{bucket}/{key}", put)
        return ObjectInfo(bucket, key, len(data), res.etag, res.version_id)

    def put_file(self, bucket: str, key: str, path: Path,
                 content_type: str = "application/octet-stream",
                 metadata: dict[str, str] | None = None) -> ObjectInfo:
        res = self._call(
            f"upload {path} to s3://{bucket}/{key}",
            lambda: self._client.fput_object(bucket, key, str(path), content_type=content_type,
                                             metadata=metadata),
        )
        return ObjectInfo(bucket, key, path.stat().st_size, res.etag, res.version_id)

    def write_atomic(self, bucket: str, key: str, data: bytes,
                     content_type: str = "application/octet-stream") -> ObjectInfo:
        """Write to a temporary key, then promote by server-side copy: readers of ``key``
        see the old object or the whole new one, never a part; a retry simply rewrites it."""
        tmp = keys.tmp_key(uuid.uuid4().hex, key)
        self.put_bytes(bucket, tmp, data, content_type)
        fault_point("store.before_promote")  # uploaded under the temporary key only
        try:
            promoted = self.promote(bucket, tmp, key, size=len(data))
            fault_point("store.after_promote")  # visible; the temporary key still there
            return promoted
        finally:
            self.delete(bucket, tmp)

    def promote(self, bucket: str, tmp_key: str, key: str,
                size: int | None = None) -> ObjectInfo:
        """Copy ``tmp_key`` to ``key`` on the server. The object's size is asked for only
        when the caller does not know it (or the server's answer to the copy has no ETag):
        one request fewer for each of the 20-odd writes of a run's stage."""
        from minio.commonconfig import CopySource

        res = self._call(
            f"promote s3://{bucket}/{tmp_key} to {key}",
            lambda: self._client.copy_object(bucket, key, CopySource(bucket, tmp_key)),
        )
        if size is not None and res.etag:
            return ObjectInfo(bucket, key, size, res.etag, res.version_id)
        info = self.stat(bucket, key)
        return ObjectInfo(bucket, key, info.size, res.etag or info.etag, res.version_id)

    def get_bytes(self, bucket: str, key: str, version_id: str | None = None) -> bytes:
        def get() -> bytes:
            resp = self._client.get_object(bucket, key, version_id=version_id)
            try:
                return bytes(resp.read())
            finally:
                resp.close()
                resp.release_conn()

        data = self._call(f"get s3://{bucket}/{key}", get)
        count_read(len(data), f"s3://{bucket}/{key}")
        return data

    def get_range(self, bucket: str, key: str, offset: int, length: int) -> bytes:
        """``length`` bytes of the object from byte ``offset`` (an HTTP range GET): a few
        records of a large object without reading the rest. A range past the object's end
        raises :class:`RangeBeyondObject`, never a silent truncation."""
        from minio.error import S3Error

        if offset < 0 or length <= 0:
            raise ValueError(f"byte range of s3://{bucket}/{key}: offset {offset} and length "
                             f"{length} must be >= 0 and > 0")
        where = f"s3://{bucket}/{key}"
        what = f"get bytes {offset}-{offset + length - 1} of {where}"

        def beyond(size: int) -> RangeBeyondObject:
            return RangeBeyondObject(
                f"{what}: the object is {size} bytes, so the range is not all in it: it was "
                "replaced or truncated after the index that gave the range was written. "
                "Write it again together with that index (or restore the object's version).")

        def get() -> bytes:
            try:
                resp = self._client.get_object(bucket, key, offset=offset, length=length)
            except S3Error as e:
                if e.code == "InvalidRange":  # the range starts at or past the end
                    raise beyond(self.stat(bucket, key).size) from e
                raise
            try:
                return bytes(resp.read())
            finally:
                resp.close()
                resp.release_conn()

        data = self._call(what, get)
        count_read(len(data), where)
        if len(data) != length:
            raise beyond(offset + len(data))
        return data

    def stream(self, bucket: str, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Yield the object in chunks; memory stays bounded by ``chunk_size``."""
        resp = self._call(f"open s3://{bucket}/{key}", lambda: self._client.get_object(bucket, key))
        try:
            for chunk in resp.stream(chunk_size):
                count_read(len(chunk), f"s3://{bucket}/{key}")
                yield chunk
        finally:
            resp.close()
            resp.release_conn()

    def download(self, bucket: str, key: str, dest: Path) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(dest, "wb") as fh:
            for chunk in self.stream(bucket, key):
                fh.write(chunk)
        return dest

    def stat(self, bucket: str, key: str) -> ObjectInfo:
        o = self._call(f"stat s3://{bucket}/{key}", lambda: self._client.stat_object(bucket, key))
        return ObjectInfo(bucket, key, int(o.size or 0), str(o.etag), o.version_id)

    def exists(self, bucket: str, key: str) -> bool:
        try:
            self.stat(bucket, key)
        except ObjectNotFound:
            return False
        return True

    def list(self, bucket: str, prefix: str = "", recursive: bool = True) -> Iterator[ObjectInfo]:
        """All objects under ``prefix``, in key order, each once. The SDK asks for each page as
        the listing is read; a page that fails is retried under the policy like any request,
        by listing again from after the last key seen (S3's ``start-after``), so a listing
        either completes or raises: it is never cut short silently."""
        what = f"list s3://{bucket}/{prefix}"
        end = object()
        last: list[str] = []  # the last key seen
        pages: list[Iterator[Any]] = []  # the SDK's listing in progress, if any

        def next_entry() -> Any:
            if not pages:
                pages.append(iter(self._client.list_objects(
                    bucket, prefix=prefix, recursive=recursive,
                    start_after=last[0] if last else None)))
            try:
                return next(pages[0], end)
            except BaseException:
                pages.clear()  # a generator that raised is finished: list again from `last`
                raise

        while (o := self._call(what, next_entry)) is not end:
            last[:] = [o.object_name]
            if o.is_dir:
                continue
            yield ObjectInfo(bucket, o.object_name, int(o.size or 0), str(o.etag),
                             o.version_id, o.last_modified)

    def copy(self, bucket: str, src_key: str, dst_bucket: str, dst_key: str) -> None:
        from minio.commonconfig import CopySource

        self._call(
            f"copy s3://{bucket}/{src_key} to s3://{dst_bucket}/{dst_key}",
            lambda: self._client.copy_object(dst_bucket, dst_key, CopySource(bucket, src_key)),
        )

    def delete(self, bucket: str, key: str) -> None:
        self._call(f"delete s3://{bucket}/{key}", lambda: self._client.remove_object(bucket, key))

    def presigned_get(self, bucket: str, key: str, expires: timedelta = timedelta(minutes=15),
                      filename: str | None = None) -> str:
        """A GET link valid for ``expires``; ``filename`` names the download (content
        disposition). Signed locally: no request reaches the server."""
        headers = ({"response-content-disposition": f'attachment; filename="{filename}"'}
                   if filename else None)
        return self._call(
            f"presign s3://{bucket}/{key}",
            lambda: self._client.presigned_get_object(bucket, key, expires=expires,
                                                      response_headers=headers),
        )


_READ = [0]
_TRACKING: list[dict[str, int]] = []


def count_read(n: int, where: str = "") -> None:
    """Add ``n`` to the bytes this process has read from S3 (the refresh benchmark's measure),
    and to what ``where`` (the object) gave inside any :func:`reads_by_object` block."""
    _READ[0] += n
    for found in _TRACKING:
        found[where] = found.get(where, 0) + n


def bytes_read() -> int:
    """Bytes this process has read from S3 so far: objects and registry files alike."""
    return _READ[0]


@contextmanager
def reads_by_object() -> Iterator[dict[str, int]]:
    """Bytes read per object (``s3://bucket/key``) while the block runs, for finding what a
    run reads; nothing is kept outside such a block (a long-lived worker reads many
    objects)."""
    found: dict[str, int] = {}
    _TRACKING.append(found)
    try:
        yield found
    finally:
        _TRACKING[:] = [t for t in _TRACKING if t is not found]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _digest(fh: BinaryIO, h: Any, chunk_size: int = 1 << 20) -> str:
    for chunk in iter(lambda: fh.read(chunk_size), b""):
        h.update(chunk)
    return str(h.hexdigest())


def sha256_stream(fh: BinaryIO, chunk_size: int = 1 << 20) -> str:
    return _digest(fh, hashlib.sha256(), chunk_size)


def sha256_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return sha256_stream(fh)


def md5_file(path: Path) -> str:
    """The md5 DVC 3 names a file's object by: of its bytes as they are."""
    with open(path, "rb") as fh:
        return _digest(fh, hashlib.md5(usedforsecurity=False))
