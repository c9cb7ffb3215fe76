"""Collection conserves bytes, on a real S3 server: every physical line of every text, JSONL,
CSV and TSV file is a record, a quarantined row, the header or a blank line, and the collect
stage's counts say so; a source that cannot fill the spec's fields fails collection; the same
bytes delivered by two sources stay two sets of records, which then merge downstream."""

from __future__ import annotations

import io
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from granary.runtime import services
from granary.settings import Settings
from lifecycle.collect import stage as collect
from lifecycle.context import StageContext
from lifecycle.errors import SourceError
from lifecycle.records.shards import read_manifest, read_table
from tests.outcome import read_release
from tests.stagectx import isolated, stage_context
from tests.tracecheck import run_lifecycle, walk

pytestmark = pytest.mark.integration

LICENCE = "licence: {id: CC-BY-4.0, origin: written for this test, legal_basis: own}"
HEAD = """\
name: lines_test
title: Lines test
licence: {id: CC-BY-4.0}
owners: [{name: qa}]
schema:
  fields:
    - {name: text, type: string}
    - {name: label, type: string}
collect: {max_bad_share: 0.5}
sources:
"""


def _physical(data: bytes, encoding: str = "utf-8-sig") -> int:
    """The test's own count: lines as Python splits the decoded text (\\n, \\r\\n, \\r)."""
    return len(io.StringIO(data.decode(encoding), newline="").readlines())


@pytest.fixture
def env(s3: Settings, tmp_path: Path) -> Settings:
    return isolated(s3, tmp_path)


def _write(s: Settings, name: str, data: bytes) -> bytes:
    path = s.inbox_dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def _records(ctx: StageContext, result: Any, part: str = "") -> pd.DataFrame:
    manifest = read_manifest(ctx.store, result.manifest_uri)
    return read_table(ctx.store, manifest, part) if part else read_table(ctx.store, manifest)


APOSTROPHES = [("'Twas the best buy, I'd say", "positive"), ("works fine", "positive"),
               ("'cheap' and 'bad'", "negative"), ("'meh", "negative"),
               ('"quoted" start', "positive"), ("the seller's reply was rude", "negative")] * 4


def test_every_physical_line_is_accounted_for(env: Settings) -> None:
    files = {
        # the failure seen on real data: apostrophes opening text fields of a TSV
        "reviews": _write(env, "in/reviews.tsv", (
            "text\tlabel\r\n" + "".join(f"{t}\t{lab}\r\n" for t, lab in APOSTROPHES)
            + "\r\n" + "a row\twith\tthree fields\r\nlast\tpositive").encode()),
        # no header row, a byte order mark, a blank line, an unterminated quote
        "bare": _write(env, "in/bare.csv", "\ufeff好评,positive\n\n\"坏,negative\n差评,negative\n"
                       .encode()),
        "events": _write(env, "in/events.jsonl", b'{"text": "a", "label": "positive"}\n\n  \n'
                         b'{"text": "b", "label": "negative"}\n{broken\n'),
        "plain": _write(env, "in/plain.txt", "一\n\n二\r三".encode()),
    }
    store = services(env).store
    drop = f"drop-{uuid.uuid4().hex[:8]}"
    store.ensure_bucket(drop)
    partner = b"alpha;positive\nbeta;negative\n"
    store.put_bytes(drop, "p/part.csv", partner)
    files["partner"] = partner
    spec = HEAD + f"""\
  - {{name: reviews, type: files, path: in/reviews.tsv, format: tsv, {LICENCE}}}
  - {{name: bare, type: files, path: in/bare.csv, format: csv, header: false,
     columns: [text, label], {LICENCE}}}
  - {{name: events, type: files, path: in/events.jsonl, format: jsonl, {LICENCE}}}
  - {{name: plain, type: files, path: in/plain.txt, format: text, label: positive, {LICENCE}}}
  - {{name: partner, type: s3, bucket: {drop}, prefix: p/, format: csv, header: false,
     columns: [text, label], delimiter: ";", {LICENCE}}}
"""
    ctx = stage_context(env, spec, "run-lines")
    result = collect.run(ctx)
    records, quarantine = _records(ctx, result), _records(ctx, result, "quarantine")

    expected = {  # records, quarantined, header, blank: what the test wrote
        "reviews": (len(APOSTROPHES) + 1, 1, 1, 1), "bare": (2, 1, 0, 1),
        "events": (2, 1, 0, 2), "plain": (4, 0, 0, 0), "partner": (2, 0, 0, 0)}
    for name, (kept, bad, header, blank) in expected.items():
        lines = result.counts["per_source"][name]["lines"]
        assert lines["physical"] == _physical(files[name])
        assert (lines["records"], lines["quarantined"], lines["header"], lines["blank"]) == (
            kept, bad, header, blank), name
        assert lines["records"] + lines["quarantined"] + lines["header"] + lines["blank"] \
            + lines["seen"] == lines["physical"]
        assert (records["source"] == name).sum() == kept
        assert (quarantine["source"] == name).sum() == bad
    total = result.counts["lines"]
    assert total["physical"] == sum(_physical(d) for d in files.values())

    # the TSV's texts are exactly the ones written: no row holds another row's text or label
    tsv = records.loc[records["source"] == "reviews"].sort_values("line")
    assert list(zip(tsv["text"], tsv["label"], strict=True)) == [*APOSTROPHES, ("last", "positive")]
    assert not tsv["text"].str.contains("\n|\t").any()
    assert sorted(records.loc[records["source"] == "bare", "text"]) == ["好评", "差评"]
    assert list(records.loc[records["source"] == "plain"].sort_values("line")["text"]) == [
        "一", "", "二", "三"]  # a text file's empty line is a record (preprocess drops it)
    reasons = dict(zip(quarantine["source"], quarantine["reason"], strict=True))
    assert reasons == {"reviews": "wrong_field_count", "bare": "malformed_csv",
                       "events": "invalid_json"}
    # per file, in the manifest's landed entries
    landed = {x["path"]: x for x in read_manifest(ctx.store, result.manifest_uri)["landed"]}
    assert landed["in/bare.csv"]["lines"]["in/bare.csv"] == {
        "physical": 4, "records": 2, "quarantined": 1, "seen": 0, "header": 0, "blank": 1}


