"""Personal-data detection for Chinese and international text (个人信息).

Each detector is a regular expression for the candidates plus, where the format has one, a
validator from a well-kept library: a resident ID needs its GB 11643-1999 check digit, a
birth place and a birth date that exist (python-stdnum ``cn.ric``); a bank card its Luhn digit
(``luhn``) and a card network's prefix and length; a US social security number an area, group
and serial that are issued (``us.ssn``); an IBAN its ISO 13616 check digits and its country's
length and shape (``iban``); IP addresses must parse. Phone numbers of every region are found
and validated by ``phonenumbers`` (Google's libphonenumber metadata), for the regions a caller
names (see ``regions_for``); numbers written in international format (+44 ..., 0044 ...) are
found whatever the regions (lifecycle/text/phones.py; its public names are importable from
here). A candidate that fails validation is never reported. Where two
detections overlap, the one found first in ``ENTITIES`` order wins (an ID card number is not
also reported as a card).

Chinese plates, passports and names (in context) are our own patterns: no widely used library
covers them. English person names are found in context only (a title such as Mr or Dr, or
"my name is"); street addresses are not detected (docs/spec.md says why).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from typing import NamedTuple

import phonenumbers
from stdnum import __version__ as _stdnum_version
from stdnum import iban as _iban
from stdnum import luhn as _luhn
from stdnum.cn import ric as _ric
from stdnum.exceptions import ValidationError
from stdnum.us import ssn as _ssn

from lifecycle.text.phones import (
    _DATE,
    _MIN_PHONE_DIGITS,
    DEFAULT_REGIONS,
    LANGUAGE_REGIONS,
    find_phones,
    language_code,
)
from lifecycle.text.phones import known_region as known_region
from lifecycle.text.phones import regions_for as regions_for

ENTITIES = ("id_card", "iban", "ssn", "bank_card", "ipv4", "ipv6", "mobile", "landline",
            "intl_phone", "email", "url", "passport", "plate", "person_name")
PHONES = ("mobile", "landline", "intl_phone")  # Chinese mobile and fixed-line, any other region

_PROVINCES = {11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45,
              46, 50, 51, 52, 53, 54, 61, 62, 63, 64, 65, 71, 81, 82}
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"

# the libraries whose data decides what is found: recorded with the residual personal data a
# refresh carries over, so a metadata update makes the next refresh scan everything again
DETECTOR_VERSIONS = {"phonenumbers": phonenumbers.__version__,
                     "python-stdnum": _stdnum_version}

# what is found whatever the language, and what only in text of a language: national-format
# phone numbers come on top, for the regions searched (LANGUAGE_REGIONS or the spec's list)
UNIVERSAL = ("iban", "bank_card", "intl_phone", "email", "ipv4", "ipv6", "url")
LANGUAGE_TYPES: dict[str, tuple[str, ...]] = {
    "zh": ("id_card", "mobile", "landline", "passport", "plate", "person_name"),
    "en": ("ssn", "person_name"),
}
# kinds of personal data no detector here finds in any language: said in the coverage
NOT_DETECTED = ("address",)


def coverage(languages: Iterable[str], regions: tuple[str, ...]) -> dict[str, dict[str, list[str]]]:
    """Per language: the personal-data types detected in its text (``types``), the phone
    regions whose national formats are searched for it (``phone_regions``), and what is
    not detected (``not_covered``: names, national identifiers, addresses)."""
    out: dict[str, dict[str, list[str]]] = {}
    for lang in dict.fromkeys(language_code(x) for x in languages):
        own = LANGUAGE_TYPES.get(lang, ())
        phone_regions = [r for r in LANGUAGE_REGIONS.get(lang, ()) if r in regions]
        missing = [*NOT_DETECTED, *(["person_name"] if "person_name" not in own else []),
                   *(["national_id"] if not set(own) & {"id_card", "ssn"} else [])]
        out[lang] = {"types": [e for e in ENTITIES if e in own or e in UNIVERSAL],
                     "phone_regions": phone_regions, "not_covered": missing}
    return out



# ---- validators ------------------------------------------------------------------------------
def id_check_digit(first17: str) -> str:
    """The GB 11643-1999 check character of the first 17 digits (python-stdnum)."""
    return str(_ric.calc_check_digit(first17 + "0"))


def _birth_year(v: str) -> int | None:
    """The birth year of an ID number whose birth date exists (stdnum), else None."""
    try:
        return int(_ric.get_birth_date(v).year)
    except ValidationError:
        return None


def valid_id_card(value: str) -> bool:
    """An 18-character resident ID with a real province code, a birth date that exists (from
    1900 to today) and its check digit. stdnum's own ``is_valid`` also requires the county to
    have existed in the birth year, which rejects real numbers: a county code is assigned at
    registration, and people born before their county was created (440305 Nanshan, 1983)
    hold it; so the province is checked here and the rest through stdnum."""
    v = value.upper()
    if len(v) != 18 or not v[:17].isdigit() or int(v[:2]) not in _PROVINCES:
        return False
    year = _birth_year(v)
    if year is None or year < 1900 or _ric.get_birth_date(v) > date.today():
        return False
    return id_check_digit(v[:17]) == v[17]


def luhn_valid(digits: str) -> bool:
    return bool(_luhn.is_valid(digits))


def valid_ssn(value: str) -> bool:
    """A US social security number that can have been issued: area not 000, 666 or 9xx, group
    not 00, serial not 0000, none of the numbers known to have been published (stdnum)."""
    return bool(_ssn.is_valid(re.sub(r"[ -]", "", value)))  # stdnum reads 123-45-6789 or bare


def valid_iban(value: str) -> bool:
    """ISO 13616 check digits and the country's length and shape (stdnum)."""
    return bool(_iban.is_valid(value))


