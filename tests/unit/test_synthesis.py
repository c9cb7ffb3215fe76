"""Synthesis on known data: capped, deterministic, traceable to real seeds, private, faithful
(scikit-learn's breast cancer table), and the LLM client against a local chat server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pandas as pd
import pytest

import granary  # noqa: F401  (installs Airflow's connections, the LLM's among them)
from lifecycle.context import StageContext
from lifecycle.spec import parse_spec
from lifecycle.synthesize import generators
from lifecycle.synthesize import stage as synthesize
from lifecycle.synthesize.llm import ChatClient, LLMError, parse_records
from tests.textdata import labelled

pytestmark = pytest.mark.unit

TABLE = """\
name: tumours
title: Tumours
modality: table
licence: {id: BSD-3-Clause}
owners: [{name: qa}]
sources: [{name: rows, type: files, path: t.csv, format: csv,
           licence: {id: BSD-3-Clause, origin: scikit-learn, legal_basis: licence}}]
schema:
  text_field: null
  fields: [{name: label, type: string}]
synthesize: {enabled: true, generator: GEN, target: TARGET, seed: 7}
"""
TEXT = """\
name: reviews
title: Reviews
licence: {id: CC0-1.0}
owners: [{name: qa}]
sources: [{name: rows, type: files, path: t.csv, format: csv,
           licence: {id: CC0-1.0, origin: generated, legal_basis: own}}]
schema:
  fields: [{name: text, type: string}, {name: label, type: string, values: [pos, neg]}]
synthesize: {enabled: true, generator: text_augment, seed: 3, max_share: 0.2,
             text_augment: {edit_share: 0.5}}
