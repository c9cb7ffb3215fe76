"""Hostile and broken input through collection, on a real S3 server: each case ends in a
clear error that says what, where and what to do, or in quarantine with a reason, and no
record is lost (every line or row read is kept or quarantined; a refused run keeps nothing
half-collected)."""

from __future__ import annotations

import os
import tracemalloc
import uuid
import zipfile
from pathlib import Path
from typing import Any

import pytest

from granary.settings import Settings
from lifecycle.collect import stage as collect
from lifecycle.errors import PermanentError, SourceError
from lifecycle.records.shards import read_manifest, read_table
from lifecycle.spec import SpecError, parse_spec
from tests.stagectx import isolated, stage_context

pytestmark = pytest.mark.reliability

HEAD = """\
name: hostile
title: Hostile input
licence: {id: CC-BY-4.0}
owners: [{name: qa}]
schema:
  fields:
    - {name: text, type: string}
    - {name: label, type: string, required: false}
sources:
"""
LICENCE = "licence: {id: CC-BY-4.0, origin: written for this test, legal_basis: own}"


def _spec(path: str, fmt: str, extra: str = "") -> str:
    return HEAD + f"  - {{name: src, type: files, path: \"{path}\", format: {fmt}, {LICENCE}}}\n" \
        + extra


def _collect(s: Settings, spec: str) -> tuple[Any, Any]:
    ctx = stage_context(s, spec, f"run-{uuid.uuid4().hex[:6]}")
    return ctx, collect.run(ctx)


def _lost(counts: dict[str, Any]) -> int:
    """Records read but neither kept, quarantined nor merged, by the stage's own counters
    (the stage checks it is 0): asserted, never reported as the table's records lost."""
    return int(counts["in"] - counts["kept"] - counts["quarantined"] - counts["merged"])


def _unaccounted(ctx: Any, result: Any, written: int) -> int:
    """The table's records lost, counted from outside the stage: the records the test wrote
    in its input, less the rows read back from S3 (the records' and the quarantine's
    Parquet shards)."""
    manifest = read_manifest(ctx.store, result.manifest_uri)
    kept = len(read_table(ctx.store, manifest))
    quarantined = (len(read_table(ctx.store, manifest, "quarantine"))
                   if manifest.get("tables", {}).get("quarantine") else 0)
    return written - kept - quarantined


def _reasons(ctx: Any, result: Any) -> list[str]:
    manifest = read_manifest(ctx.store, result.manifest_uri)
    return sorted(read_table(ctx.store, manifest, "quarantine")["reason"].tolist()) \
        if manifest.get("tables", {}).get("quarantine") else []


@pytest.fixture
def s(s3: Settings, tmp_path: Path) -> Settings:
    out = isolated(s3, tmp_path)
    out.inbox_dir.mkdir(parents=True)
    return out


def test_invalid_yaml_and_a_misspelt_key_name_the_line(report: Any) -> None:
    with pytest.raises(SpecError) as bad:
        parse_spec(HEAD + "  - {name: src, type: files\n", "hostile.yaml")
    assert "hostile.yaml:" in str(bad.value)
    report("invalid YAML in a spec", f"refused: {str(bad.value).splitlines()[0]}", 0)
    with pytest.raises(SpecError) as typo:
        parse_spec(HEAD.replace("owners:", "ownres:") + "  - {name: src, type: files, "
                   f"path: a.txt, format: text, {LICENCE}}}\n", "hostile.yaml")
    assert "ownres" in str(typo.value) and "owners" in str(typo.value)
    report("misspelt key in a spec", f"refused: {str(typo.value).splitlines()[0]}", 0)


def test_binary_garbage_as_a_text_file_is_quarantined_line_by_line(s: Settings,
                                                                   report: Any) -> None:
    # 64 KB of random bytes in 400 lines the test counts: no line break inside a line, and
    # each line opens with a byte UTF-8 never starts a character with (undecodable, not blank)
    junk = [b"\xff" + os.urandom(160).replace(b"\n", b"").replace(b"\r", b"")
            for _ in range(400)]
    (s.inbox_dir / "good.txt").write_text("一条好评\n另一条评论\n", encoding="utf-8")
    (s.inbox_dir / "junk.txt").write_bytes(b"\n".join(junk) + b"\n")
    ctx, result = _collect(s, _spec("*.txt", "text", "collect: {max_bad_share: 1.0}\n"))
    c = result.counts
    assert _lost(c) == 0 and c["kept"] >= 2 and c["quarantined"] > 0
    assert set(_reasons(ctx, result)) == {"undecodable"}
    lost = _unaccounted(ctx, result, 2 + len(junk))
    report("binary garbage as a text source file",
           f"{c['quarantined']} lines quarantined as undecodable, {c['kept']} kept", lost)
    assert lost == 0


