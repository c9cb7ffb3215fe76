"""The numpy n-gram counter gives scikit-learn's char_wb n-grams, and the drift check's new
vocabulary share equals the per-token definition it replaced."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest
from sklearn.feature_extraction.text import CountVectorizer

from lifecycle.evaluate import drift
from lifecycle.text.chargrams import CharGrams, present, vocabulary
from tests.textdata import labelled

pytestmark = pytest.mark.unit


def _reference_new_vocabulary(before: list[str], after: list[str]) -> float:
    """The definition, one token at a time: Chinese texts give bigrams of their non-space
    characters, other texts their lower-cased words."""
    def tokens(text: str) -> list[str]:
        if re.search(r"[\u4e00-\u9fff]", text):
            chars = [c for c in text if not c.isspace()]
            return [a + b for a, b in zip(chars, chars[1:], strict=False)]
        return re.findall(r"\w+", text.lower())

    seen = {t for text in before for t in tokens(text)}
    counted = Counter(t for text in after for t in tokens(text))
    total = sum(counted.values())
    return sum(n for t, n in counted.items() if t not in seen) / total if total else 0.0


def test_single_word_texts_count_exactly_what_char_wb_counts() -> None:
    texts = ["很好用", "Hello", "质量不错，物流快", "", "ÉCOLE", "好好好好"]
    ours = CharGrams(ngram_range=(1, 2)).fit(texts)
    theirs = CountVectorizer(analyzer="char_wb", ngram_range=(1, 2)).fit(texts)
    assert len(ours.vocabulary_) == len(theirs.vocabulary_)
    a, b = ours.transform(texts).toarray(), theirs.transform(texts).toarray()
    assert a.sum(axis=1).tolist() == b.sum(axis=1).tolist()
    # the same multiset of counts per text (columns are in different orders)
    assert [sorted(r[r > 0].tolist()) for r in a] == [sorted(r[r > 0].tolist()) for r in b]


def test_between_words_the_space_is_one_position() -> None:
    # char_wb pads each word, " ab " and " cd ": 2 x (4 unigrams + 3 bigrams) = 14, the
    # space between counted twice; here " ab cd ": 7 unigrams + 6 bigrams = 13
    x = CharGrams(ngram_range=(1, 2)).fit(["ab cd"]).transform(["ab  cd", "ab\tcd"])
    theirs = CountVectorizer(analyzer="char_wb", ngram_range=(1, 2)).fit(["ab cd"])
    assert x.sum(axis=1).tolist() == [[13.0], [13.0]]
    assert theirs.transform(["ab cd"]).sum() == 14


def test_min_df_max_features_and_unknown_ngrams() -> None:
    texts = ["aaa", "aab", "abc", "xyz"]
    cg = CharGrams(ngram_range=(2, 2), min_df=2).fit(texts)
    # " a" in 3 texts, "aa" in 2, "a " 1, "ab" 2, "b " 1, ... -> " a", "aa", "ab"
    assert len(cg.vocabulary_) == 3
    assert cg.transform(["zzz qqq"]).nnz == 0  # nothing it learnt
    top = CharGrams(ngram_range=(1, 1), max_features=2).fit(["aaab", "ab"])
    assert top.transform(["a", "b", "c"]).toarray().sum(axis=1).tolist() == [3.0, 2.0, 2.0]


def test_fit_transform_cuts_once_and_counts_what_fit_then_transform_counts() -> None:
    texts = labelled(120)["text"].tolist() + ["Mixed 中英 text", "", "  spaced   out  ",
                                              "\ud800中文"]
    once = CharGrams(ngram_range=(1, 2), min_df=2)
    counted = once.fit_transform(texts)
    apart = CharGrams(ngram_range=(1, 2), min_df=2).fit(texts)
    assert np.array_equal(once.vocabulary_, apart.vocabulary_) and counted.nnz > 0
    assert (counted != apart.transform(texts)).nnz == 0


def test_the_label_model_learns_from_the_counted_ngrams() -> None:
    from lifecycle.labels.labelcheck import text_classifier

    df = labelled(600, seed=5)
    texts, labels = df["text"].tolist(), df["label"].tolist()
    model = text_classifier(texts).fit(texts[:500], labels[:500])
    accuracy = float(np.mean(model.predict(texts[500:]) == np.array(labels[500:])))
    assert accuracy > 0.9


def test_bigram_vocabulary_counts_every_occurrence() -> None:
    grams, counts = vocabulary(["好好 好", "好的"])
    # "好好好" -> 好好 x2; "好的" -> 好的 x1
    assert sorted(counts.tolist()) == [1, 2] and len(grams) == 2


@pytest.mark.parametrize("seed", [1, 2])
def test_new_vocabulary_share_equals_the_per_token_definition(seed: int) -> None:
    before = labelled(300, seed=seed)["text"].tolist() + ["Battery life is great", "ok"]
    after = (labelled(300, seed=seed + 10)["text"].tolist()
             + ["Battery lasts long", "全新 iPhone 很好", "", "  "])
    ours = drift.new_vocabulary(before, after)
    assert ours == pytest.approx(_reference_new_vocabulary(before, after), abs=1e-12)
    assert 0 < ours < 1
    assert drift.new_vocabulary(after, after) == 0.0



def test_present_tells_which_grams_occur_as_isin_does() -> None:
    rng = np.random.default_rng(2)
    codes = rng.integers(0, 2 ** 63, 5000, dtype=np.uint64)
    grams = np.unique(np.concatenate([codes[:40], rng.integers(0, 2 ** 63, 60,
                                                               dtype=np.uint64)]))
    found = present(grams, codes)
    assert found.tolist() == np.isin(grams, codes).tolist() and found.sum() == 40
    assert present(grams, codes[:0]).sum() == 0 and len(present(grams[:0], codes)) == 0
