"""Drift through evaluate: a candidate whose label distribution shifted from the published
version is reported, and blocked when the spec says so; an unshifted one is quiet."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from granary.settings import Settings
from lifecycle.errors import QualityGateFailed
from lifecycle.evaluate import stage as evaluate
from lifecycle.records.shards import parse_uri
from tests.graded import SPEC, context, graded_settings, publish_run, until_evaluate

pytestmark = pytest.mark.integration
BLOCK = SPEC.replace("quality: {gate: {min_rows: 100, min_grade: B}}",
                     "quality: {gate: {min_rows: 100, min_grade: B}, drift: {action: block}}")


def _report(ctx: object, result: object) -> dict:  # type: ignore[type-arg]
    manifest_uri = result.manifest_uri  # type: ignore[attr-defined]
    from lifecycle.records.shards import read_manifest

    m = read_manifest(ctx.store, manifest_uri)  # type: ignore[attr-defined]
    bucket, key = parse_uri(m["quality"]["report_uri"])
    return json.loads(ctx.store.get_bytes(bucket, key))  # type: ignore[attr-defined,no-any-return]


def test_a_shifted_label_distribution_is_reported_and_can_block(s3: Settings,
                                                                tmp_path: Path) -> None:
    s = graded_settings(s3, tmp_path)
    publish_run(s, "run-v1", BLOCK)
    same = context(s, BLOCK, "run-same")
    quiet = evaluate.run(same, until_evaluate(same))  # the same data: nothing drifted
    drift = _report(same, quiet)["drift"]
    assert drift["previous_version"] == 1 and drift["drifted"] == []

    rows = s.inbox_dir / "reviews" / "rows.csv"
    df = pd.read_csv(rows)
    neg = df.index[df["label"] == "neg"]
    df.drop(index=neg[: int(len(neg) * 0.7)]).to_csv(rows, index=False)  # 50/50 -> ~77/23
    shifted = context(s, BLOCK, "run-shifted")
    with pytest.raises(QualityGateFailed, match=r"drifted from the previous version beyond "
                       r"quality\.drift: label distribution \(PSI\) 0\.\d+ > 0\.25"):
        evaluate.run(shifted, until_evaluate(shifted))
    assert [v.version for v in shifted.catalog.versions("graded_reviews")] == [1]
    # the default action only warns (a lenient gate: the shift also lowers balance)
    warn = context(s, SPEC.replace("min_grade: B", "min_grade: D"), "run-warned")
    passed = evaluate.run(warn, until_evaluate(warn))
    report = _report(warn, passed)
    assert report["drift"]["drifted"] == ["label distribution (PSI)"]
    assert passed.counts["drifted"] == 1
    from lifecycle.evaluate import report as qreport

    assert "Drift against v1" in qreport.render(report)
