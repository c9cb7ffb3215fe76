"""The one retry policy (storage/retry.py): what is transient, how many tries, the waits
(backoff, Retry-After, the deadline), and the S3 listing retried page by page from the last key
seen, against an in-memory listing that fails between pages."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import urllib3
from minio.error import S3Error, ServerError

from storage import retry
from storage.objectstore import ObjectNotFound, ObjectStore, StorageError

pytestmark = pytest.mark.unit

FAST = retry.Limits(attempts=4, first_wait=0.01, max_wait=0.02)


def s3_error(code: str, headers: dict[str, str] | None = None) -> S3Error:
    response = SimpleNamespace(headers=headers or {}, status=503, data=b"")
    return S3Error(response, code, f"{code} said", "/b/k", "req", "host")  # type: ignore[arg-type]


class Flaky:
    """Fails with ``errors`` in turn, then returns ``"done"``; counts its calls."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors, self.calls = list(errors), 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


@pytest.mark.parametrize("error", [
    ConnectionRefusedError("refused"), TimeoutError("slow"),
    urllib3.exceptions.NewConnectionError(None, "no route"),  # type: ignore[arg-type]
    urllib3.exceptions.ProtocolError("reset"), httpx.ConnectError("refused"),
    httpx.ReadTimeout("slow"), retry.RetryLater("HTTP 429"),
    s3_error("SlowDown"), s3_error("InternalError"), s3_error("RequestTimeout"),
    ServerError("bad gateway", 502),
])
def test_transient_errors_are_retried_until_the_call_succeeds(error: BaseException) -> None:
    assert retry.is_transient(error)
    fn = Flaky(error, error)
    assert retry.call(fn, what="t", limits=FAST) == "done"
    assert fn.calls == 3


@pytest.mark.parametrize("error", [
    s3_error("AccessDenied"), s3_error("NoSuchBucket"), s3_error("NoSuchKey"),
    ServerError("not found", 404), ValueError("a bug"), KeyError("x"),
    httpx.UnsupportedProtocol("ftp://"), urllib3.exceptions.LocationValueError("bad url"),
])
def test_permanent_errors_raise_at_once_untouched(error: BaseException) -> None:
    assert not retry.is_transient(error)
    fn = Flaky(error)
    with pytest.raises(type(error)) as got:
        retry.call(fn, what="t", limits=FAST)
    assert got.value is error and fn.calls == 1


def test_the_tries_are_counted_and_the_last_error_is_chained(
        caplog: pytest.LogCaptureFixture) -> None:
    errors = [ConnectionResetError(f"reset {i}") for i in range(10)]
    fn = Flaky(*errors)
    waits: list[float] = []
    with caplog.at_level(logging.WARNING, logger="storage.retry"), \
            pytest.raises(retry.RetriesExhausted) as got:
        retry.call(fn, what="get s3://b/k", limits=FAST, sleep=waits.append)
    assert fn.calls == 4 and got.value.attempts == 4
    assert got.value.last is errors[3] and got.value.__cause__ is errors[3]
    assert "get s3://b/k: failed 4 times; last: ConnectionResetError: reset 3" in str(got.value)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3 == len(waits)  # one log line per retry, none for the give-up
    assert lines[0].startswith("get s3://b/k failed (ConnectionResetError: reset 0); retry 1/3 in")


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    limits = retry.Limits(attempts=7, first_wait=1.0, max_wait=5.0)
    waits: list[float] = []
    with pytest.raises(retry.RetriesExhausted):
        retry.call(Flaky(*[TimeoutError()] * 7), what="t", limits=limits, sleep=waits.append)
    assert len(waits) == 6
    for n, wait in enumerate(waits):
        base = min(2.0 ** n, 5.0)  # 1, 2, 4, then the cap
        assert base <= wait <= min(base + 1.0, 5.0), (n, wait)