def test_a_source_that_cannot_fill_the_fields_fails_collection(env: Settings) -> None:
    _write(env, "in/rows.csv", "这家店很好,positive\n物流太慢,negative\n".encode())
    spec = HEAD + f"  - {{name: rows, type: files, path: in/rows.csv, format: csv, {LICENCE}}}\n"
    ctx = stage_context(env, spec, "run-noheader")
    with pytest.raises(SourceError) as failed:
        collect.run(ctx)
    message = str(failed.value)
    assert "source 'rows' in/rows.csv" in message
    assert "text (column 'text'), label (column 'label')" in message
    assert "['这家店很好', 'positive']" in message and "header: false" in message
    # the run's failure cause (catalog, CLI, dataset page) names the source, file, line, fields
    where = failed.value
    assert (where.source, where.file, where.line, where.field) == (
        "rows", "in/rows.csv", 1, "text, label")

    fixed = spec.replace("format: csv,", "format: csv, header: false, columns: [text, label],")
    ok = collect.run(stage_context(env, fixed, "run-fixed"))
    assert ok.counts["records"] == 2 and ok.counts["lines"]["header"] == 0

    _write(env, "in/rows.jsonl", b'{"body": "x", "label": "positive"}\n')
    keyed = HEAD + (f"  - {{name: feed, type: files, path: in/rows.jsonl, format: jsonl, "
                    f"{LICENCE}}}\n")
    with pytest.raises(SourceError, match=r"source 'feed' in/rows.jsonl: no column for the "
                       r"field\(s\) text \(column 'text'\); the columns found are \['body', "
                       r"'label'\]") as failed:
        collect.run(stage_context(env, keyed, "run-keys"))
    assert (failed.value.source, failed.value.file, failed.value.field) == (
        "feed", "in/rows.jsonl", "text")
    mapped = keyed.replace("format: jsonl,", "format: jsonl, fields: {text: body},")
    assert collect.run(stage_context(env, mapped, "run-mapped")).counts["records"] == 1


def test_null_values_make_cells_null_for_every_field_type(env: Settings) -> None:
    _write(env, "in/t.csv", b"text,label,stars\nok,positive,5\nN/A,,empty\n,negative,N/A\n")
    spec = HEAD.replace("    - {name: label, type: string}\n",
                        "    - {name: label, type: string, required: false}\n"
                        "    - {name: stars, type: integer, required: false}\n") + (
        f"  - {{name: cells, type: files, path: in/t.csv, format: csv, "
        f"null_values: ['', N/A, empty], {LICENCE}}}\n")
    ctx = stage_context(env, spec, "run-nulls")
    rows = _records(ctx, collect.run(ctx)).sort_values("line")
    assert rows[["text", "label", "stars"]].astype(object).where(rows.notna(), None).values \
        .tolist() == [["ok", "positive", 5], [None, None, None], [None, "negative", None]]
    # without null_values an empty cell stays an empty string (the string field's default)
    plain = spec.replace("null_values: ['', N/A, empty], ", "")
    _write(env, "in/t.csv", b"text,label,stars\nok,,\n")
    ctx = stage_context(env, plain, "run-defaults")
    row = _records(ctx, collect.run(ctx)).iloc[0]
    assert row["label"] == "" and pd.isna(row["stars"])


