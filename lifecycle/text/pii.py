"""Personal-data detection for Chinese and international text (个人信息).

Each detector is a regular expression for the candidates plus, where the format has one, a
validator from a well-kept library: a resident ID needs its GB 11643-1999 check digit, a
birth place and a birth date that exist (python-stdnum ``cn.ric``); a bank card its Luhn digit
(``luhn``) and a card network's prefix and length; a US social security number an area, group
and serial that are issued (``us.ssn``); an IBAN its ISO 13616 check digits and its country's
length and shape (``iban``); IP addresses must parse. Phone numbers of every region are found
and validated by ``phonenumbers`` (Google's libphonenumber metadata), for the regions a caller
names (see ``regions_for``); numbers written in international format (+44 ..., 0044 ...) are
found whatever the regions. A candidate that fails validation is never reported. Where two
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
from functools import cache, lru_cache

import phonenumbers
from phonenumbers import PhoneNumberType
from stdnum import __version__ as _stdnum_version
from stdnum import iban as _iban
from stdnum import luhn as _luhn
from stdnum.cn import ric as _ric
from stdnum.exceptions import ValidationError
from stdnum.us import ssn as _ssn

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

# ---- phone regions ----------------------------------------------------------------------------
# the regions whose national formats are searched for a language of the spec (ISO 639-1, the
# part before a "-" or "_"); the first region under which a number is valid decides its type
LANGUAGE_REGIONS: dict[str, tuple[str, ...]] = {
    "zh": ("CN", "HK", "MO", "TW", "SG"),
    "en": ("US", "GB", "CA", "AU", "NZ", "IE", "IN", "ZA"),
    "ja": ("JP",), "ko": ("KR",), "de": ("DE", "AT", "CH"), "fr": ("FR", "BE", "CH", "CA"),
    "es": ("ES", "MX", "AR", "CO"), "pt": ("PT", "BR"), "it": ("IT",), "nl": ("NL", "BE"),
    "ru": ("RU",), "vi": ("VN",), "th": ("TH",), "id": ("ID",), "ms": ("MY",),
    "ar": ("SA", "AE", "EG"), "hi": ("IN",), "tr": ("TR",), "pl": ("PL",),
}
# a spec without a language: the regions of the project's two main languages
DEFAULT_REGIONS = LANGUAGE_REGIONS["zh"] + LANGUAGE_REGIONS["en"]
# businesses' numbers (toll-free, premium, shared-cost, universal access, voicemail) are not
# personal data: a valid number of one of these types is not reported
_PERSONAL_TYPES = {PhoneNumberType.FIXED_LINE, PhoneNumberType.MOBILE,
                   PhoneNumberType.FIXED_LINE_OR_MOBILE, PhoneNumberType.PERSONAL_NUMBER,
                   PhoneNumberType.VOIP, PhoneNumberType.PAGER, PhoneNumberType.UNKNOWN}


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


def language_code(language: str) -> str:
    """``zh-Hans`` -> ``zh``: the ISO 639-1 part of a language tag, lower-case."""
    return re.split(r"[-_]", language.strip(), maxsplit=1)[0].lower()


def regions_for(languages: Iterable[str], listed: Iterable[str] | None = None) -> tuple[str, ...]:
    """The phone regions to search: ``listed`` (preprocess.pii.regions) when given, else the
    regions of the languages (``LANGUAGE_REGIONS``), else ``DEFAULT_REGIONS``; in order,
    without repeats."""
    if listed is not None:
        return tuple(dict.fromkeys(r.upper() for r in listed))
    languages = list(languages)  # an iterator would be spent by the first pass
    found = [r for lang in languages for r in LANGUAGE_REGIONS.get(language_code(lang), ())]
    return tuple(dict.fromkeys(found)) if languages else DEFAULT_REGIONS


def known_region(region: str) -> bool:
    """A region phonenumbers has numbering metadata for (ISO 3166-1 alpha-2)."""
    return region.upper() in phonenumbers.SUPPORTED_REGIONS


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


@dataclass(frozen=True)
class Detector:
    entity: str
    pattern: re.Pattern[str]
    valid: Callable[[str], bool] | None = None
    needs: str = ""  # a cheap pre-check: skip texts with none of these characters
    groups: tuple[str | int, ...] = (0,)  # the match's part that is personal data: the first
    #                                       of these groups that took part in the match

    def find(self, text: str) -> list[tuple[int, int, str]]:
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
DETECTORS = {
    "id_card": Detector("id_card", re.compile(
        _B + r"[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx]"
        + _E), valid_id_card, _DIGITS),
    # ISO 13616: country, two check digits, up to 30 letters and digits, in groups of four
    "iban": Detector("iban", re.compile(
        _B + r"[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,3})?" + _E),
        valid_iban, _DIGITS),
    # written 123-45-6789 or 123 45 6789; nine bare digits only after "SSN" or "social
    # security (number|no)"
    "ssn": Detector("ssn", re.compile(
        _B + r"(?<!\+\d )(?<!\+\d\d )(?<!\+\d\d\d )"  # not a phone's "+81 732-17-1863"
        + r"(?P<shaped>\d{3}([- ])\d{2}\2\d{4})" + _E
        + r"|(?i:ssn|social[ ]security(?:[ ]number|[ ]no\.?)?)[ ]?(?:#|:)?[ ]?"
        + r"(?P<bare>\d{9})" + _E), valid_ssn, _DIGITS, ("shaped", "bare")),
    "bank_card": Detector("bank_card", re.compile(
        # not the account digits of an IBAN-shaped string ("AT14 5548 4598 ...")
        _B + r"(?<![A-Z]{2}\d{2} )[3-68]\d{3}(?:[ -]?\d{4}){2}(?:[ -]?\d{1,4}){1,2}" + _E),
        valid_bank_card,
        _DIGITS),
    "email": Detector("email", re.compile(
        r"[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}"),
        None, "@"),
    "ipv4": Detector("ipv4", re.compile(_B + r"(?:\d{1,3}\.){3}\d{1,3}" + r"(?![0-9.])"),
                     _valid_ip, "."),
    "ipv6": Detector("ipv6", re.compile(
        r"(?<![0-9A-Za-z:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![0-9A-Za-z:])"),
        lambda v: v.count(":") >= 2 and any(c.isalnum() for c in v) and _valid_ip(v), ":"),
    "url": Detector("url", re.compile(
        r"(?:https?://|www\.)[A-Za-z0-9\-._~:/?#\[\]@!$&*+,;=%]+", re.IGNORECASE), None,
        "w/"),
    "passport": Detector("passport", re.compile(
        _B + r"(?:[EG]\d{8}|E[A-HJ-NP-Z]\d{7})" + _E), None, "EG"),
    "plate": Detector("plate", re.compile(
        f"[{_PROVINCE_CHARS}][A-HJ-NP-Z][·• ]?(?:[A-HJ-NP-Z0-9]{{5,6}}|[A-HJ-NP-Z0-9]{{4}}"
        r"[挂学警港澳])" + _E), None, _PROVINCE_CHARS),
    # only in context that says it is a name: "我叫张伟", "联系人：李娜", "王先生"
    "person_name": Detector("person_name", re.compile(
        r"(?:我叫|名叫|姓名[:：]?\s?|联系人[:：]?\s?|收件人[:：]?\s?|收货人[:：]?\s?)" + _NAME
        + r"(?![\u4e00-\u9fff]{2})|"
        # a full name before a title, at the start of a phrase or after 和/跟/给/找/问/...
        + r"(?:(?<![\u4e00-\u9fff])|(?<=[和跟与给找问向请是叫]))"
        + _NAME.replace("name>", "titled>")
        + r"(?=先生|女士|小姐|老师|经理|师傅|医生|律师)"
        # English: "Mr John Smith", "Dr. Jane Doe", "my name is Jane Doe", "Name: Jane Doe"
        + r"|(?<![A-Za-z])(?:(?:Mr|Mrs|Ms|Mx|Miss|Dr|Prof|Sir|Madam)\.?[ ]"
        + r"|(?i:my[ ]name[ ]is|i'?m[ ]called|i[ ]am[ ]called)[ ]"
        + r"|(?:Name|Contact|Signed)[ ]?[:,][ ]?)"
        + rf"(?P<english>{_EN_NAME})(?![A-Za-z])"),
        None, _SURNAMES + "欧司上诸东皇令慕MDPSNCm", ("name", "titled", "english")),
}

# a run of digits with the separators people write between them (ASCII and full-width
# brackets, dashes, dots, slashes, single spaces): the candidates phonenumbers is shown. Not
# the tail of a longer token: no letter or digit just before, nor a digit and a separator
# ("v10.0.19041", "ISBN 0-306-...": a run starting inside them is not a number)
_PHONE_RUN = re.compile(r"(?<![0-9A-Za-z])(?<![0-9][.\-/])(?:\+|00)?[(（]?\d"
                        r"(?:[\d\-./()（）]|[ ](?=[\d(（]))*\d(?![0-9A-Za-z])")
_MIN_PHONE_DIGITS = 7
_MAX_PHONE_DIGITS = 17  # 15 (E.164) and an international or trunk prefix
_MAX_PARTS = 6  # a sub-run spans at most this many space-separated groups
# a date inside a run cuts it: no phone number goes through "2024-01-15" or "15/01/2024"
_DATE = re.compile(r"(?<!\d)(?:(?:1[89]|20)\d\d([-/.])[01]?\d\1[0-3]?\d"
                   r"|[0-3]?\d([-/.])[01]?\d\2(?:1[89]|20)\d\d|[0-3]\d [01]\d (?:1[89]|20)\d\d)"
                   r"(?!\d)")
_YEARS = re.compile(r"(?:1[89]|20)\d\d[-/](?:1[89]|20)\d\d")  # "2019-2023": a span of years
_DOTTED = re.compile(r"\d+(?:\.\d+){3,}")  # a version or an IP address: 2.7.18.1234567
# a bare run of at most ten digits (no separator, no prefix) is a phone number only after a
# word that says so: in most regions a good share of such runs are valid numbers, and most
# are order numbers, codes or amounts. Chinese mobiles (11 digits) and any longer run need no
# word, as before phonenumbers came in.
_BARE_MAX = 10
_PHONE_WORDS = re.compile(r"\b(?i:phone|tel|call|ring|mobile|cell|contact|fax|text|whatsapp|"
                          r"reach)|电话|電話|手机|手機|致电|致電|联系|聯絡|聯繫|热线|熱線|拨打|撥打|"
                          r"传真|傳真|短信|微信|号码|號碼")
# a reference word right before a run (only spaces, punctuation and "no."/"number"/号 between)
# makes it a reference, not a phone number, whatever other words say ("call about order
# 1234567890", "Invoice 2023-000123", "订单号6514329812")
_AFTER = r"(?:[\s:：#.,\-]|\b(?i:no|nr|num|number)\b|[号號码碼])*$"
_REFERENCE = re.compile(
    r"(?:\b(?i:order|invoice|inv|isbn|issn|version|ver|build|ref|reference|tracking|ticket|"
    r"case|account|acct|patent|serial|sku|item|model|page|pages|pp)\b|"
    r"订单|訂單|单|單|编|編|发票|發票|运单|運單|快递|快遞|版本|账|帳|账户|序列|型|页|頁)"
    r"(?:-1[03])?" + _AFTER)  # ISBN-10
# weaker: a "no." or "#" right before says reference when no phone word is near ("phone no.")
_NUMBER_WORD = re.compile(r"(?:\b(?i:no|nr|num|number|id)\b|#)" + _AFTER)
_WORD_WINDOW = 16  # characters before a run that are searched for these words
# a Chinese landline as written: an area code (010, 02x, or four digits 03xx-09xx), a
# separator or brackets, a local number of seven or eight digits not starting with 0 or 1
_CN_LANDLINE = re.compile(r"[(（]?(?:010|02\d|0[3-9]\d\d)(?:[)）][ ]?|[ -])[2-9]\d{2,3}[ -]?\d{4}")


@cache
def _lengths(region: str) -> frozenset[int]:
    """How many digits a number of ``region`` has as written nationally: its possible lengths,
    with and without its national (trunk) prefix."""
    meta = phonenumbers.PhoneMetadata.metadata_for_region(region)
    if meta is None or meta.general_desc is None:
        return frozenset()
    lengths = set(meta.general_desc.possible_length or ())
    prefix = meta.national_prefix or ""
    return frozenset(lengths | {n + len(prefix) for n in lengths})


# regions whose numbers, written nationally, begin with the trunk prefix 0 (020 7946 0958,
# 0791-2878108): phonenumbers also accepts them without it, which reads most runs of eight to
# ten digits (an invoice 2023-000123, an order number) as an Irish, New Zealand or Beijing
# fixed line. Mobiles of China and India are written without it (138 1234 5678, 98765 43210).
_TRUNK = {r: getattr(phonenumbers.PhoneMetadata.metadata_for_region(r), "national_prefix", "")
          or "" for r in phonenumbers.SUPPORTED_REGIONS}
_TRUNK_OPTIONAL_MOBILE = {"CN", "IN"}


def _old_cn_landline(written: str, number: phonenumbers.PhoneNumber) -> bool:
    """A Chinese landline of a seven-digit local number, from before its city went to eight
    digits (0791-2878108, 2008): written like a landline (``_CN_LANDLINE``), possible, and its
    area code real: the same digits made eight long ("8" before, "0" after) are valid there."""
    if not _CN_LANDLINE.fullmatch(written) or not phonenumbers.is_possible_number(number):
        return False
    digits = re.sub(r"\D", "", written)
    area = 3 if digits[1] in "12" else 4
    local = digits[area:]
    return len(local) == 7 and any(
        phonenumbers.is_valid_number(phonenumbers.parse(digits[:area] + d, "CN"))
        for d in ("8" + local, local + "0"))


@lru_cache(maxsize=65536)
def _classify(written: str, regions: tuple[str, ...]) -> tuple[str, bool] | None:
    """What ``written`` (one candidate, full-width brackets made ASCII) is under the first of
    ``regions`` in which it is a valid number grouped as that region writes it (``_grouped``),
    else under the first in which it is valid, and whether it was grouped. The kind:
    ``mobile``/``landline`` (China), ``intl_phone`` (any other region), ``business`` (valid
    but toll-free, premium, shared-cost ...: not personal data); None: valid nowhere.

    A number in international format (+cc or 00cc) is parsed once, its country code decides.
    Numbers written nationally in a region with the trunk prefix 0 need it (``_TRUNK``),
    except Chinese and Indian mobiles. A Chinese landline from before its city went to eight
    digits counts when ``_old_cn_landline`` says so."""
    digits = re.sub(r"\D", "", written)
    international = written.startswith(("+", "00"))
    tries: tuple[str, ...]
    if international:
        text, tries = "+" + digits[2:] if written.startswith("00") else written, ("ZZ",)
    else:
        text, tries = written, tuple(r for r in regions if len(digits) in _lengths(r))
    first: tuple[str, bool] | None = None  # valid but not grouped as written
    for region in tries:
        try:
            number = phonenumbers.parse(text, None if region == "ZZ" else region)
        except phonenumbers.NumberParseException:
            continue
        owner = phonenumbers.region_code_for_number(number)
        if not phonenumbers.is_valid_number(number):
            if region == "CN" and _old_cn_landline(written, number):
                return "landline", True
            continue
        kind = phonenumbers.number_type(number)
        mobile = kind == PhoneNumberType.MOBILE
        if (not international and _TRUNK.get(owner or "") == "0" and not digits.startswith("0")
                and not (mobile and owner in _TRUNK_OPTIONAL_MOBILE)):
            continue  # not as people write it in that region: without its trunk 0
        entity = ("mobile" if mobile else "landline") if owner == "CN" else "intl_phone"
        if kind not in _PERSONAL_TYPES:
            entity = "business"  # a business number where it is grouped so is one everywhere
        if _grouped(text, number, international):
            return entity, True
        first = first or (entity, False)
    return first


def _breaks(written: str) -> set[int]:
    """Where ``written``'s digits are split into groups: the digit counts before each split."""
    out, count, gap = set(), 0, False
    for c in written:
        if c.isdigit():
            if gap and count:
                out.add(count)
            count, gap = count + 1, False
        else:
            gap = True
    return out