"""


def ctx(text: str) -> StageContext:
    """Only the spec and names matter to ``synthesize.synthesize``: no services."""
    return StageContext(spec=parse_spec(text, "t.yaml"), run_id="r", store=None,  # type: ignore[arg-type]
                        catalog=None, registry=None, raw_bucket="", work_bucket="",  # type: ignore[arg-type]
                        inbox=None, releases_bucket="",  # type: ignore[arg-type]
                        now=datetime(2026, 11, 28, tzinfo=UTC))


def cancer() -> pd.DataFrame:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True)
    df = data.frame.drop(columns=["target"])
    df.columns = [c.replace(" ", "_") for c in df.columns]
    df["label"] = np.where(data.target == 0, "malignant", "benign")
    df["id"] = [f"p{i}" for i in range(len(df))]
    return df


def test_the_copula_keeps_every_column_close_to_the_real_one() -> None:
    real = cancer()
    c = ctx(TABLE.replace("GEN", "tabular_copula").replace(
        "TARGET", "{per_label: {malignant: 100, benign: 100}}"))
    out = synthesize.synthesize(c, real)
    report, table = out["report"], out["table"]
    syn = table.loc[table["synthetic"]]
    assert report["accepted"] == len(syn) == 200
    numeric = generators.numeric_columns(real, {"id", "label"})
    assert len(numeric) == 30
    assert report["fidelity"]["max_ks"] < 0.2, report["fidelity"]["ks"]
    assert report["fidelity"]["correlation_difference"] < 0.1
    ids = set(real["id"])
    assert all(s and set(s) <= ids for s in syn["seed_ids"])   # every one names real seeds
    assert (syn["generator"] == "tabular_copula").all() and not table.loc[
        ~table["synthetic"], "seed_ids"].map(len).any()
    again = synthesize.synthesize(c, real)["table"]               # same seed, same records
    pd.testing.assert_frame_equal(table, again)
    assert report["utility"]["real_plus_synthetic_f1"] >= report["utility"]["real_only_f1"] - 0.05


def test_smote_fills_the_minority_up_to_the_cap_with_same_label_seeds() -> None:
    real = cancer()
    real = pd.concat([real[real["label"] == "benign"],
                      real[real["label"] == "malignant"].head(60)], ignore_index=True)
    c = ctx(TABLE.replace("GEN", "smote").replace("TARGET", "{balance: 1.0}"))
    out = synthesize.synthesize(c, real)
    report, table = out["report"], out["table"]
    cap = int(0.3 / 0.7 * len(real))
    assert report["cap"] == cap and report["planned"] == {"malignant": cap}  # 297 wanted
    syn = table.loc[table["synthetic"]]
    assert 0 < len(syn) <= cap and len(syn) / len(table) <= 0.3
    by_id = real.set_index("id")["label"]
    assert all(len(s) == 2 and {by_id[i] for i in s} == {"malignant"} for s in syn["seed_ids"])
    assert report["balance"]["after"]["malignant"] == 60 + len(syn)


class Copier:
    """A generator that 'makes' records by copying real ones (what privacy must stop)."""

    name = "copier"

    def __init__(self, fields: list[str], label: str) -> None:
        self.fields, self.label = fields, label

    def params(self) -> dict[str, Any]:
        return {}

    def generate(self, real: pd.DataFrame, plan: dict[str, int],
                 rng: np.random.Generator) -> generators.Made:
        rows = []
        for lab, n in plan.items():
            pool = real.loc[real[self.label] == lab]
            for _, r in pool.head(n).iterrows():
                rows.append({**{f: r[f] for f in self.fields}, self.label: lab,
                             "seed_ids": [r["id"]], "generator_params": "{}"})
        made = pd.DataFrame(rows)
        if "text" in made:  # one character more: not an exact copy, still a copy
            made["text"] = made["text"] + "。"
        return generators.Made(made, [])


@pytest.mark.parametrize("kind", ["text", "table"])
def test_privacy_rejects_a_generator_that_copies_real_records(
        kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if kind == "text":
        real = labelled(300).drop(columns=["collected_at"])
        real = real[~((real["label"] == "pos") & (real.index % 6 != 1))].reset_index(drop=True)
        c = ctx(TEXT)
        copier = Copier(["text"], "label")
    else:
        real = cancer()
        c = ctx(TABLE.replace("GEN", "smote").replace("TARGET", "{balance: 1.0}"))
        copier = Copier(generators.numeric_columns(real, {"id", "label"}), "label")
        real = pd.concat([real[real["label"] == "benign"],
                          real[real["label"] == "malignant"].head(100)], ignore_index=True)
    monkeypatch.setattr(synthesize, "_generator", lambda *a: copier)
    out = synthesize.synthesize(c, real)
    assert out["report"]["accepted"] == 0
    assert set(out["report"]["rejected"]) == {"too_close_to_real"}
    assert out["report"]["made"] > 0


def test_text_augmentation_is_capped_traceable_and_deterministic() -> None:
    real = labelled(400).drop(columns=["collected_at"])
    real = real[~((real["label"] == "pos") & (real.index % 8 != 1))].reset_index(drop=True)
    c = ctx(TEXT)
    out = synthesize.synthesize(c, real)
    report, table = out["report"], out["table"]
    cap = int(0.2 / 0.8 * len(real))
    syn = table.loc[table["synthetic"]]
    assert report["planned"] == {"pos": cap} and 0 < len(syn) <= cap
    assert len(syn) / len(table) <= 0.2
    by_id = real.set_index("id")
    for _, r in syn.iterrows():
        [seed] = r["seed_ids"]
        assert by_id.loc[seed, "label"] == r["label"] == "pos"
        assert r["text"] != by_id.loc[seed, "text"]
        assert json.loads(r["generator_params"])["edits"]
    assert sum(report["rejected"].values()) + len(syn) == report["made"]
    pd.testing.assert_frame_equal(table, synthesize.synthesize(c, real)["table"])


@contextmanager
def chat_server(replies: list[tuple[int, Any]]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A local server speaking the chat-completions protocol, answering ``replies`` in turn."""
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            seen.append({"path": self.path, "auth": self.headers.get("authorization"),
                         "body": body})
            status, content = replies.pop(0)
            if status == 200:
                payload = {"id": "c1", "object": "chat.completion", "model": body["model"],
                           "choices": [{"index": 0, "finish_reason": "stop", "message": {
                               "role": "assistant", "content": content}}],
                           "usage": {"prompt_tokens": 120, "completion_tokens": 40,
                                     "total_tokens": 160}}
            else:
                payload = {"error": {"message": "rate limited", "type": "rate_limit"}}
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            if status == 429:
                self.send_header("retry-after", "0")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", seen
    finally:
        server.shutdown()