SAME = "\n".join(f"第{i}条评论,东西不错" for i in range(6)) + "\n"
TWIN_SPEC = HEAD.replace("    - {name: label, type: string}",
                         "    - {name: label, type: string, values: [positive, negative]}") \
    + f"""\
  - {{name: shop_a, type: files, path: a/reviews.txt, format: text, label: positive, {LICENCE}}}
  - {{name: shop_b, type: files, path: b/copy.txt, format: text, label: {{label_b}},
     {LICENCE}}}
  - {{name: table_a, type: files, path: a/labels.csv, format: csv, {LICENCE}}}
  - {{name: table_b, type: files, path: b/labels.csv, format: csv, {LICENCE}}}
annotate: {{conflicts: {{resolve: majority, tie: first}}}}
quality: {{gate: {{min_rows: 1}}}}
"""


@pytest.mark.parametrize("label_b", ["positive", "negative"])
def test_identical_bytes_from_two_sources_stay_two_records_and_merge(
        env: Settings, label_b: str) -> None:
    """The same file delivered twice under two names, and two label files that share
    their content: distinct records (ids by source, file and line), which preprocessing
    merges as exact duplicates, or reports as label conflicts when their labels differ."""
    _write(env, "a/reviews.txt", SAME.encode())
    _write(env, "b/copy.txt", SAME.encode())
    table = "text,label\n质量很好,positive\n包装破了,negative\n".encode()
    _write(env, "a/labels.csv", table)
    _write(env, "b/labels.csv", table)
    ctx, results = run_lifecycle(env, TWIN_SPEC.replace("{label_b}", label_b),
                                 f"run-twins-{label_b}")
    c, p = results["collect"], results["preprocess"]
    collected = _records(ctx, c)
    assert len(collected) == 16 and collected["id"].is_unique
    # both origins are kept, each with its own provenance
    twins = collected.loc[collected["text"] == "第0条评论,东西不错"]
    assert sorted(twins["source"]) == ["shop_a", "shop_b"]
    assert sorted(twins["source_path"]) == ["a/reviews.txt", "b/copy.txt"]
    assert twins["raw_hash"].nunique() == 1 and set(twins["line"]) == {1}

    assert p.counts["in"] == 16
    assert p.counts["in"] == p.counts["kept"] + p.counts["quarantined"] + p.counts["merged"]
    assert (p.counts["kept"], p.counts["merged"]) == (8, 8)
    merges = _records(ctx, p, "merges")
    assert set(merges["id"]) | set(merges["kept_id"]) <= set(collected["id"])
    pairs = merges.merge(collected[["id", "source"]], on="id").merge(
        collected[["id", "source"]].rename(columns={"id": "kept_id", "source": "kept_source"}),
        on="kept_id")
    assert sorted(set(zip(pairs["source"], pairs["kept_source"], strict=True))) == [
        ("shop_b", "shop_a"), ("table_b", "table_a")]
    conflicts = 6 if label_b == "negative" else 0
    assert p.counts["label_conflicts"] == conflicts

    assert results["annotate"].counts["label_conflicts"] == conflicts
    version = results["publish"].release.version
    out = ctx.registry.fetch("lines_test", version, env.home / f"got-{label_b}")
    published = read_release(out)
    assert len(published) == 8 and published["text"].is_unique
    assert set(published["id"]) <= set(collected["id"])
    # trace shows both deliveries of every twin: the record's own origin and the duplicate
    # it absorbed, one from each source, both at the same line of the same raw bytes
    traces = walk(ctx.catalog, ctx.store, "lines_test", version, env.bucket_raw)["traces"]
    for rid in published["id"]:
        origins = traces[rid]["raw_origins"]
        assert len(origins) == 2, origins
        sources = sorted(o["source"] for o in origins)
        assert sources in (["shop_a", "shop_b"], ["table_a", "table_b"]), origins
        assert len({(o["raw_hash"], o["line"]) for o in origins}) == 1
