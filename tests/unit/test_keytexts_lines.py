"""Each record's key-text line is what json.dumps(texts, ensure_ascii=False) writes."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lifecycle.preprocess import keytexts

pytestmark = pytest.mark.unit

TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)


class _Store:
    def __init__(self) -> None:
        self.body = b""

    def write_atomic(self, bucket: str, key: str, data: bytes, content_type: str) -> None:
        self.body = data


class _Ctx:
    dataset, run_id, work_bucket = "d", "r", "w"

    def __init__(self) -> None:
        self.store = _Store()


@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(TEXT, min_size=3, max_size=3), min_size=1, max_size=3))
def test_lines_are_json_dumps_of_the_texts(fields: list[list[str]]) -> None:
    ctx = _Ctx()
    _, spans = keytexts.write(ctx, "preprocess", "u00000-keytext.jsonl", fields)  # type: ignore[arg-type]
    records = [list(texts) for texts in zip(*fields, strict=True)]
    oracle = b"".join((json.dumps(r, ensure_ascii=False) + "\n").encode() for r in records)
    assert ctx.store.body == oracle
    for (at, length), record in zip(spans[["text_at", "text_len"]].itertuples(index=False),
                                    records, strict=True):
        assert json.loads(ctx.store.body[at:at + length]) == record
