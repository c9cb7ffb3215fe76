"""Phone numbers in text, of every region (part of personal-data detection, lifecycle/text/pii.py).

Numbers are found and validated by ``phonenumbers`` (Google's libphonenumber metadata), for the
regions a caller names (``regions_for``: the spec's preprocess.pii.regions, else the regions of
its languages); numbers written in international format (+44 ..., 0044 ...) are found whatever
the regions. ``find_phones`` says how a run of digits becomes a number.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache, lru_cache

import phonenumbers
from phonenumbers import PhoneNumberType

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


# ---- finding them ------------------------------------------------------------------------------
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
