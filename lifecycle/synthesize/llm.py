"""An OpenAI-compatible chat-completions client for synthesis: retries under the one policy
(:mod:`storage.retry`, limits :data:`storage.retry.LLM`: network errors, 408, 429 and 5xx,
honouring Retry-After), a requests-per-minute limit, token and cost accounting, and hard
caps on requests and tokens. The base URL, key and model come from an Airflow connection."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from storage import retry

log = logging.getLogger(__name__)


class LLMError(RuntimeError):
    """The endpoint refused or answered something unusable; the message says which."""


class BudgetExhausted(LLMError):
    """A hard cap (requests or tokens) was reached; nothing more is asked."""


@dataclass
class Usage:
    requests: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    malformed: list[str] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def summary(self) -> dict[str, Any]:
        return {"requests": self.requests, "retries": self.retries,
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "tokens": self.tokens,
                "cost": round(self.cost, 6), "malformed": self.malformed[:10]}


class ChatClient:
    def __init__(self, base_url: str, api_key: str, model: str, *, max_requests: int = 100,
                 max_tokens: int = 100_000, requests_per_minute: float = 30, retries: int = 5,
                 price_in: float = 0.0, price_out: float = 0.0, timeout: float = 60,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.headers = {"Authorization": f"Bearer {api_key}"}
        self.max_requests, self.max_tokens = max_requests, max_tokens
        self.interval = 60.0 / requests_per_minute
        self.retries, self.price_in, self.price_out = retries, price_in, price_out
        self.timeout, self.sleep = timeout, sleep
        self.usage = Usage()
        self._last = 0.0

    def complete(self, messages: list[dict[str, str]], temperature: float = 0.7) -> str:
        """The assistant's reply to ``messages``; raises LLMError or BudgetExhausted."""
        if self.usage.requests >= self.max_requests:
            raise BudgetExhausted(f"the request cap ({self.max_requests}) is reached")
        if self.usage.tokens >= self.max_tokens:
            raise BudgetExhausted(f"the token cap ({self.max_tokens}) is reached "
                                  f"({self.usage.tokens} used)")
        body = {"model": self.model, "messages": messages, "temperature": temperature}

        def once() -> httpx.Response:
            wait = self._last + self.interval - time.monotonic()
            if wait > 0:
                self.sleep(wait)  # the rate limit
            self._last = time.monotonic()
            self.usage.requests += 1
            resp = httpx.post(self.url, json=body, headers=self.headers, timeout=self.timeout)
            if resp.status_code >= 500 or resp.status_code in retry.TRANSIENT_STATUS \
                    or resp.status_code == 409:
                raise retry.RetryLater(f"HTTP {resp.status_code}: {resp.text[:300]}",
                                       retry.parse_retry_after(resp.headers.get("retry-after")))
            return resp

        def counted(error: BaseException) -> None:
            self.usage.retries += 1

        limits = dataclasses.replace(retry.LLM, attempts=self.retries + 1)
        try:
            resp = retry.call(once, what=f"llm: POST {self.url}", limits=limits,
                              sleep=self.sleep, on_retry=counted)
        except retry.RetriesExhausted as e:
            raise LLMError(f"{self.url} failed {e.attempts} times; last: "
                           f"{retry.describe(e.last)}") from e.last
        except httpx.HTTPError as e:  # not transient (a bad URL, say)
            raise LLMError(f"{self.url}: {retry.describe(e)}; check the base URL in the "
                           "connection") from e
        if resp.status_code != 200:
            raise LLMError(f"{self.url} refused the request (HTTP {resp.status_code}: "
                           f"{resp.text[:300]}); check the model name and the key in the "
                           "connection")
        return self._read(resp)

    def _read(self, resp: httpx.Response) -> str:
        try:
            data = resp.json()
            content = data["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise LLMError(f"{self.url} answered 200 without choices[0].message.content "
                           f"({type(e).__name__}); body starts: {resp.text[:200]!r}") from e
        usage = data.get("usage") or {}
        prompt, completion = int(usage.get("prompt_tokens", 0)), int(
            usage.get("completion_tokens", 0))
        self.usage.prompt_tokens += prompt
        self.usage.completion_tokens += completion
        self.usage.cost += prompt / 1000 * self.price_in + completion / 1000 * self.price_out
        return str(content)


def parse_records(content: str, fields: list[str]) -> tuple[list[dict[str, Any]], str | None]:
    """Records from a reply asked to be a JSON array of objects with ``fields`` (a fenced code
    block is accepted). Returns (records, problem): a reply that is not such an array is a
    problem described in words, never a crash."""
    text = content.strip()
    if text.startswith("```"):
        text = text.strip("`")
        text = text.split("\n", 1)[1] if "\n" in text else text
    start, end = text.find("["), text.rfind("]")
    if start < 0 or end <= start:
        return [], f"no JSON array in the reply (starts: {content[:80]!r})"
    try:
        data = json.loads(text[start:end + 1])
    except json.JSONDecodeError as e:
        return [], f"the reply's array is not valid JSON ({e.msg} at character {e.pos})"
    if not isinstance(data, list):
        return [], "the reply's JSON is not an array"
    good = [d for d in data if isinstance(d, dict) and all(
        isinstance(d.get(f), str) and d.get(f) for f in fields)]
    bad = len(data) - len(good)
    return [{f: d[f] for f in fields} for d in good], (
        f"{bad} of {len(data)} items lack a string {' or '.join(fields)}" if bad else None)