# card networks and the lengths they issue (ISO/IEC 7812 prefixes): a Luhn-valid number of
# another length or prefix is not reported
_NETWORKS = ((("4",), (13, 16, 19)),                                    # Visa
             (("51", "52", "53", "54", "55"), (16,)),                   # Mastercard
             (("34", "37"), (15,)),                                     # American Express
             (("35",), (16, 17, 18, 19)),                               # JCB
             (("62", "60", "81"), (16, 17, 18, 19)))                    # UnionPay, domestic


def _id_shaped(digits: str) -> bool:
    """18 digits with a real province code and birth date: an ID card number, valid or not."""
    if len(digits) != 18 or int(digits[:2]) not in _PROVINCES:
        return False
    year = _birth_year(digits)
    return year is not None and 1900 <= year <= date.today().year


def valid_bank_card(value: str) -> bool:
    if _DATE.search(value):
        return False  # "4806 2925 2024-03-01": a phone's last groups and a date, not a card
    digits = re.sub(r"[ -]", "", value)
    if not any(digits.startswith(prefixes) and len(digits) in lengths
               for prefixes, lengths in _NETWORKS):
        return False
    # an ID card number with a wrong check digit is a mistyped ID, not a card
    return luhn_valid(digits) and not _id_shaped(digits)


def _valid_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


_B = r"(?<![0-9A-Za-z])"  # no letter or digit just before
_E = r"(?![0-9A-Za-z])"   # ... or just after
_PROVINCE_CHARS = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
# the most common surnames (about 85% of the population) and a few two-character ones
_SURNAMES = ("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田"
             "董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白"
             "邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤")
_NAME = (r"(?P<name>(?:欧阳|司马|上官|诸葛|东方|皇甫|令狐|慕容|[" + _SURNAMES
         + r"])[\u4e00-\u9fff]{1,2}?)")
# the words around a name that say it is one: person_name's pattern is built from them, and
# every match holds one (``_name_words``)
_NAME_INTROS = ("我叫", "名叫")
_NAME_LABELS = ("姓名", "联系人", "收件人", "收货人")  # a colon and a space may follow
_NAME_TITLES = ("先生", "女士", "小姐", "老师", "经理", "师傅", "医生", "律师")
_EN_TITLES = ("Mr", "Mrs", "Ms", "Mx", "Miss", "Dr", "Prof", "Sir", "Madam")
_EN_PHRASES = r"(?i:my[ ]name[ ]is|i'?m[ ]called|i[ ]am[ ]called)"  # any case
_EN_LABELS = ("Name", "Contact", "Signed")
_NAME_WORDS = re.compile("|".join(_NAME_INTROS + _NAME_LABELS + _NAME_TITLES + _EN_TITLES
                                  + _EN_LABELS))
