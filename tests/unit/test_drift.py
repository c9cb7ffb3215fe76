"""Drift fires on a shifted distribution and stays quiet on a fresh sample of the same one."""

from __future__ import annotations

import pandas as pd
import pytest

from lifecycle.evaluate import drift
from lifecycle.spec import Drift
from tests.textdata import labelled

pytestmark = pytest.mark.unit


def test_a_shifted_label_distribution_drifts_and_a_fresh_sample_does_not() -> None:
    cfg = Drift()
    before = labelled(600, seed=3)
    same = labelled(600, seed=9)  # a fresh sample of the same generator
    quiet = drift.compare(before, same, "text", "label", cfg, [])
    assert quiet["drifted"] == [], quiet["measures"]
    # 80% positive instead of 50%: the label PSI is 0.3 * ln(1.6) + 0.3 * ln(2.5) = 0.416
    shifted = pd.concat([same[same["label"] == "pos"],
                         same[same["label"] == "neg"].head(75)], ignore_index=True)
    loud = drift.compare(before, shifted, "text", "label", cfg, [])
    assert loud["drifted"] == ["label distribution (PSI)"]
    psi = next(m for m in loud["measures"] if m["measure"] == "label distribution (PSI)")
    assert psi["value"] == pytest.approx(0.3 * 0.4700 + 0.3 * 0.9163, abs=1e-3)


def test_longer_texts_new_words_and_moved_numbers_drift() -> None:
    cfg = Drift()
    before = labelled(400, seed=3)
    after = labelled(400, seed=4)
    after["text"] = after["text"] + "另外电池续航显著提升,充电速度翻倍,系统流畅无卡顿"
    found = drift.compare(before, after, "text", "label", cfg, [])
    assert {"text length (KS)", "new vocabulary share"} <= set(found["drifted"])
    nums = pd.DataFrame({"price": range(100)})
    moved = drift.compare(nums, nums.assign(price=nums["price"] + 40), "text", None, cfg,
                          ["price"])
    assert moved["drifted"] == ["price (KS)", "price (PSI)"]
    same = drift.compare(nums, nums, "text", None, cfg, ["price"])
    assert same["drifted"] == [] and all(m["value"] == 0 for m in same["measures"])


def test_a_constant_size_that_changes_drifts_by_psi_too() -> None:
    # every previous image 64 px wide: deciles collapse to one bin, so PSI is taken over
    # the share of each value instead
    found = drift.numeric_drift(pd.Series([64] * 100), pd.Series([96] * 50 + [64] * 50))
    assert found["ks"] == 0.5 and found["psi"] > 1
    same = drift.numeric_drift(pd.Series([64] * 100), pd.Series([64] * 30))
    assert same == {"ks": 0.0, "psi": 0.0}


def test_new_vocabulary_of_added_texts_alone_equals_that_of_the_whole_candidate() -> None:
    """A refresh that removed nothing cuts only its new texts into tokens: the share is the
    one the whole candidate gives, for Chinese bigrams and for words alike."""
    before = labelled(300)["text"].tolist() + ["the quick brown fox", "a lazy dog sleeps"]
    added = labelled(340)["text"].tolist()[300:] + ["the quick red fox", "新词汇出现了 here"]
    whole = drift.new_vocabulary(before, before + added)
    assert 0 < whole < 1
    assert drift.new_vocabulary(before, added, grows=True) == pytest.approx(whole)
    table = pd.DataFrame({"text": before + added})
    found = drift.compare(table.iloc[:len(before)], table, "text", None, Drift(), [],
                          added=table.iloc[len(before):])
    share = next(m["value"] for m in found["measures"] if m["measure"] == "new vocabulary share")
    assert share == pytest.approx(round(whole, 4))
