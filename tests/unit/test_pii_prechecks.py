"""The detectors' pre-checks (lifecycle/text/pii.py: ``Detector.digits``, ``digit_run``,
``context``, and the phone search skipped below seven digits) only skip texts a pattern cannot
match: ``detect`` finds the same with them as without, on generated text that mixes Chinese,
digits, separators, the words names are found next to, e-mails, phone numbers of the
supported regions, identifiers and near misses of each."""

from __future__ import annotations

import re
import sys

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from lifecycle.text import pii
from lifecycle.text.phones import LANGUAGE_REGIONS

pytestmark = pytest.mark.unit

REGIONS = tuple(dict.fromkeys(r for rs in LANGUAGE_REGIONS.values() for r in rs))


def _phones() -> list[str]:
    """Example numbers of every supported region, mobile and fixed line, written nationally,
    internationally and in E.164."""
    out = []
    for region in REGIONS:
        for kind in (PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE):
            number = phonenumbers.example_number_for_type(region, kind)
            if number is not None:
                out += [phonenumbers.format_number(number, style) for style in (
                    PhoneNumberFormat.NATIONAL, PhoneNumberFormat.INTERNATIONAL,
                    PhoneNumberFormat.E164)]
    return out


PHONES = _phones()
WORDS = ["我叫", "名叫", "姓名", "姓名：", "联系人:", "收件人 ", "收货人：", "先生", "女士", "小姐",
         "老师", "经理", "师傅", "医生", "律师", "和", "找", "是", "请", "叫",
         "Mr ", "Mrs. ", "Ms ", "Mx ", "Miss ", "Dr. ", "Prof ", "Sir ", "Madam ", "my name is ",
         "MY NAME IS ", "My Name Is ", "I'm called ", "i am called ", "ım called ",
         "Name: ", "Contact, ", "Signed: ", "name", "SSN ", "social security no. ", "ſſn ",
         "John Smith", "Jane O'Neil", "Lloyd-Webber", "The ", "Thanks "]
VALUES = ["11010519491231002X", "110105194912310021", "GB82 WEST 1234 5698 7654 32",
          "GB82WEST12345698765432", "078-05-1121", "078 05 1121", "123456789",
          "4111 1111 1111 1111", "4222222222222", "6222-0212-3456-7890", "378282246310005",
          "192.168.1.20", "1.2.3", "2001:db8::1", "fe80::", "::", "a:b", "12:30",
          "https://example.org/a?b=1", "HTTP://X.CN", "www.example.cn", "WWW.x.com", "ftp://x",
          "user.1@example.org", "a@b.c", "E12345678", "G87654321", "EA1234567",
          "京A12345", "粤B·D12345", "沪C1234学", "新AB1234", "2024-03-01", "15/01/2024",
          "订单号6514329812", "电话", "phone ", "call ", "(010) 5123 6699", "010-51236699",
          "0791-2878108", "电话 0831349", "tel 0817271", "电话 3005859", "+86 138 1234 5678",
          "0044 20 7946 0958", "13812345678",
          "１３８１２３４５６７８", "١٢٣٤٥٦٧٨٩", "²³", "v10.0.19041", "ISBN 0-306-40615-2"]
HAN = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工"
PIECES = st.one_of(
    st.sampled_from(WORDS), st.sampled_from(VALUES), st.sampled_from(PHONES),
    st.text(alphabet=HAN + pii._SURNAMES[:40] + "欧阳司马", min_size=1, max_size=6),
    st.text(alphabet="0123456789", min_size=1, max_size=20),
    st.text(alphabet=" -./:()（）+#@，。、：;,", min_size=1, max_size=3),
    st.text(alphabet="ABEGXZabmwsy'", min_size=1, max_size=4),
    st.text(max_size=3))  # anything, unicode digits and case folds included
TEXTS = st.lists(PIECES, max_size=12).map("".join)


def _unchecked(text: str, regions: tuple[str, ...]) -> list[pii.Found]:
    return pii._detect(text, pii.ENTITIES, regions, prechecks=False)


@settings(max_examples=1500, deadline=None)
@given(text=TEXTS, languages=st.sampled_from([[], ["zh"], ["en"], ["de", "ja"], ["pl"]]))
def test_detect_finds_the_same_with_the_prechecks_as_without(text: str,
                                                             languages: list[str]) -> None:
    regions = pii.regions_for(languages)
    assert pii.detect(text, regions=regions) == _unchecked(text, regions)
    digits = pii.digits_of(text)
    for detector in pii.DETECTORS.values():  # each detector alone, not only what survives
        assert detector.find(text, digits) == detector.find(text), detector.entity


def test_the_prechecks_keep_every_fixture_value_alone_and_in_context() -> None:
    for value in VALUES + PHONES + WORDS:
        for text in (value, f"请联系{value}谢谢", f"{value} 王先生", f"Mr John Smith {value}"):
            for regions in (pii.DEFAULT_REGIONS, REGIONS, ("DE", "AT", "CH"), ("PL",)):
                assert pii.detect(text, regions=regions) == _unchecked(text, regions), text


def test_only_themselves_match_the_characters_the_prechecks_look_for_in_any_case() -> None:
    """``_name_words`` looks for a case-blind English phrase only in texts with an m or M, and
    url's pre-check for "://" or "." case-sensitively: no other character matches them in a
    case-blind pattern (Python folds i to ı and s to ſ, but not these)."""
    blind = re.compile(r"(?i:[m:/.])")
    matched = {c for c in map(chr, range(sys.maxunicode + 1)) if blind.fullmatch(c)}
    assert matched == set("mM:/.")