def _grouped(written: str, number: phonenumbers.PhoneNumber, international: bool) -> bool:
    """Whether every split between ``written``'s digit groups is one phonenumbers makes when it
    formats the number: "07400 129455" is a UK mobile as written; "07400 129455 7", valid
    as a Chinese landline, is split where no Chinese number is ("0740 0129 4557")."""
    style = (phonenumbers.PhoneNumberFormat.INTERNATIONAL if international
             else phonenumbers.PhoneNumberFormat.NATIONAL)
    return _breaks(written) <= _breaks(phonenumbers.format_number(number, style))


def _word_says_phone(text: str, start: int) -> bool | None:
    """Whether the words before ``start`` say reference (False: ``_REFERENCE`` right before,
    or a bare "no."/"#" and no phone word within ``_WORD_WINDOW`` characters), phone (True:
    ``_PHONE_WORDS`` within the window), or nothing (None)."""
    lo = max(0, start - _WORD_WINDOW)
    if _REFERENCE.search(text, lo, start):
        return False
    if _PHONE_WORDS.search(text, lo, start):
        return True
    return False if _NUMBER_WORD.search(text, lo, start) else None


def _segments(run: str) -> list[tuple[int, str]]:
    """``run`` cut at the dates it holds, as (offset, piece)."""
    out, pos = [], 0
    for m in _DATE.finditer(run):
        out.append((pos, run[pos:m.start()]))
        pos = m.end()
    out.append((pos, run[pos:]))
    return [(off + len(p) - len(p.lstrip()), p.strip()) for off, p in out if p.strip()]