def test_retry_after_replaces_the_backoff_and_is_capped() -> None:
    limits = retry.Limits(attempts=5, first_wait=0.01, max_wait=0.02, max_retry_after=60)
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    waits: list[float] = []
    fn = Flaky(retry.RetryLater("429", 7.0), s3_error("SlowDown", {"Retry-After": "3"}),
               retry.RetryLater("503", retry.parse_retry_after(later)),
               retry.RetryLater("429", 3600.0))
    assert retry.call(fn, what="t", limits=limits, sleep=waits.append) == "done"
    assert waits[:2] == [7.0, 3.0]
    assert 25 <= waits[2] <= 30  # an HTTP date: the seconds until then
    assert waits[3] == 60  # capped


@pytest.mark.parametrize("value, seconds", [
    ("12", 12.0), ("0", 0.0), ("-5", 0.0), ("soon", None), ("", None), (None, None),
    ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # in the past: no wait
])
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert retry.parse_retry_after(value) == seconds


def test_the_deadline_stops_tries_whose_wait_would_end_past_it() -> None:
    limits = retry.Limits(attempts=100, first_wait=0.05, max_wait=0.05, deadline=0.3)
    fn = Flaky(*[TimeoutError()] * 100)
    start = time.monotonic()
    with pytest.raises(retry.RetriesExhausted) as got:
        retry.call(fn, what="t", limits=limits)
    assert time.monotonic() - start < 0.3 + 0.1  # no try started past the deadline
    assert 2 <= got.value.attempts < 100 and fn.calls == got.value.attempts


def test_on_retry_sees_each_retried_error() -> None:
    seen: list[BaseException] = []
    errors = [TimeoutError("a"), TimeoutError("b")]
    retry.call(Flaky(*errors), what="t", limits=FAST, on_retry=seen.append)
    assert seen == errors


class PagedClient:
    """An in-memory stand-in for minio's client: ``list_objects`` pages the keys ``page``
    at a time, like the SDK asks for each page as the listing is read, and fails with
    the next of ``failures`` before a page when one is planned for it."""

    def __init__(self, keys: list[str], page: int, failures: dict[int, BaseException]) -> None:
        self.keys, self.page, self.failures = sorted(keys), page, failures
        self.listings: list[str | None] = []
        self.pages = 0

    def list_objects(self, bucket: str, prefix: str = "", recursive: bool = True,
                     start_after: str | None = None) -> Iterator[Any]:
        self.listings.append(start_after)
        left = [k for k in self.keys if k.startswith(prefix)
                and (start_after is None or k > start_after)]
        while left:
            self.pages += 1
            if self.pages in self.failures:
                raise self.failures.pop(self.pages)
            for k in left[:self.page]:
                yield SimpleNamespace(object_name=k, is_dir=False, size=1, etag="e",
                                      version_id=None, last_modified=None)
            left = left[self.page:]


def test_a_listing_that_fails_between_pages_resumes_after_the_last_key() -> None:
    keys = [f"p/{i:04d}" for i in range(25)]
    client = PagedClient(keys, page=4, failures={
        3: urllib3.exceptions.ProtocolError("reset"), 5: s3_error("SlowDown"),
        6: s3_error("InternalError")})
    store = ObjectStore(client, limits=FAST)
    listed = [o.key for o in store.list("b", "p/")]
    assert listed == keys  # every key, once, in order
    assert client.listings == [None, "p/0007", "p/0011", "p/0011"]


def test_a_listing_that_keeps_failing_raises_rather_than_ending_short() -> None:
    client = PagedClient([f"k{i}" for i in range(10)], page=3,
                         failures={n: TimeoutError("gone") for n in range(2, 50)})
    store = ObjectStore(client, limits=FAST)
    seen: list[str] = []
    with pytest.raises(StorageError, match=r"list s3://b/: the S3 server did not answer after "
                                           r"4 attempts \(TimeoutError: gone\)"):
        seen.extend(o.key for o in store.list("b"))
    assert seen == ["k0", "k1", "k2"]


def test_a_listing_of_a_missing_bucket_is_not_retried() -> None:
    client = PagedClient(["a"], page=1, failures={1: s3_error("NoSuchBucket")})
    with pytest.raises(ObjectNotFound, match=r"list s3://gone/a: NoSuchBucket"):
        list(ObjectStore(client, limits=FAST).list("gone", "a"))
    assert client.listings == [None]