_EN_PHRASE = re.compile(_EN_PHRASES)


def _name_words(text: str) -> bool:
    """Whether ``text`` holds a word every person_name match holds one of: an intro, label or
    title (case as written), or an English phrase in any case. Each phrase holds an m, which
    only "m" and "M" match in any case (tests/unit/test_pii_prechecks.py checks every code
    point), so the slower case-blind search runs only on texts with one."""
    return bool(_NAME_WORDS.search(text)
                or (("m" in text or "M" in text) and _EN_PHRASE.search(text)))


_DIGIT_RUN = re.compile(r"\d+")  # \d as the patterns read it: any decimal digit, not only ASCII


class Digits(NamedTuple):
    """The digits of one text (``digits_of``), counted once for every detector's pre-checks
    (``Detector.find``): how many in all and the longest unbroken run."""
    total: int
    longest: int


_NO_DIGITS = Digits(0, 0)


def digits_of(text: str) -> Digits:
    runs = _DIGIT_RUN.findall(text)
    if not runs:
        return _NO_DIGITS
    lengths = list(map(len, runs))
    return Digits(sum(lengths), max(lengths))


@dataclass(frozen=True)
class Detector:
    entity: str
    pattern: re.Pattern[str]
    valid: Callable[[str], bool] | None = None
    needs: str = ""  # a cheap pre-check: skip texts with none of these characters
    groups: tuple[str | int, ...] = (0,)  # the match's part that is personal data: the first
    #                                       of these groups that took part in the match
    # pre-checks that only skip texts the pattern cannot match (each a necessary condition of
    # a match, said where the detector is defined): fewer digits in all, or no run of digits
    # this long, or ``context`` false
    digits: int = 0
    digit_run: int = 0
    context: Callable[[str], object] | None = None

    def find(self, text: str, digits: Digits | None = None) -> list[tuple[int, int, str]]:
        """(start, end, value) of every valid match. ``digits``: the text's (``digits_of``),
        when the caller has them; then the pre-checks run first."""
        if digits is not None and (digits.total < self.digits or digits.longest < self.digit_run
                                   or (self.context is not None and not self.context(text))):
            return []
        if self.needs and not any(c in text for c in self.needs):
            return []
        out = []
        for m in self.pattern.finditer(text):
            group = next(g for g in self.groups if m.group(g) is not None)
            value = m.group(group)
            if self.valid is None or self.valid(value):
                out.append((m.start(group), m.end(group), value))
        return out


_DIGITS = "0123456789"
# English names only in context: after a title (Mr, Mrs, Ms, Miss, Dr, Prof, Sir, Madam) or
# after "my name is", "I'm called", "name:", "contact:", "signed,": one to three capitalised
# words; a capitalised word that is a common sentence start ends the name
_EN_WORD = r"(?:[A-Z]'[A-Z][a-z]+|[A-Z][a-z]+(?:-[A-Z][a-z]+)?)"  # Smith, O'Neil, Lloyd-Webber
_EN_STOP = (r"(?!(?:The|This|That|And|But|I|It|We|You|He|She|They|Thanks|Thank|Please|Hi|"
            r"Hello|Dear|Regards|Is|Was|Are|On|In|At|From|To|For|With|My|Our|Your)\b)")
