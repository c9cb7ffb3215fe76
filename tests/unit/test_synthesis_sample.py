"""Synthesis's sample (lifecycle/records/sample.py): the bottom-k per stratum of a seeded
hash of the id, merged from the shards' own bottom-k, is the bottom-k of the whole table
however it is sharded, in collection order; below k it is the whole table. And the screens'
verdicts combine to the strongest (lifecycle/synthesize/checks.py)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lifecycle.records import sample
from lifecycle.synthesize import checks
from tests.textdata import labelled

pytestmark = pytest.mark.unit

LABELS = st.one_of(st.none(), st.sampled_from(["pos", "neg", "", "中性"]))


def _table(labels: list[str | None]) -> pd.DataFrame:
    return pd.DataFrame({"id": [f"r{i}" for i in range(len(labels))],
                         "label": pd.Series(labels, dtype="object"),
                         "n": range(len(labels))})


def _sharded(df: pd.DataFrame, cuts: list[int], k: int, seed: int) -> pd.DataFrame:
    bounds = [0, *sorted({c % (len(df) + 1) for c in cuts}), len(df)]
    parts = [sample.bottom_k(df.iloc[a:b], "label", seed, k, unit)
             for unit, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False))]
    return sample.merge(parts, "label", k)


@settings(max_examples=150, deadline=None)
@given(labels=st.lists(LABELS, max_size=60), cuts=st.lists(st.integers(0, 60), max_size=5),
       k=st.integers(1, 12), seed=st.integers(0, 3))
def test_the_merged_sample_is_the_bottom_k_of_the_whole_table(
        labels: list[str | None], cuts: list[int], k: int, seed: int) -> None:
    df = _table(labels)
    got = sample.records(_sharded(df, cuts, k, seed)) if len(df) else pd.DataFrame()
    # the whole table's bottom-k, computed directly: per stratum the k smallest keys
    keyed = df.assign(key=sample.sample_keys(df["id"], seed), s=sample.strata(df["label"]))
    want = set(keyed.sort_values("key").groupby("s").head(k)["id"]) if len(df) else set()
    assert set(got["id"] if len(got) else []) == want
    if len(got):  # in collection order, with the records' own values
        assert got["n"].tolist() == sorted(got["n"].tolist())
        assert (got["id"] == [f"r{n}" for n in got["n"]]).all()
        sizes = keyed.groupby("s").size()
        assert got.groupby(sample.strata(got["label"])).size().max() <= k
        assert len(got) == sum(min(k, int(v)) for v in sizes)


@given(labels=st.lists(LABELS, min_size=1, max_size=40),
       cuts=st.lists(st.integers(0, 40), max_size=4))
def test_below_the_sample_size_the_sample_is_the_whole_table(
        labels: list[str | None], cuts: list[int]) -> None:
    df = _table(labels)
    got = sample.records(_sharded(df, cuts, k=40, seed=0))
    pd.testing.assert_frame_equal(got, df)


def test_a_sample_key_depends_on_the_seed_and_the_id_only() -> None:
    a = sample.sample_keys(["x", "y"], 1)
    assert a.tolist() == sample.sample_keys(["x", "y"], 1).tolist()
    assert a.tolist() != sample.sample_keys(["x", "y"], 2).tolist()
    assert sample.sample_keys(["y"], 1).tolist() == a[1:].tolist()


def test_the_screens_combine_to_the_strongest_verdict() -> None:
    same, close = checks.SAME, checks.TOO_CLOSE
    assert checks.strongest([], 3) == [None, None, None]
    assert checks.strongest([[None, close, None], [same, None, None], [close, close, None]],
                            3) == [same, close, None]


TABLE_SPEC = """\
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
synthesize: {enabled: true, generator: smote}
"""


def _ctx(text: str) -> Any:
    from tests.unit.test_synthesis import ctx

    return ctx(text)


def test_the_text_screen_finds_copies_of_the_records_it_is_given() -> None:
    from tests.unit.test_synthesis import TEXT

    rest = labelled(40)[["id", "text", "label"]]
    cands = pd.DataFrame({"text": [rest["text"].iat[3] + "。", rest["text"].iat[7],
                                   "一段与任何评论都无关的全新文字，讲的是天气和山川河流"],
                          "label": ["pos", "neg", "pos"]})
    got = checks.screen_text(_ctx(TEXT), rest, cands)
    assert got == [checks.TOO_CLOSE, checks.TOO_CLOSE, None]
    assert checks.screen_text(_ctx(TEXT), rest.head(0), cands) == [None, None, None]


def test_the_table_screen_uses_the_samples_scale_and_floor() -> None:
    from tests.unit.test_synthesis import cancer

    real = cancer()
    columns = [c for c in real.columns if c not in ("id", "label")]
    sampled, rest = real.iloc[::2], real.iloc[1::2].reset_index(drop=True)
    scale, floor = checks.table_scale(sampled, columns, 0.05)
    near = rest.loc[:2, columns] * 1.0001  # copies of records outside the sample, nudged
    far = rest.loc[:1, columns] * 25  # nothing real is like these
    cands = pd.concat([near, far], ignore_index=True)
    got = checks.screen_table(rest, cands, columns, list(scale), floor)
    assert got == [checks.TOO_CLOSE] * 3 + [None] * 2
    # and the merge's own check takes a screen's verdict where the sample saw nothing
    seen = checks.check_table(_ctx(TABLE_SPEC), sampled.reset_index(drop=True),
                              cands.assign(label="benign"), columns, got)
    assert seen[:3] == [checks.TOO_CLOSE] * 3


def test_the_image_screen_finds_the_same_bytes_and_near_hashes() -> None:
    from types import SimpleNamespace

    c = SimpleNamespace(spec=SimpleNamespace(preprocess=SimpleNamespace(
        image=SimpleNamespace(max_distance=4))))
    rest = pd.DataFrame({"image_sha256": ["a" * 64, "b" * 64],
                         "phash": ["ffff0000ffff0000", "0123456789abcdef"]})
    cands = pd.DataFrame({"image_sha256": ["b" * 64, "c" * 64, "d" * 64],
                          "phash": ["0f0f0f0f0f0f0f0f", "ffff0000ffff0003", "00000000ffffffff"]})
    got = checks.screen_image(c, rest, cands)  # type: ignore[arg-type]
    assert got == [checks.SAME, checks.TOO_CLOSE, None]


def test_a_generator_that_makes_nothing_leaves_the_records_and_says_why(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from lifecycle.synthesize import generators
    from lifecycle.synthesize import stage as synthesize
    from tests.unit.test_synthesis import TEXT

    class Nothing:
        name = "nothing"

        def params(self) -> dict[str, Any]:
            return {}

        def generate(self, real: pd.DataFrame, plan: dict[str, int], rng: Any
                     ) -> generators.Made:
            return generators.Made(pd.DataFrame(), ["no seed to start from"])

    real = labelled(60).drop(columns=["collected_at"]).iloc[:50]  # 25 neg, 25 pos
    real = real[(real["label"] == "neg") | (real.index < 10)].reset_index(drop=True)
    monkeypatch.setattr(synthesize, "_generator", lambda *a: Nothing())
    out = synthesize.synthesize(_ctx(TEXT), real)
    report = out["report"]
    assert report["made"] == report["accepted"] == 0 and report["planned"]
    assert report["shortfall"] == report["planned"]
    assert report["problems"] == ["no seed to start from"]
    assert len(out["table"]) == len(real) and not out["table"]["synthetic"].any()
