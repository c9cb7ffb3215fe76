"""Personal-data detection for Chinese and international text (个人信息).

Each detector is a regular expression for the candidates plus, where the format has one, a
validator: a resident ID needs its GB 11643-1999 check digit, a real province code and a
birth date that exists; a bank card needs its Luhn digit; IP addresses must parse. A
candidate that fails validation is never reported. Where two detections overlap, the one
found first in ``ENTITIES`` order wins (an ID card number is not also reported as a card).

No widely used curation library covers the Chinese formats, so these are our own; the
formats are public standards (GB 11643-1999, ISO/IEC 7812 Luhn, MIIT number ranges).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

ENTITIES = ("id_card", "bank_card", "mobile", "landline", "intl_phone", "email", "ipv4",
            "ipv6", "url", "passport", "plate", "person_name")

_PROVINCES = {11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45,
              46, 50, 51, 52, 53, 54, 61, 62, 63, 64, 65, 71, 81, 82}
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def id_check_digit(first17: str) -> str:
    """The GB 11643-1999 check character of the first 17 digits."""
    total = sum(int(d) * w for d, w in zip(first17, _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11]


def valid_id_card(value: str) -> bool:
    v = value.upper()
    if len(v) != 18 or not v[:17].isdigit() or int(v[:2]) not in _PROVINCES:
        return False
    try:
        born = date(int(v[6:10]), int(v[10:12]), int(v[12:14]))
    except ValueError:
        return False
    if not date(1900, 1, 1) <= born <= date.today():
        return False
    return id_check_digit(v[:17]) == v[17]


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


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
    try:
        date(int(digits[6:10]), int(digits[10:12]), int(digits[12:14]))
    except ValueError:
        return False
    return 1900 <= int(digits[6:10]) <= date.today().year


def valid_bank_card(value: str) -> bool:
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


def _digits_between(low: int, high: int) -> Callable[[str], bool]:
    return lambda v: low <= sum(c.isdigit() for c in v) <= high


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
DETECTORS = {
    "id_card": Detector("id_card", re.compile(
        _B + r"[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx]"
        + _E), valid_id_card, _DIGITS),
    "bank_card": Detector("bank_card", re.compile(
        _B + r"[3-68]\d{3}(?:[ -]?\d{4}){2}(?:[ -]?\d{1,4}){1,2}" + _E), valid_bank_card,
        _DIGITS),
    "mobile": Detector("mobile", re.compile(
        r"(?<![0-9A-Za-z+])(?:\+?86[ -]?)?1[3-9]\d[ -]?\d{4}[ -]?\d{4}" + _E), None, _DIGITS),
    "landline": Detector("landline", re.compile(
        _B + r"(?:\(0\d{2,3}\)|0\d{2,3}[ -])[ ]?[2-9]\d{2,3}[ -]?\d{4}" + _E), None, _DIGITS),
    "intl_phone": Detector("intl_phone", re.compile(
        r"(?<![0-9A-Za-z])\+(?!86)[1-9]\d{0,2}(?:[ -]?\(?\d{1,4}\)?){2,5}" + _E),
        _digits_between(8, 15), "+"),
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
        + r"(?=先生|女士|小姐|老师|经理|师傅|医生|律师)"), None, _SURNAMES + "欧司上诸东皇令慕",
        ("name", "titled")),
}


@dataclass(frozen=True)
class Found:
    entity: str
    start: int
    end: int
    value: str


def detect(text: str, entities: list[str] | tuple[str, ...] = ENTITIES) -> list[Found]:
    """Personal data in ``text``, non-overlapping, in text order."""
    taken: list[tuple[int, int]] = []
    found: list[Found] = []
    for entity in ENTITIES:
        if entity not in entities:
            continue
        for start, end, value in DETECTORS[entity].find(text):
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
    head, tail = (6, 4) if entity == "id_card" and len(keep) >= 12 else (3, 4)
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
