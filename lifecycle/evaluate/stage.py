"""Evaluation: the candidate (the records to evaluate, for a refresh the base version plus
the delta, and their splits: lifecycle/evaluate/candidate.py), its validation (Great
Expectations, failed cells, drift, the label check, profiling: validate.py), and its grade
(quality dimensions, score and grade, the quality report, the publish gate: grade.py); the
records, the release's data files and the manifest are written by output.py.

The suite checks the schema (every field present, of its type), not-null for required fields,
allowed values, value ranges, regex formats, string lengths, unique ids (and unique fields),
the row-count bounds, and any expectation the spec lists by name. Column checks run per shard
(so a failure names the shard); the whole table's result is made from the shards' results and
the key partials, and only what they cannot make runs on the whole table
(lifecycle/evaluate/gxwhole.py, gxmerge.py); the result is kept as a GX validation result and
rendered as Data Docs in the work bucket (lifecycle/evaluate/expectations.py).

Every run's evaluation is recorded in the catalog as a candidate; one that fails its gate stays
a candidate with its report and the task fails listing the failed dimensions and expectations.
"""

from __future__ import annotations

from lifecycle.context import Laps, StageContext, StageResult
from lifecycle.errors import QualityGateFailed
from lifecycle.evaluate import candidate, grade, output, validate

STAGE = "evaluate"


def run(ctx: StageContext, upstream: StageResult, publishing: bool = True) -> StageResult:
    """Evaluate ``upstream``'s records. ``publishing=False``: a re-evaluation of a published
    version (lifecycle/maintenance.py), graded and recorded but not to be published again."""
    lap = Laps()
    cand = candidate.build(ctx, upstream, lap)
    checked = validate.run(ctx, cand, publishing, lap)
    written = output.write_records(ctx, cand, checked, publishing, lap)
    graded = grade.run(ctx, cand, checked, publishing, lap)
    uri, lineage = output.finish(ctx, upstream, cand, checked, written, graded, lap)
    if not graded.passed:
        raise QualityGateFailed(grade.refusal(
            ctx, graded.grade, graded.score, graded.dims, graded.weak, checked.blocking,
            len(checked.checks), graded.report_uri,
            checked.drifted if checked.drift_blocks else None))
    return StageResult(STAGE, uri, graded.counts, passed=graded.passed,
                       lineage=lineage)