def test_binary_garbage_fails_the_source_by_the_bad_share(s: Settings, report: Any) -> None:
    (s.inbox_dir / "junk.txt").write_bytes(os.urandom(64 << 10))
    with pytest.raises(SourceError) as bad:
        _collect(s, _spec("*.txt", "text"))
    assert "max_bad_share" in str(bad.value)
    report("binary garbage, default max_bad_share", f"refused: {str(bad.value)[:100]}", 0)


def test_a_500_mb_single_line_is_read_past_never_held_whole(s: Settings, report: Any) -> None:
    path = s.inbox_dir / "huge.txt"
    with open(path, "wb") as fh:
        fh.write("第一条评论\n".encode())
        block = b"x" * (1 << 20)
        for _ in range(500):
            fh.write(block)
        fh.write("\n最后一条评论\n".encode())
    tracemalloc.start()
    try:
        ctx, result = _collect(s, _spec("huge.txt", "text", "collect: {max_bad_share: 0.5}\n"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    c = result.counts
    assert (c["kept"], c["quarantined"], _lost(c)) == (2, 1, 0)
    assert _reasons(ctx, result) == ["line_too_long"]
    assert peak < 150 << 20, f"peak {peak >> 20} MB of Python memory for a 500 MB line"
    lost = _unaccounted(ctx, result, 3)  # the test wrote three lines
    report("a 500 MB single-line text file", f"line quarantined as line_too_long; peak "
           f"{peak >> 20} MB of Python memory; the other 2 lines kept", lost)
    assert lost == 0


def test_a_100_mb_jsonl_line_is_quarantined(s: Settings, report: Any) -> None:
    path = s.inbox_dir / "rows.jsonl"
    with open(path, "wb") as fh:
        fh.write(b'{"text": "before"}\n{"text": "')
        for _ in range(100):
            fh.write(b"y" * (1 << 20))
        fh.write(b'"}\n{"text": "after"}\n')
    tracemalloc.start()
    try:
        ctx, result = _collect(s, _spec("rows.jsonl", "jsonl",
                                        "collect: {max_bad_share: 0.5}\n"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    c = result.counts
    assert (c["kept"], c["quarantined"], _lost(c)) == (2, 1, 0)
    assert _reasons(ctx, result) == ["line_too_long"] and peak < 100 << 20
    lost = _unaccounted(ctx, result, 3)  # the test wrote three records
    report("a JSONL line of 100 MB", f"quarantined as line_too_long (limit 16 MB); peak "
           f"{peak >> 20} MB", lost)
    assert lost == 0


def test_a_csv_with_an_unterminated_quote_loses_no_row(s: Settings, report: Any) -> None:
    rows = [f"review {i},pos" for i in range(20)]
    rows[7] = '"review 7 opens a quote and never closes it,pos'
    (s.inbox_dir / "rows.csv").write_text("text,label\n" + "\n".join(rows) + "\n",
                                          encoding="utf-8")
    ctx, result = _collect(s, _spec("rows.csv", "csv", "collect: {max_bad_share: 0.5}\n"))
    c = result.counts
    assert (c["kept"], c["quarantined"], _lost(c)) == (19, 1, 0)
    assert _reasons(ctx, result) == ["malformed_csv"]
    kept = read_table(ctx.store, read_manifest(ctx.store, result.manifest_uri))
    assert set(kept["text"]) == {f"review {i}" for i in range(20) if i != 7}
    lost = _unaccounted(ctx, result, len(rows))
    report("a CSV with an unterminated quote", "the row quarantined as malformed_csv, the 12 "
           "rows it swallowed read again and kept", lost)
    assert lost == 0


def test_a_tsv_whose_texts_open_with_apostrophes_keeps_every_row(s: Settings,
                                                                 report: Any) -> None:
    rows = [(f"'{i} opens with an apostrophe, isn't closed" if i % 3 == 0 else f"row {i}",
             "pos" if i % 2 else "neg") for i in range(21)]
    data = ("text\tlabel\n" + "".join(f"{t}\t{lab}\n" for t, lab in rows)).encode()
    (s.inbox_dir / "rows.tsv").write_bytes(data)
    ctx, result = _collect(s, _spec("rows.tsv", "tsv"))
    kept = read_table(ctx.store, read_manifest(ctx.store, result.manifest_uri))
    assert sorted(zip(kept["text"], kept["label"], strict=True)) == sorted(rows)
    lines = result.counts["lines"]
    physical = data.count(b"\n")  # the test's own count: one line break per line
    unaccounted = physical - lines["records"] - lines["quarantined"] - lines["header"] \
        - lines["blank"]
    assert lines["physical"] == physical and unaccounted == 0 and _lost(result.counts) == 0
    report("a TSV whose texts open with apostrophes", f"{len(kept)} of {len(rows)} rows kept "
           f"as written, {physical} of {physical} lines accounted for (no quote guessed)",
           unaccounted)


def test_a_csv_without_its_header_row_is_refused_naming_the_columns(s: Settings,
                                                                    report: Any) -> None:
    (s.inbox_dir / "rows.csv").write_text("物流很快,pos\n质量太差,neg\n", encoding="utf-8")
    with pytest.raises(SourceError, match=r"no column for the field\(s\) text") as failed:
        _collect(s, _spec("rows.csv", "csv"))
    assert "['物流很快', 'pos']" in str(failed.value) and "header: false" in str(failed.value)
    report("a CSV without its header row", f"refused: {failed.value}"[:200], 0)


def test_a_zip_bomb_is_refused_within_its_bound(s: Settings, report: Any) -> None:
    with zipfile.ZipFile(s.inbox_dir / "bomb.zip", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("bomb.txt", b"\n" * (64 << 20))  # 64 MB of empty lines, 64 KB zipped
    assert (s.inbox_dir / "bomb.zip").stat().st_size < 1 << 20
    with pytest.raises(SourceError) as bad:
        _collect(s, _spec("bomb.zip", "text", "collect: {max_unpacked_mb: 8}\n"))
    assert "refusing a possible bomb" in str(bad.value)
    report("a zip bomb (64 MB from 64 KB, bound 8 MB)", f"refused: {str(bad.value)[:90]}", 0)


def test_path_traversal_in_an_archive_member_is_refused(s: Settings, report: Any) -> None:
    with zipfile.ZipFile(s.inbox_dir / "sneaky.zip", "w") as z:
        z.writestr("ok.txt", "另一条\n")
        z.writestr("../../../../tmp/escaped.txt", "一条评论\n")
    spec = _spec("sneaky.zip", "text")
    ctx = stage_context(s, spec, "run-sneaky")
    with pytest.raises(SourceError) as bad:
        collect.run(ctx)
    assert "sneaky.zip" in str(bad.value) and "unsafe path" in str(bad.value)
    # nothing of the archive was collected, so nothing is half-kept
    assert ctx.catalog.stage_results("hostile", "run-sneaky") == []
    report("path traversal in an archive member name", f"refused: {str(bad.value)[:90]}", 0)


def test_a_source_outside_the_inbox_is_refused(s: Settings, tmp_path: Path,
                                               report: Any) -> None:
    with pytest.raises(SpecError) as bad:
        parse_spec(_spec("../outside.txt", "text"), "hostile.yaml")
    assert "must be relative" in str(bad.value)
    report("a source path outside the allowed roots", f"refused: {str(bad.value)[:90]}", 0)
    secret = tmp_path / "secret.txt"
    secret.write_text("not for collection\n")
    (s.inbox_dir / "link.txt").symlink_to(secret)
    with pytest.raises(SourceError) as linked:
        _collect(s, _spec("link.txt", "text"))
    assert "outside the inbox" in str(linked.value)
    report("a symlink in the inbox to a file outside it", f"refused: "
           f"{str(linked.value)[:90]}", 0)


def test_an_http_source_on_a_private_address_is_refused(s: Settings, report: Any) -> None:
    spec = HEAD + f"  - {{name: src, type: http, url: \"http://127.0.0.1:9/rows.json\", " \
        f"allow_hosts: [127.0.0.1], {LICENCE}}}\n"
    with pytest.raises(PermanentError) as bad:  # a retry cannot help: not retried
        _collect(s, spec)
    assert "127.0.0.1" in str(bad.value) and "allow_private" in str(bad.value)
    report("an http source on a private address", f"refused: {str(bad.value)[:90]}", 0)
