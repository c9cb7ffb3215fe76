"""Cell-level quality through the real evaluate stage (S3, catalog): rules proposed from a
reference file the spec names, accepted, then a dirty twin with 10% of its cells corrupted
graded against its clean twin, the failed cells per column in the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from granary.settings import Settings
from lifecycle.annotate import stage as annotate
from lifecycle.collect import stage as collect
from lifecycle.evaluate import profiling
from lifecycle.evaluate import stage as evaluate
from lifecycle.preprocess import stage as preprocess
from lifecycle.spec import parse_spec
from lifecycle.synthesize import stage as synthesize
from tests import tabledata as td
from tests.stagectx import isolated, stage_context

pytestmark = pytest.mark.integration


def _evaluate(s: Settings, spec_text: str, run_id: str) -> dict[str, Any]:
    """Collect the inbox's customers and evaluate them; the quality report."""
    import json

    ctx = stage_context(s, spec_text, run_id, rows_per_shard=400)
    up = collect.run(ctx)
    for stage in (preprocess, annotate, synthesize):
        up = stage.run(ctx, up)
    result = evaluate.run(ctx, up)
    manifest = json.loads(ctx.store.get_bytes(*_split(result.manifest_uri)))
    report_uri = manifest["quality"]["report_uri"]
    report: dict[str, Any] = json.loads(ctx.store.get_bytes(*_split(report_uri)))
    html = ctx.store.get_bytes(*_split(manifest["quality"]["html_uri"])).decode()
    return {"report": report, "html": html, "quality": manifest["quality"]}


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def test_a_dirty_twin_through_the_evaluate_stage(s3: Settings, tmp_path: Path) -> None:
    s = isolated(s3, tmp_path)
    folder = s.inbox_dir / "customers"
    folder.mkdir(parents=True)
    td.clean(800, seed=11, start=500_000).drop(columns="id").to_csv(
        folder / "reference.csv", index=False)
    clean = td.clean(600, seed=3)
    # the generator's id rides along as a field, so that records map to the known cells
    spec_text = td.SPEC.replace("    - {name: name, type: string}",
                                "    - {name: cid, type: string}\n"
                                "    - {name: name, type: string}").replace(
        "drift: {enabled: false}",
        "drift: {enabled: false}\n  profile: {reference: customers/reference.csv}")
    clean.rename(columns={"id": "cid"}).to_csv(folder / "rows.csv", index=False)

    # 1. the rules proposed from the reference file are in the report, not applied
    first = _evaluate(s, spec_text, "run-1")
    proposals = first["report"]["proposals"]
    assert proposals["reference"] == "file customers/reference.csv"
    assert {"determinant": ["zip"], "dependent": "city"} in proposals["dependencies"]
    assert "quality:\n  dependencies:" in proposals["yaml"] and "id='proposals'" in first["html"]

    # 2. accepted into the spec file: the clean twin grades A, the dirty one two grades less
    path = tmp_path / "customers.yaml"
    path.write_text(spec_text, encoding="utf-8")
    spec = parse_spec(spec_text, str(path))
    ref = profiling.typed(spec, profiling.read_reference(folder / "reference.csv"))
    profiling.accept(path, profiling.propose(spec, ref, "reference"))
    accepted = path.read_text(encoding="utf-8")
    assert "values: [basic, plus, pro]" in accepted
    clean_run = _evaluate(s, accepted, "run-2")
    assert clean_run["report"]["grade"] == "A", clean_run["report"]["dimensions"]
    assert clean_run["report"]["proposals"] == {"reference": "file customers/reference.csv",
                                                "rows": 800, "fields": {},
                                                "dependencies": [], "yaml": ""}

    dirty, corrupted = td.corrupt(clean, 0.1)
    dirty.rename(columns={"id": "cid"}).to_csv(folder / "rows.csv", index=False)
    dirty_run = _evaluate(s, accepted, "run-3")
    report = dirty_run["report"]
    assert report["grade"] in ("C", "D"), report["grade"]
    assert report["score"] < clean_run["report"]["score"]
    cells = report["cells"]
    per_column = {c: cells["columns"][c]["failed"] for c in td.COLUMNS}
    # the row-local failed cells by record (the version's failed_cells: every cell failed
    # by a rule of its own record; dependencies and uniqueness are on top) against the
    # known corrupted cells: what they flag is corrupted, and they find most of it
    by_cid = dict(zip(clean["id"], range(len(clean)), strict=True))
    records = _records(s, dirty_run)
    cid_of = dict(zip(records["id"].astype(str), records["cid"].astype(str), strict=True))
    found = {(by_cid[cid_of[i]], col)
             for dims in dirty_run["quality"]["failed_cells"].values()
             for col, rules in dims.items() for ids in rules.values() for i in ids
             if col in td.COLUMNS}
    assert len(found & corrupted) / len(found) >= 0.9
    assert len(found & corrupted) / len(corrupted) >= 0.6, (per_column, len(found))
    # the report's per-column counts hold those cells
    for col in td.COLUMNS:
        assert sum(1 for _, c in found if c == col) <= per_column[col], (col, per_column)
    assert "id='cells-per-column'" in dirty_run["html"]
    assert sum(d["failed"] for d in cells["dependencies"]) > 0

    # 3. the reference gone: the evaluation goes on, the report says why nothing is proposed
    (folder / "reference.csv").unlink()
    gone = _evaluate(s, accepted, "run-4")
    assert gone["report"]["grade"] == report["grade"]
    assert "no such file" in gone["report"]["proposals"]["warning"]
    assert "id='proposals-warning'" in gone["html"]


def _records(s: Settings, run: dict[str, Any]) -> Any:
    from lifecycle.records import shards
    from storage import keys

    ctx = stage_context(s, td.SPEC, "read")
    run_id = run["report"]["run_id"]
    manifest = f"s3://{ctx.work_bucket}/{keys.manifest_key('customers', run_id, 'evaluate')}"
    return shards.read_table(ctx.store, shards.read_manifest(ctx.store, manifest))


