"""Preprocessing operators on data generated here with known ground truth: personal data,
exact and near duplicates, normalisation and filters."""

from __future__ import annotations

import random
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from lifecycle.errors import PermanentError
from lifecycle.preprocess import neardedup
from lifecycle.preprocess.stage import ExactDeduplicator
from lifecycle.spec import FieldRule, Filters, LanguageFilter, NearDedup, Normalise
from lifecycle.text import neardup, pii
from lifecycle.text.textops import Normaliser, RecordFilter

pytestmark = pytest.mark.unit

# common characters, so generated "reviews" look like Chinese text to the shingler
HAN = ("的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也"
       "能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实"
       "加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样"
       "与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情")


def _id_card(rng: random.Random, valid: bool = True) -> str:
    region = rng.choice(["110105", "310104", "440305", "510107", "330106"])
    born = date(1950, 1, 1) + timedelta(days=rng.randrange(0, 20000))
    body = f"{region}{born:%Y%m%d}{rng.randrange(1000):03d}"
    check = pii.id_check_digit(body)
    if not valid:
        check = next(c for c in "0123456789X" if c != check)
    return body + check


def _card(rng: random.Random, valid: bool = True) -> str:
    body = "622202" + "".join(str(rng.randrange(10)) for _ in range(12))
    for last in "0123456789":
        if pii.luhn_valid(body + last) == valid:
            return body + last
    raise AssertionError("unreachable")


def _sentence(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(HAN) for _ in range(n))


# ---- personal data ----------------------------------------------------------------------------
def test_pii_recall_on_valid_numbers_and_silence_on_invalid_ones() -> None:
    rng = random.Random(7)
    planted: list[tuple[str, str]] = []
    decoys: list[str] = []
    texts = []
    for i in range(300):
        kind = i % 6
        if kind == 0:
            value, decoy = _id_card(rng), _id_card(rng, valid=False)
            planted.append(("id_card", value))
        elif kind == 1:
            value, decoy = _card(rng), _card(rng, valid=False)
            planted.append(("bank_card", value))
        elif kind == 2:
            # prefixes the operators were allotted (MIIT): 13x, 15x but 154, 18x, 19[89]
            prefix = rng.choice(["13", "15", "18"]) + str(rng.randrange(10))
            prefix = "155" if prefix == "154" else prefix
            value = f"{prefix}{rng.randrange(10**8):08d}"
            decoy = f"12{rng.randrange(10**9):09d}"  # no mobile range starts with 12
            planted.append(("mobile", value))
        elif kind == 3:
            value = f"user{i}.test@example{i % 7}.com.cn"
            decoy = f"user{i} at example dot com"
            planted.append(("email", value))
        elif kind == 4:
            area = rng.choice(["10", "21", "755"])
            value = f"0{area}-{rng.randrange(2, 9)}{rng.randrange(10**6, 10**7)}"
            decoy = f"订单号{rng.randrange(10**9)}"
            planted.append(("landline", value))
        else:
            a, b, c = rng.randrange(1, 223), rng.randrange(256), rng.randrange(256)
            value = f"{a}.{b}.{c}.{rng.randrange(1, 255)}"
            decoy = f"{rng.randrange(256, 999)}.{rng.randrange(256)}.1.1"  # not an address
            planted.append(("ipv4", value))
        decoys.append(decoy)
        texts.append(f"{_sentence(rng, 8)}：{value}，{_sentence(rng, 6)}（{decoy}）"
                     f"{_sentence(rng, 4)}")
    zh = pii.regions_for(["zh"])  # Chinese text: the phone regions of its language
    found = [(f.entity, f.value) for t in texts for f in pii.detect(t, regions=zh)]
    assert set(planted) <= set(found)  # recall 1.0 on the valid ones
    assert not [v for _, v in found if v in decoys]  # nothing on the invalid ones
    assert len(found) == len(planted)


def test_id_card_rules() -> None:
    assert pii.valid_id_card("11010519491231002X")
    assert not pii.valid_id_card("110105194912310021")  # wrong check digit
    assert not pii.valid_id_card("110105194902300028")  # 30 February
    assert not pii.valid_id_card("990105194912310027")  # no province 99
    assert pii.mask("id_card", "11010519491231002X") == "110105********002X"
    assert pii.mask("mobile", "13812345678") == "138****5678"


@pytest.mark.parametrize("text,entity", [
    ("call +1 415 555 2671 now", "intl_phone"), ("护照号E12345678", "passport"),
    ("车牌粤B12345停在门口", "plate"), ("see https://example.org/a?b=1 ok", "url"),
    ("server 2001:db8::1 down", "ipv6"), ("电话(010)62345678", "landline"),
])
def test_other_detectors(text: str, entity: str) -> None:
    assert [f.entity for f in pii.detect(text)] == [entity]


