"""Text operators of preprocessing: the normaliser and the record filters.

Each operator is a small class configured from the spec. A filter returns, per record, either
``None`` (keep) or ``(reason code, detail)``; the stage quarantines what a filter rejects.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections import Counter
from typing import Any

from lifecycle.spec import FieldRule, Filters, LanguageFilter, Normalise

_WS = re.compile(r"\s+")
# what folding changes: whitespace other than one space, or a run of two or more (a text
# without either folds to itself)
_FOLDABLE = re.compile(r"[^\S ]|\s\s")
# C0/C1 control characters other than tab and newlines (whitespace folding handles those),
# plus the byte-order mark and zero-width space, which survive NFKC
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufeff\u200b]")
_TAGS = "|".join((
    "a", "abbr", "article", "aside", "b", "big", "blockquote", "body", "br", "button",
    "caption", "center", "code", "col", "dd", "del", "div", "dl", "dt", "em", "font",
    "footer", "form", "h[1-6]", "head", "header", "hr", "html", "i", "iframe", "img", "input",
    "ins", "label", "li", "link", "main", "meta", "nav", "noscript", "ol", "option", "p",
    "pre", "q", "s", "script", "section", "select", "small", "span", "strike", "strong",
    "style", "sub", "sup", "table", "tbody", "td", "textarea", "tfoot", "th", "thead", "title",
    "tr", "tt", "u", "ul"))
# a known HTML element, then nothing, attributes (after a space) or a self-closing slash:
# "<dC;SP4rI(8I>" in a review is not a tag
_TAG = re.compile(r"<!--.*?-->|</?(?:" + _TAGS + r")(?:\s[^<>]*|\s*/)?>",
                  re.IGNORECASE | re.DOTALL)
# HZ (RFC 1843): GB2312 in 7-bit ASCII between ~{ and ~}, still seen in old Chinese text
_HZ = re.compile(r"~\{[\x21-\x7e]*?~\}")
# mis-decoded UTF-8 (read as Latin-1 or cp1252) is made of Latin-1 supplement characters;
# ftfy only runs on texts holding one, which spares it on nearly all Chinese text (~35 µs)
_MOJIBAKE_HINT = re.compile("[\u0080-\u00ff]")
CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af]")
_WORD = re.compile(r"[A-Za-z0-9]+(?:['’][A-Za-z]+)?")


class Normaliser:
    """Mojibake repaired (ftfy's encoding fix only; HZ-encoded GB2312 decoded), HTML tags
    stripped and entities unescaped, NFKC (full-width to half-width, compatibility forms),
    optional Traditional to Simplified (OpenCC), control characters removed, whitespace
    folded, ends stripped."""

    def __init__(self, cfg: Normalise) -> None:
        self.cfg = cfg
        self._t2s: Any = None
        if cfg.simplify:
            import opencc

            self._t2s = opencc.OpenCC("t2s")

    def __call__(self, text: str) -> str:
        return self.apply(text)[0]

    def apply(self, text: str) -> tuple[str, list[str]]:
        """The normalised text and the names of the steps that changed it (for provenance)."""
        ops: list[str] = []
        cfg = self.cfg
        if cfg.fix_mojibake and _MOJIBAKE_HINT.search(text):
            import ftfy

            # only the encoding repair: curly quotes, widths and the rest are left alone
            text = _step(ops, "fix_mojibake", text, ftfy.fix_encoding(text))
        if cfg.fix_mojibake and "~{" in text:
            text = _step(ops, "decode_hz", text, _HZ.sub(_decode_hz, text))
        if cfg.html:
            if "<" in text:
                text = _step(ops, "strip_html", text, _TAG.sub(" ", text))
            if "&" in text:
                text = _step(ops, "unescape_html", text, html.unescape(text))
        form = cfg.unicode
        if form != "none" and not unicodedata.is_normalized(form, text):
            text = _step(ops, form.lower(), text, unicodedata.normalize(form, text))
        if self._t2s is not None and CJK.search(text):
            text = _step(ops, "to_simplified", text, self._t2s.convert(text))
        # the steps below as function calls only where they change something: one search
        # (or none) instead of a substitution and a comparison, for most texts
        if _CONTROL.search(text):
            text = _step(ops, "remove_control_chars", text, _CONTROL.sub("", text))
        if cfg.fold_whitespace and _FOLDABLE.search(text):
            text = _step(ops, "fold_whitespace", text, _WS.sub(" ", text))
        if cfg.strip:
            stripped = text.strip()
            if stripped != text:
                ops.append("strip")
                text = stripped
        return text, ops


def _step(ops: list[str], name: str, old: str, new: str) -> str:
    """``new``; ``name`` noted in ``ops`` when it differs from ``old``."""
    if new != old:
        ops.append(name)
    return new


def _decode_hz(m: re.Match[str]) -> str:
    try:
        return m.group(0).encode("ascii").decode("hz")
    except UnicodeDecodeError:
        return m.group(0)


# ---- measures used by filters (documented in docs/quality.md) ---------------------------------
def tokens(text: str) -> int:
    """Each CJK character is a token; so is each run of Latin letters or digits."""
    return len(CJK.findall(text)) + len(_WORD.findall(text))


def digit_ratio(text: str) -> float:
    chars = [c for c in text if not c.isspace()]
    return sum(c.isdigit() for c in chars) / len(chars) if chars else 0.0


def punctuation_ratio(text: str) -> float:
    chars = [c for c in text if not c.isspace()]
    return (sum(unicodedata.category(c).startswith("P") for c in chars) / len(chars)
            if chars else 0.0)


def non_cjk_ratio(text: str) -> float:
    """Share of letters and digits that are not CJK characters."""
    alnum = [c for c in text if c.isalnum()]
    return sum(not CJK.match(c) for c in alnum) / len(alnum) if alnum else 0.0


def repeated_line_ratio(text: str) -> float:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return 1 - len(set(lines)) / len(lines) if lines else 0.0


def repeated_ngram_ratio(text: str, n: int) -> float:
    """Share of the character n-grams of ``text`` that repeat an earlier one."""
    grams = [text[i:i + n] for i in range(len(text) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


class LanguageDetector:
    """lingua-language-detector, offline, restricted to the candidate languages."""

    DEFAULT = ("en", "zh", "ja", "ko")

    def __init__(self, cfg: LanguageFilter) -> None:
        from lingua import IsoCode639_1, Language, LanguageDetectorBuilder

        codes = list(dict.fromkeys([*cfg.allowed, *(cfg.candidates or self.DEFAULT)]))
        languages = []
        for code in codes:
            try:
                languages.append(Language.from_iso_code_639_1(getattr(IsoCode639_1,
                                                                      code.upper())))
            except (AttributeError, ValueError) as e:
                raise ValueError(f"preprocess.filters.language: {code!r} is not an ISO "
                                 "639-1 language code lingua knows") from e
        if len(languages) < 2:
            languages.append(Language.ENGLISH if code != "en" else Language.CHINESE)
        self.detector = LanguageDetectorBuilder.from_languages(*languages).build()

    def __call__(self, text: str) -> tuple[str, float]:
        values = self.detector.compute_language_confidence_values(text)
        if not values:
            return "und", 0.0
        top = values[0]
        return top.language.iso_code_639_1.name.lower(), round(float(top.value), 4)


class RecordFilter:
    """The spec's ``preprocess.filters``: the first rule a record breaks decides its reason."""

    def __init__(self, cfg: Filters) -> None:
        self.cfg = cfg
        self.allow = [re.compile(p) for p in cfg.allow_regex]
        self.deny = [re.compile(p) for p in cfg.deny_regex]
        self.language = LanguageDetector(cfg.language) if cfg.language else None
        self.fields = {name: (rule, re.compile(rule.regex) if rule.regex else None)
                       for name, rule in cfg.fields.items()}
        self.languages: Counter[str] = Counter()

    def check_text(self, text: Any) -> tuple[tuple[str, str] | None, tuple[str, float] | None]:
        """(rejection or None, detected language or None)."""
        cfg = self.cfg
        if not isinstance(text, str) or not text:
            return ("empty_text", ""), None
        n = len(text)
        if n < cfg.min_chars:
            return ("too_short", f"{n} < {cfg.min_chars} characters"), None
        if cfg.max_chars is not None and n > cfg.max_chars:
            return ("too_long", f"{n} > {cfg.max_chars} characters"), None
        if cfg.min_tokens is not None or cfg.max_tokens is not None:
            t = tokens(text)
            if cfg.min_tokens is not None and t < cfg.min_tokens:
                return ("too_few_tokens", f"{t} < {cfg.min_tokens}"), None
            if cfg.max_tokens is not None and t > cfg.max_tokens:
                return ("too_many_tokens", f"{t} > {cfg.max_tokens}"), None
        for pattern in self.deny:
            if pattern.search(text):
                return ("deny_regex", pattern.pattern), None
        if self.allow and not any(p.search(text) for p in self.allow):
            return ("no_allow_regex_match", ""), None
        ratios = ((cfg.max_digit_ratio, digit_ratio, "digit_ratio"),
                  (cfg.max_punctuation_ratio, punctuation_ratio, "punctuation_ratio"),
                  (cfg.max_non_cjk_ratio, non_cjk_ratio, "non_cjk_ratio"),
                  (cfg.max_repeated_line_ratio, repeated_line_ratio, "repeated_lines"))
        for limit, measure, reason in ratios:
            if limit is not None:
                value = measure(text)
                if value > limit:
                    return (reason, f"{value:.3f} > {limit}"), None
        if cfg.max_repeated_ngram_ratio is not None:
            value = repeated_ngram_ratio(text, cfg.repeated_ngram)
            if value > cfg.max_repeated_ngram_ratio:
                return ("repeated_ngrams", f"{value:.3f} > {cfg.max_repeated_ngram_ratio}"), None
        found = None
        if self.language is not None and cfg.language is not None:
            found = self.language(text)
            self.languages[found[0]] += 1
            code, confidence = found
            if code not in cfg.language.allowed:
                return ("language", f"{code} ({confidence:.2f})"), found
            if confidence < cfg.language.min_confidence:
                return ("language_uncertain", f"{code} ({confidence:.2f})"), found
        return None, found

    def check_fields(self, record: dict[str, Any]) -> tuple[str, str] | None:
        for name, (rule, regex) in self.fields.items():
            problem = _field_problem(record.get(name), rule, regex)
            if problem:
                return f"field_{name}", problem
        return None


def _field_problem(value: Any, rule: FieldRule, regex: re.Pattern[str] | None) -> str | None:
    missing = value is None or (isinstance(value, float) and value != value) or value == ""
    if missing:
        return "null" if rule.not_null else None
    if rule.min is not None or rule.max is not None:
        try:
            number = float(value)
        except (TypeError, ValueError):
            return f"{value!r} is not a number"
        if rule.min is not None and number < rule.min:
            return f"{value!r} < {rule.min}"
        if rule.max is not None and number > rule.max:
            return f"{value!r} > {rule.max}"
    if rule.values is not None and value not in rule.values and str(value) not in [
            str(v) for v in rule.values]:
        return f"{value!r} not in {rule.values}"
    if regex is not None and not regex.fullmatch(str(value)):
        return f"{value!r} does not match {regex.pattern!r}"
    return None