def test_the_llm_client_retries_429_counts_tokens_and_reports_bad_output() -> None:
    good = json.dumps([{"text": "屏幕清晰,电池耐用,很满意"}, {"text": "物流很快,包装完好"}],
                      ensure_ascii=False)
    replies = [(429, None), (200, good), (200, "Sure! Here are some reviews: great phone"),
               (200, f"```json\n{good}\n```")]
    with chat_server(replies) as (url, seen):
        client = ChatClient(url, "sk-test", "tiny-model", requests_per_minute=6000,
                            price_in=0.5, price_out=1.5, sleep=lambda s: None)
        made = generators.LLMGenerator(
            client, "text", "label", parse_spec(TEXT, "t.yaml").guideline, per_request=2,
            seed_examples=2, temperature=0.5).generate(
            labelled(20), {"pos": 4}, np.random.default_rng(0))
    assert len(made.records) == 4 and set(made.records["label"]) == {"pos"}
    assert all(len(s) == 2 for s in made.records["seed_ids"])
    assert made.problems == ["label pos: no JSON array in the reply (starts: 'Sure! Here "
                             "are some reviews: great phone')"]
    u = client.usage
    assert (u.requests, u.retries) == (4, 1)               # the 429 was retried
    assert (u.prompt_tokens, u.completion_tokens, u.tokens) == (360, 120, 480)
    assert u.cost == pytest.approx(360 / 1000 * 0.5 + 120 / 1000 * 1.5)
    assert seen[0]["path"] == "/v1/chat/completions" and seen[0]["auth"] == "Bearer sk-test"
    assert seen[1]["body"]["model"] == "tiny-model"
    assert "Examples labelled pos" in seen[1]["body"]["messages"][1]["content"]


def test_the_llm_client_stops_at_its_caps_and_names_refusals() -> None:
    with chat_server([(200, "[]"), (401, None)]) as (url, _):
        client = ChatClient(url, "k", "m", max_requests=1, sleep=lambda s: None)
        assert client.complete([{"role": "user", "content": "hi"}]) == "[]"
        with pytest.raises(LLMError, match="request cap"):
            client.complete([{"role": "user", "content": "again"}])
    with chat_server([(401, None)]) as (url, _), \
            pytest.raises(LLMError, match="refused the request .*HTTP 401"):
        ChatClient(url, "k", "m", sleep=lambda s: None).complete([])
    assert parse_records('[{"text": "ok"}, {"text": 3}]', ["text"]) == (
        [{"text": "ok"}], "1 of 2 items lack a string text")
    assert parse_records("[{bad json]", ["text"])[1].startswith("the reply's array is not")


def test_the_llm_generator_runs_through_the_stage_with_its_connection(
        monkeypatch: pytest.MonkeyPatch) -> None:
    real = labelled(200).drop(columns=["collected_at"])
    real = real[~((real["label"] == "pos") & (real.index % 8 != 1))].reset_index(drop=True)
    spec = TEXT.replace("generator: text_augment", "generator: llm").replace(
        "text_augment: {edit_share: 0.5}",
        "llm: {connection: chat, per_request: 20, max_requests: 3, seed_examples: 3}")
    fresh = [{"text": f"耳机音质清晰,佩戴舒服,很满意第{i}次购买"} for i in range(20)]
    replies = [(200, json.dumps(fresh, ensure_ascii=False))] * 3
    with chat_server(list(replies)) as (url, seen):
        monkeypatch.setenv("AIRFLOW_CONN_CHAT", json.dumps(
            {"conn_type": "http", "host": url, "password": "sk-x",
             "extra": {"model": "local-model"}}))
        out = synthesize.synthesize(ctx(spec), real)
    report = out["report"]
    assert report["generator"] == "llm" and seen[0]["body"]["model"] == "local-model"
    assert report["llm"]["requests"] == len(seen) <= 3
    assert report["llm"]["tokens"] == 160 * len(seen)
    syn = out["table"].loc[out["table"]["synthetic"]]
    assert 0 < len(syn) <= report["cap"]
    assert all(len(s) == 3 for s in syn["seed_ids"])