_EN_NAME = rf"{_EN_STOP}{_EN_WORD}(?:[ ]{_EN_STOP}(?:[A-Z]\.[ ]?)?{_EN_WORD}){{0,2}}"
_IBAN_HEAD = re.compile(r"[A-Z]{2}\d{2}")
_PLATE_HEAD = re.compile(f"[{_PROVINCE_CHARS}][A-HJ-NP-Z]")
# The pre-checks (digits, digit_run, context) are necessary conditions of each pattern, read
# off it: a run of N digits is N characters matched by [0-9] or \d, all of them \d.
DETECTORS = {
    "id_card": Detector("id_card", re.compile(
        _B + r"[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx]"
        + _E), valid_id_card, _DIGITS,
        digits=17, digit_run=17),  # 17 digits in a row, then a digit or X
    # ISO 13616: country, two check digits, up to 30 letters and digits, in groups of four
    "iban": Detector("iban", re.compile(
        _B + r"[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,3})?" + _E),
        valid_iban, _DIGITS,
        digits=2, digit_run=2, context=_IBAN_HEAD.search),  # every match starts so
    # written 123-45-6789 or 123 45 6789; nine bare digits only after "SSN" or "social
    # security (number|no)"
    "ssn": Detector("ssn", re.compile(
        _B + r"(?<!\+\d )(?<!\+\d\d )(?<!\+\d\d\d )"  # not a phone's "+81 732-17-1863"
        + r"(?P<shaped>\d{3}([- ])\d{2}\2\d{4})" + _E
        + r"|(?i:ssn|social[ ]security(?:[ ]number|[ ]no\.?)?)[ ]?(?:#|:)?[ ]?"
        + r"(?P<bare>\d{9})" + _E), valid_ssn, _DIGITS, ("shaped", "bare"),
        digits=9, digit_run=4),  # 3+2+4 digits, or 9 in a row
    "bank_card": Detector("bank_card", re.compile(
        # not the account digits of an IBAN-shaped string ("AT14 5548 4598 ...")
        _B + r"(?<![A-Z]{2}\d{2} )[3-68]\d{3}(?:[ -]?\d{4}){2}(?:[ -]?\d{1,4}){1,2}" + _E),
        valid_bank_card,
        _DIGITS, digits=13, digit_run=4),  # 4, 4, 4 and at least 1 more
    "email": Detector("email", re.compile(
        r"[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}"),
        None, "@"),
    "ipv4": Detector("ipv4", re.compile(_B + r"(?:\d{1,3}\.){3}\d{1,3}" + r"(?![0-9.])"),
                     _valid_ip, ".", digits=4, digit_run=1,
                     context=lambda t: t.count(".") >= 3),  # four numbers, three dots
    "ipv6": Detector("ipv6", re.compile(
        r"(?<![0-9A-Za-z:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![0-9A-Za-z:])"),
        lambda v: v.count(":") >= 2 and any(c.isalnum() for c in v) and _valid_ip(v), ":",
        context=lambda t: t.count(":") >= 2),  # two colons at least
    "url": Detector("url", re.compile(
        r"(?:https?://|www\.)[A-Za-z0-9\-._~:/?#\[\]@!$&*+,;=%]+", re.IGNORECASE), None,
        "w/", context=lambda t: "://" in t or "." in t),  # caseless characters: only themselves
    "passport": Detector("passport", re.compile(
        _B + r"(?:[EG]\d{8}|E[A-HJ-NP-Z]\d{7})" + _E), None, "EG",
        digits=7, digit_run=7),  # 8 digits, or 7 after the letters
    "plate": Detector("plate", re.compile(
        f"[{_PROVINCE_CHARS}][A-HJ-NP-Z][·• ]?(?:[A-HJ-NP-Z0-9]{{5,6}}|[A-HJ-NP-Z0-9]{{4}}"
        r"[挂学警港澳])" + _E), None, _PROVINCE_CHARS,
        context=_PLATE_HEAD.search),  # every match starts so
    # only in context that says it is a name: "我叫张伟", "联系人：李娜", "王先生"
    "person_name": Detector("person_name", re.compile(
        "(?:" + "|".join(_NAME_INTROS + tuple(w + r"[:：]?\s?" for w in _NAME_LABELS)) + ")"
        + _NAME
        + r"(?![\u4e00-\u9fff]{2})|"
        # a full name before a title, at the start of a phrase or after 和/跟/给/找/问/...
        + r"(?:(?<![\u4e00-\u9fff])|(?<=[和跟与给找问向请是叫]))"
        + _NAME.replace("name>", "titled>")
        + "(?=" + "|".join(_NAME_TITLES) + ")"
        # English: "Mr John Smith", "Dr. Jane Doe", "my name is Jane Doe", "Name: Jane Doe"
        + r"|(?<![A-Za-z])(?:(?:" + "|".join(_EN_TITLES) + r")\.?[ ]"
        + "|" + _EN_PHRASES + "[ ]"
        + "|(?:" + "|".join(_EN_LABELS) + r")[ ]?[:,][ ]?)"
        + rf"(?P<english>{_EN_NAME})(?![A-Za-z])"),
        None, _SURNAMES + "欧司上诸东皇令慕MDPSNCm", ("name", "titled", "english"),
        context=_name_words),  # every alternative needs one of the words
}