def _find_in(text: str, offset: int, piece: str, regions: tuple[str, ...], anchored: bool,
             out: list[tuple[str, int, int, str]]) -> None:
    """Phone numbers in ``piece`` (at ``offset`` in ``text``): of the piece itself and its
    sub-runs of space-separated groups, most digits first (leftmost first among equals), the
    first that is a valid number grouped as its region writes it, else the first valid one;
    then what is left of the piece on either side. ``anchored``: the piece starts with a +cc
    that failed alone, so only sub-runs starting with it are tried ("+1 611-955-3721" is an
    invalid US number, not an Indian mobile after a "+1")."""
    parts = piece.split(" ")
    starts = [0]
    for p in parts[:-1]:
        starts.append(starts[-1] + len(p) + 1)
    n = len(parts)
    spans = sorted(((i, j) for i in range(n) for j in range(i + 1, min(n, i + _MAX_PARTS) + 1)
                    if not anchored or i == 0),
                   key=lambda ij: (-sum(c.isdigit() for p in parts[ij[0]:ij[1]] for c in p),
                                   ij[0]))
    best: tuple[str, int, int, int, str] | None = None  # the first valid one, else None
    for i, j in spans:
        cand = " ".join(parts[i:j])
        if cand[0] in "(（" and not any(c in cand for c in ")）"):
            cand = cand[1:]  # an opening bracket of the sentence
            lead = 1
        else:
            lead = 0
        cand = cand.rstrip("(（")
        nd = sum(c.isdigit() for c in cand)
        if not _MIN_PHONE_DIGITS <= nd <= _MAX_PHONE_DIGITS or not cand[-1].isdigit():
            continue
        start = offset + starts[i] + lead
        if _skip(text, start, cand):
            continue
        found = _classify(cand.replace("（", "(").replace("）", ")"), regions)
        if found is None:
            continue
        best = best or (found[0], i, j, start, cand)
        if found[1]:
            best = (found[0], i, j, start, cand)
            break
    if best is None:
        return
    kind, i, j, start, cand = best
    if kind != "business":
        out.append((kind, start, start + len(cand), cand))
    for lo, hi in ((0, i), (j, n)):
        if lo < hi:
            _find_in(text, offset + starts[lo], " ".join(parts[lo:hi]), regions, False, out)