def test_times_and_prices_are_not_personal_data() -> None:
    for text in ("12:30:45 到 13:00", "价格 1999.00 元", "第 3.1.2 节", "版本 10.0.19041"):
        assert pii.detect(text) == [], text


def test_salted_hash_is_stable_and_depends_on_the_salt() -> None:
    a = pii.salted_hash("mobile", "138 1234 5678", "s1")
    assert a == pii.salted_hash("mobile", "13812345678", "s1")
    assert a != pii.salted_hash("mobile", "13812345678", "s2")
    assert a.startswith("[MOBILE:") and "5678" not in a


# ---- duplicates -------------------------------------------------------------------------------
def _edit(rng: random.Random, text: str, share: float) -> str:
    chars = list(text)
    for _ in range(max(1, int(len(chars) * share))):
        op = rng.random()
        i = rng.randrange(len(chars))
        if op < 0.4:
            chars[i] = rng.choice(HAN)
        elif op < 0.7:
            chars.insert(i, rng.choice(HAN + "，。！ "))
        elif len(chars) > 10:
            del chars[i]
    return "".join(chars)


def _jaccard(a: str, b: str, n: int = 3) -> float:
    sa = {a[i:i + n] for i in range(len(a) - n + 1)}
    sb = {b[i:i + n] for i in range(len(b) - n + 1)}
    return len(sa & sb) / len(sa | sb)


def test_near_dedup_recall_and_precision_on_generated_near_duplicates() -> None:
    rng = random.Random(11)
    texts: list[str] = []
    family: list[int] = []
    for f in range(600):
        base = _sentence(rng, rng.randrange(60, 160))
        texts.append(base)
        family.append(f)
        for _ in range(rng.randrange(0, 3)):
            texts.append(_edit(rng, base, rng.uniform(0.02, 0.2)))
            family.append(f)
    order = rng.sample(range(len(texts)), len(texts))
    texts = [texts[i] for i in order]
    family = [family[i] for i in order]
    sig = neardup.MinHasher().signatures(texts)
    found = neardup.cluster(sig, bands=32, threshold=0.8)
    same = found.labels
    # ground truth: pairs of one family whose true 3-gram Jaccard is at least 0.8
    truth = [(i, j) for i in range(len(texts)) for j in range(i + 1, len(texts))
             if family[i] == family[j] and _jaccard(texts[i], texts[j]) >= 0.8]
    assert len(truth) > 50
    recall = sum(same[i] == same[j] for i, j in truth) / len(truth)
    merged = [(i, j) for i, j in found.pairs.tolist()]
    precision = sum(family[i] == family[j] for i, j in merged) / len(merged)
    assert recall >= 0.95, recall
    assert precision >= 0.98, precision


def test_a_refresh_pairs_every_banded_pair_that_holds_a_new_record() -> None:
    """Pairs with a record from ``start`` on (new), none of two published ones: all of them
    without a cap; with one, those the cap keeps (published records first in a bucket, then
    the keep order) and, apart, every pair of a new and a published record it leaves out."""
    rng = np.random.default_rng(3)
    for n, start, bits, cap in ((300, 250, 4, 1000), (600, 450, 2, 1000), (40, 40, 4, 1000),
                                (600, 450, 2, 5), (300, 250, 1, 3)):
        sig = rng.integers(0, 2 ** bits, (n, 16)).astype(np.uint32)
        sig[start:start + 5] = sig[:min(5, n - start)]  # new copies of published records
        rank = np.concatenate([np.arange(start), start + rng.permutation(n - start)])
        found, capped, beyond = neardup.bucket_pairs(sig, 4, rank, start, max_bucket=cap,
                                                     uncapped=True)
        truth = {(i, j) for i in range(n) for j in range(max(i + 1, start), n)
                 if any((sig[i, b * 4:b * 4 + 4] == sig[j, b * 4:b * 4 + 4]).all()
                        for b in range(4))}
        got, extra = set(map(tuple, found.tolist())), set(map(tuple, beyond.tolist()))
        assert not got & extra and all(i < start <= j for i, j in extra)
        if cap >= n:
            assert got == truth and not extra and capped == 0
            assert all((i, i + start) in got for i in range(min(5, n - start)))
            continue
        assert capped > 0 and extra and got < truth
        # capped: exactly the pairs that hold one of a bucket's first ``cap`` members
        expected = set()
        for band in range(4):
            key = neardup._band_key(sig, band, 4)
            for value in np.unique(key[start:]):
                members = np.flatnonzero(key == value)
                members = members[np.lexsort((rank[members], members >= start))]
                leaders = set(members[:cap].tolist())
                expected |= {(int(i), int(j)) for i in members for j in members
                             if i < j and j >= start and (i in leaders or j in leaders)}
        assert got == expected
        # with those beyond the cap: every pair of a published and a new record
        assert got | extra == {(i, j) for i, j in truth if i < start or (i, j) in expected}