@dataclass(frozen=True)
class Found:
    entity: str
    start: int
    end: int
    value: str


def detect(text: str, entities: list[str] | tuple[str, ...] = ENTITIES,
           regions: tuple[str, ...] = DEFAULT_REGIONS) -> list[Found]:
    """Personal data in ``text``, non-overlapping, in text order. ``regions``: the phone
    regions whose national formats are searched (``regions_for``)."""
    return _detect(text, entities, regions, prechecks=True)


def _detect(text: str, entities: list[str] | tuple[str, ...], regions: tuple[str, ...],
            prechecks: bool) -> list[Found]:
    """``detect``; ``prechecks``: count the text's digits once and skip the detectors whose
    pre-checks fail (the same result: tests/unit/test_pii_prechecks.py), and the phone
    search when it has fewer digits than the shortest number."""
    taken: list[tuple[int, int]] = []
    found: list[Found] = []
    phones: list[tuple[str, int, int, str]] | None = None
    digits = digits_of(text) if prechecks else None
    for entity in ENTITIES:
        if entity not in entities:
            continue
        if entity in PHONES:
            if phones is None:
                phones = ([] if digits is not None and digits.total < _MIN_PHONE_DIGITS
                          else find_phones(text, tuple(regions)))
            hits = [(s, e, v) for kind, s, e, v in phones if kind == entity]
        else:
            hits = DETECTORS[entity].find(text, digits)
        for start, end, value in hits:
            if any(start < e and s < end for s, e in taken):
                continue
            taken.append((start, end))
            found.append(Found(entity, start, end, value))
    return sorted(found, key=lambda f: f.start)


# ---- what to do with it ----------------------------------------------------------------------
def mask(entity: str, value: str) -> str:
    """Hide the middle, keep what a reader needs to tell values apart: 138****5678."""
    if entity == "email":
        local, _, domain = value.partition("@")
        return f"{local[:1]}***@{domain}"
    if entity == "url":
        m = re.match(r"(?i)((?:https?://)?[^/?#]+)", value)
        return f"{m.group(1) if m else ''}/***"
    if entity == "ipv4":
        return ".".join(value.split(".")[:2] + ["*", "*"])
    if entity == "ipv6":
        return value.split(":")[0] + ":****"
    if entity in ("passport", "plate"):
        return value[:2] + "*" * (len(value) - 2)
    if entity == "person_name":
        return value[:1] + "*" * (len(value) - 1)
    keep = [i for i, c in enumerate(value) if c.isalnum()]
    # an ID card keeps its region, an IBAN its country and check digits, a social security
    # number its last four only (the area number tells where it was issued)
    head, tail = {"id_card": (6, 4), "iban": (4, 4), "ssn": (0, 4)}.get(entity, (3, 4))
    if entity == "id_card" and len(keep) < 12:
        head = 3
    if len(keep) <= head + tail:
        head, tail = 1, 1
    hidden = set(keep[head:len(keep) - tail])
    return "".join("*" if i in hidden else c for i, c in enumerate(value))


def placeholder(entity: str) -> str:
    return f"[{entity.upper()}]"


def salted_hash(entity: str, value: str, salt: str) -> str:
    """A stable pseudonym: the same value gives the same token within one salt."""
    normal = re.sub(r"[\s-]", "", value).upper()
    digest = hmac.new(salt.encode(), f"{entity}:{normal}".encode(), hashlib.sha256)
    return f"[{entity.upper()}:{digest.hexdigest()[:12]}]"