def _skip(text: str, start: int, cand: str) -> bool:
    """Candidates phonenumbers is not asked about: spans of years and versions; unless
    written with a + or an opening bracket, a run right after a reference word (order,
    invoice, 订单号, ...: ``_word_says_phone``), and without a phone word before them, runs
    of groups of one or two digits ("12 34 56 78 90": scores) and bare runs of at most ten
    digits."""
    if _YEARS.fullmatch(cand) or _DOTTED.fullmatch(cand):
        return True
    if cand.startswith(("+", "(", "（")):  # written as only phone numbers are
        return False
    says = _word_says_phone(text, start)
    if says is False:
        return True
    groups = re.split(r"[ \-./()（）]+", cand.strip("()（）"))
    short_groups = all(len(g) <= 2 for g in groups) and not cand.startswith("0")
    bare = cand.isdigit() and len(cand) <= _BARE_MAX
    return (short_groups or bare) and not says


def find_phones(text: str, regions: tuple[str, ...] = DEFAULT_REGIONS
                ) -> list[tuple[str, int, int, str]]:
    """Phone numbers valid in one of ``regions`` (or written in international format), as
    (entity, start, end, value): Chinese mobile numbers are ``mobile``, other Chinese numbers
    ``landline``, numbers of every other region ``intl_phone``.

    Each run of digits and separators (``_PHONE_RUN``), cut at the dates in it, is parsed by
    phonenumbers with ``is_valid_number``: the whole piece, else its space-separated sub-runs,
    longest first, so "call +44 20 7946 0958 7 days a week" gives the number without the 7.
    Only the run is parsed, never its surroundings: a "1:30]" before "010-51236699" is not
    read into it. This replaced phonenumbers' PhoneNumberMatcher over a window around each
    run: the matcher re-parsed every failed candidate once per region and read a time stamp's
    "30]" into the number. bench/pii.py, generated messages: 8,753 (zh) and 4,173 (en)
    documents per second, against 3,726 and 1,679 with the matcher (an earlier run); main's
    regular expressions (China only) do 12,694 and 11,734 (bench/results/pii.json)."""
    if not any(c.isdigit() for c in text):
        return []
    out: list[tuple[str, int, int, str]] = []
    for run in _PHONE_RUN.finditer(text):
        raw = run.group()
        if sum(c.isdigit() for c in raw) < _MIN_PHONE_DIGITS:
            continue
        for off, piece in _segments(raw):
            anchored = re.match(r"(?:\+|00)\d{1,3} ", piece) is not None
            _find_in(text, run.start() + off, piece, regions, anchored, out)
    return sorted(out, key=lambda f: f[1])


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
    taken: list[tuple[int, int]] = []
    found: list[Found] = []
    phones: list[tuple[str, int, int, str]] | None = None
    for entity in ENTITIES:
        if entity not in entities:
            continue
        if entity in PHONES:
            if phones is None:
                phones = find_phones(text, tuple(regions))
            hits = [(s, e, v) for kind, s, e, v in phones if kind == entity]
        else:
            hits = DETECTORS[entity].find(text)
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