def test_the_index_keeps_four_bits_and_reads_indexes_of_eight() -> None:
    rng = np.random.default_rng(5)
    for perms in (128, 17):
        sig = rng.integers(0, 2 ** 32, (6, perms), dtype=np.uint64).astype(np.uint32)
        rows = neardedup.low_bits(sig)
        assert {len(r) for r in rows} == {(perms + 1) // 2}
        legacy = [(row & 0xFF).astype(np.uint8).tobytes() for row in sig[:3]]  # 8 bits a value
        got = neardedup.index_signatures(legacy + rows[3:], perms)
        assert np.array_equal(got, sig & 0x0F)
    with pytest.raises(PermanentError, match="permutations changed"):
        neardedup.index_signatures(rows, 64)


def test_a_refresh_finds_near_copies_of_published_records_in_the_index_form() -> None:
    """New records compared with published ones through the 4-bit index, then verified on
    their texts: near copies are merged into their published record (recall), and nothing
    below the threshold is (precision, against the exact 3-gram Jaccard)."""
    rng = random.Random(12)
    published, fresh, family_of_new = [], [], []
    for f in range(400):
        base = _sentence(rng, rng.randrange(60, 160))
        published.append(base)
        if f % 4 == 0:  # a near copy of a published review arrives
            fresh.append(_edit(rng, base, rng.uniform(0.01, 0.05)))
            family_of_new.append(f)
        elif f % 4 == 1:  # an unrelated new review
            fresh.append(_sentence(rng, rng.randrange(60, 160)))
            family_of_new.append(-1)
        elif f % 4 == 2:  # a loose copy: kept, but near enough to share its split
            fresh.append(_edit(rng, base, rng.uniform(0.06, 0.1)))
            family_of_new.append(f)
    cfg = NearDedup(enabled=True)
    hasher = neardup.MinHasher(cfg.permutations, cfg.char_ngram, cfg.word_ngram, cfg.seed)
    old = pd.DataFrame({"id": [f"p{i}" for i in range(len(published))],
                        "sig": neardedup.low_bits(hasher.signatures(published)),
                        "length": 0, "complete": 0, "text_blob": "mem", "text_at": 0,
                        "text_len": 1})
    live = pd.DataFrame({"id": [f"n{i}" for i in range(len(fresh))],
                         "sig": [r.tobytes() for r in hasher.signatures(fresh)],
                         "length": [len(t) for t in fresh], "complete": 1, "text_blob": "mem",
                         "text_at": 0, "text_len": 1})
    text_of = {**{f"p{i}": t for i, t in enumerate(published)},
               **{f"n{i}": t for i, t in enumerate(fresh)}}
    asked: list[str] = []

    def fetch(refs: pd.DataFrame) -> list[list[str] | None]:
        asked.extend(refs["id"])
        return [[text_of[i]] for i in refs["id"]]

    table, dup, summary, links = neardedup.near(cfg, live, old, fetch, link_threshold=0.5)
    truth = {f"n{i}": f"p{f}" for i, f in enumerate(family_of_new)
             if f >= 0 and _jaccard(fresh[i], published[f]) >= 0.8}
    merged = dict(zip(table["id"], table["kept_id"], strict=True))
    assert len(truth) >= 60
    assert sum(merged.get(k) == v for k, v in truth.items()) / len(truth) >= 0.95
    assert all(_jaccard(text_of[k], text_of[v]) >= 0.8 for k, v in merged.items())
    assert summary["into_published"] == len(merged) == int(dup.sum())
    # only the published records of candidate pairs were asked for, not every one
    assert 0 < len({i for i in asked if i.startswith("p")}) < len(published) / 2
    # links for the split groups: kept new records to the published ones similar enough
    assert links is not None and not set(links["id"]) & set(merged)
    assert all(family_of_new[int(k[1:])] == int(v[1:])
               for k, v in zip(links["id"], links["published_id"], strict=True))
    loose = {f"n{i}": f"p{f}" for i, f in enumerate(family_of_new) if f >= 0
             and f"n{i}" not in merged and _jaccard(fresh[i], published[f]) >= 0.6}
    linked = set(zip(links["id"], links["published_id"], strict=True))
    assert len(loose) >= 40
    assert sum(pair in linked for pair in loose.items()) / len(loose) >= 0.95


def test_cjk_mask_decides_as_is_cjk_for_every_text() -> None:
    texts = ["", "a", "中", "中文评论 with English words", "mostly English 中",
             "カタカナとひらがな", "한국어 텍스트", "ｆｕｌｌ ｗｉｄｔｈ", "混合 text 一半",
             "\ud800中文", "ab中", "abcd中"]
    mask = neardup.cjk_mask(texts).tolist()
    assert mask == [neardup.is_cjk(t) for t in texts]
    # the share 0.3 either side: one of three characters is Chinese, one of five is not
    assert mask[2] and mask[5] and mask[6] and mask[-2] and not mask[-1] and not mask[0]
    # a batch of signatures is the same whichever way the texts are told apart
    hasher = neardup.MinHasher()
    one_by_one = np.vstack([hasher.signatures([t]) for t in texts])
    assert np.array_equal(hasher.signatures(texts), one_by_one)


def test_exact_dedup_recall_and_precision_are_one() -> None:
    rng = random.Random(3)
    originals = list({_sentence(rng, 30) for _ in range(500)})
    rows = [(t, c) for t in originals for c in range(rng.randrange(1, 4))]
    rng.shuffle(rows)
    df = pd.DataFrame({"id": [f"r{i}" for i in range(len(rows))], "text": [t for t, _ in rows]})
    kept, merges = ExactDeduplicator(["text"])(df)
    assert sorted(kept["text"]) == sorted(originals)
    text_of = dict(zip(df["id"], df["text"], strict=True))
    assert all(text_of[a] == text_of[b] for a, b in zip(merges["id"], merges["kept_id"],
                                                        strict=True))
    assert len(merges) == len(rows) - len(originals)


# ---- normalisation and filters ----------------------------------------------------------------
def test_normaliser_repairs_and_reports_each_step() -> None:
    n = Normaliser(Normalise(simplify=True))
    mojibake = "这个产品很好".encode().decode("cp1252", errors="replace")
    assert n(mojibake) != mojibake  # ftfy repairs what it can read back
    assert n("质量很好".encode().decode("latin-1")) == "质量很好"
    assert n("<p>很好&amp;便宜</p><br/>") == "很好&便宜"
    assert n("这个 <dC;SP4rI(8I> 不是标签") == "这个 <dC;SP4rI(8I> 不是标签"
    assert n("~{N@Iz<dC;SP4rI(8I>;~}") == "卫生间没有打扫干净"
    text, ops = n.apply("這個產品ＱＵＡＬＩＴＹ很好\u200b  ")
    assert text == "这个产品QUALITY很好"
    assert ops == ["nfkc", "to_simplified", "remove_control_chars", "fold_whitespace", "strip"]


def test_filters_name_the_rule_that_rejects() -> None:
    rf = RecordFilter(Filters(min_chars=3, max_chars=50, deny_regex=["广告"],
                              max_digit_ratio=0.5, max_repeated_ngram_ratio=0.5,
                              repeated_ngram=2, fields={"stars": FieldRule(min=1, max=5)}))
    assert rf.check_text("好")[0] == ("too_short", "1 < 3 characters")
    assert rf.check_text("加微信看广告")[0] == ("deny_regex", "广告")
    assert rf.check_text("1234567890好的")[0][0] == "digit_ratio"
    assert rf.check_text("哈哈哈哈哈哈哈哈哈哈")[0][0] == "repeated_ngrams"
    assert rf.check_text("这本书写得很好")[0] is None
    assert rf.check_fields({"stars": 9}) == ("field_stars", "9 > 5.0")
    assert rf.check_fields({"stars": 4}) is None


def test_language_filter_records_language_and_confidence() -> None:
    rf = RecordFilter(Filters(language=LanguageFilter(allowed=["zh"], min_confidence=0.5)))
    ok, found = rf.check_text("这本书的内容非常丰富，值得一读")
    assert ok is None and found is not None and found[0] == "zh" and found[1] > 0.9
    rejected, found = rf.check_text("This book is really worth reading twice")
    assert rejected is not None and rejected[0] == "language" and found[0] == "en"
    assert rf.languages == {"zh": 1, "en": 1}


def test_person_names_only_where_the_context_says_so() -> None:
    found = {t: [(f.entity, f.value) for f in pii.detect(t, ("person_name",))] for t in (
        "我叫张伟，请多关照", "联系人：李娜", "周末和李明老师去了", "收货人:欧阳修",
        "感谢刘老师的推荐", "张家界好玩", "我是一名幼儿园老师", "这位陈医生很耐心")}
    assert found["我叫张伟，请多关照"] == [("person_name", "张伟")]
    assert found["联系人：李娜"] == [("person_name", "李娜")]
    assert found["周末和李明老师去了"] == [("person_name", "李明")]
    assert found["收货人:欧阳修"] == [("person_name", "欧阳修")]
    for text in ("感谢刘老师的推荐", "张家界好玩", "我是一名幼儿园老师", "这位陈医生很耐心"):
        assert found[text] == [], text
    assert pii.mask("person_name", "欧阳修") == "欧**"
