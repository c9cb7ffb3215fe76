"""One retry policy for every call that crosses the network: S3 (through the ``minio`` SDK),
HTTP sources, the LLM endpoint and the release's reachability checks.

What is transient (tried again): connection errors and timeouts (the standard library's,
``urllib3``'s and ``httpx``'s), S3 error codes that mean "later" (:data:`TRANSIENT_S3_CODES`),
5xx answers, and 408/429 (a call site raises :class:`RetryLater` for those with the answer's
``Retry-After``). Anything else is permanent and raised at once, untouched, for the call site
to translate into its own error (``StorageError``, ``PermanentError``, ``LLMError``...).

How long: exponential backoff with jitter, ``first_wait`` doubled before each next try and
capped at ``max_wait``; a ``Retry-After`` the server sends replaces it (capped at
``max_retry_after``). A try is started only while both ``attempts`` and the total
``deadline`` allow (a wait that would end past the deadline is not waited). Each retry logs
one line: what failed, the error, the try and the wait. When the tries run out the policy
raises :class:`RetriesExhausted`, chained to the last error.

The limits of every call site are here, in one place (:data:`S3`, :data:`LLM`,
:func:`http_source`, :data:`REACHABILITY`). Built on ``tenacity``; nothing here imports
Airflow.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import tenacity

log = logging.getLogger(__name__)
T = TypeVar("T")

TRANSIENT_S3_CODES = frozenset({"SlowDown", "InternalError", "ServiceUnavailable",
                                "RequestTimeout", "RequestTimeTooSkewed"})
"""S3 error codes that say "try again later", not "this request is wrong"."""
TRANSIENT_STATUS = frozenset({408, 429})
"""HTTP statuses below 500 that are transient (timeout, too many requests)."""


@dataclass(frozen=True)
class Limits:
    """How hard one kind of call is tried."""

    attempts: int
    """Tries in all, the first included (1: never retried)."""
    first_wait: float
    """Seconds before the second try; doubled before each next, plus up to as much jitter."""
    max_wait: float
    """Cap on one backoff wait, in seconds."""
    deadline: float | None = None
    """Seconds from the first try after which no new try is started (None: attempts only)."""
    max_retry_after: float = 60.0
    """Cap on a wait the server asks for with Retry-After, in seconds."""


S3 = Limits(attempts=6, first_wait=0.5, max_wait=8.0, deadline=180.0)
"""Each S3 request, and each page of a listing: waits of ~0.5, 1, 2, 4, 8 s (about 16 s in
all, enough for a restarting server); the SDK itself does not retry (``ObjectStore.connect``)."""
LLM = Limits(attempts=6, first_wait=1.0, max_wait=30.0, deadline=900.0, max_retry_after=120.0)
"""A chat completion (60 s timeout each): waits of ~1, 2, 4, 8, 16 s, or the Retry-After."""
REACHABILITY = Limits(attempts=3, first_wait=2.0, max_wait=8.0)
"""A consumer's check of a release (download, ``dvc get``): then "not measured"."""


def http_source(retries: int) -> Limits:
    """An HTTP source's page: its spec's ``retries`` after the first try."""
    return Limits(attempts=retries + 1, first_wait=0.5, max_wait=30.0, deadline=600.0)


class RetryLater(Exception):
    """Raised by a call site for an answer that says "later" (408, 429, 5xx), with the
    seconds its ``Retry-After`` asks for (None when it sent none)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RetriesExhausted(Exception):
    """Every try allowed met a transient error; ``last`` is the last one (also the cause)."""

    def __init__(self, what: str, attempts: int, last: BaseException) -> None:
        super().__init__(f"{what}: failed {attempts} times; last: {describe(last)}")
        self.what, self.attempts, self.last = what, attempts, last


def describe(error: BaseException) -> str:
    """The error's type and message, short."""
    return f"{type(error).__name__}: {str(error)[:300]}"


def is_transient(error: BaseException) -> bool:
    """Whether trying again may help (the module docstring's list)."""
    if isinstance(error, RetryLater | ConnectionError | TimeoutError):
        return True
    kind = type(error).__module__.split(".")[0]
    if kind == "urllib3":
        from urllib3.exceptions import HTTPError, LocationValueError

        return isinstance(error, HTTPError) and not isinstance(error, LocationValueError)
    if kind == "httpx":
        import httpx

        return isinstance(error, httpx.TransportError) and not isinstance(
            error, httpx.UnsupportedProtocol | httpx.InvalidURL | httpx.DecodingError)
    if kind == "minio":
        from minio.error import S3Error, ServerError

        if isinstance(error, S3Error):
            return error.code in TRANSIENT_S3_CODES
        if isinstance(error, ServerError):
            return error.status_code >= 500 or error.status_code in TRANSIENT_STATUS
    return False


def retry_after(error: BaseException) -> float | None:
    """The seconds the server asked to wait (a ``Retry-After`` of seconds or an HTTP date),
    when the error carries such an answer."""
    if isinstance(error, RetryLater):
        return error.retry_after
    response = getattr(error, "response", None) or getattr(error, "_response", None)
    headers = getattr(response, "headers", None) or {}
    return parse_retry_after(next((str(v) for k, v in headers.items()
                                   if str(k).lower() == "retry-after"), None))


def parse_retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` header's seconds (>= 0); None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def call(fn: Callable[[], T], *, what: str, limits: Limits,
         transient: Callable[[BaseException], bool] = is_transient,
         sleep: Callable[[float], None] = time.sleep,
         on_retry: Callable[[BaseException], None] | None = None) -> T:
    """``fn()`` under ``limits``: its result, or its permanent error raised at once, or
    :class:`RetriesExhausted` once the tries or the deadline run out. ``what`` names the call
    in the log lines and errors (say which object or URL); ``on_retry`` is told of each error
    about to be retried (counters)."""
    backoff = tenacity.wait_exponential_jitter(initial=limits.first_wait, max=limits.max_wait,
                                               jitter=limits.first_wait)

    def wait(state: tenacity.RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        asked = retry_after(error) if error is not None else None
        if asked is not None:
            return min(asked, limits.max_retry_after)
        return float(backoff(state))

    stop: Any = tenacity.stop_after_attempt(limits.attempts)
    if limits.deadline is not None:
        stop = stop | tenacity.stop_before_delay(limits.deadline)

    def before_sleep(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        assert error is not None
        if on_retry is not None:
            on_retry(error)
        wait_s = state.next_action.sleep if state.next_action else 0.0
        log.warning("%s failed (%s); retry %d/%d in %.1f s", what, describe(error),
                    state.attempt_number, limits.attempts - 1, wait_s)

    retrying = tenacity.Retrying(stop=stop, wait=wait, sleep=sleep, reraise=False,
                                 retry=tenacity.retry_if_exception(transient),
                                 before_sleep=before_sleep)
    try:
        return retrying(fn)
    except tenacity.RetryError as e:
        last = e.last_attempt.exception()
        assert last is not None
        raise RetriesExhausted(what, e.last_attempt.attempt_number, last) from last
