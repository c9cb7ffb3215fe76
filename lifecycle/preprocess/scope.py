"""Which specs preprocessing's partitioned parts deduplicate (lifecycle.contract's
``STAGE_DEFS["preprocess"]``), and why not the others: those run today's stage with one
global deduplicate (``contract.WHOLE_PREPROCESS``), which holds every record's keys and
signatures in one task, unbounded in memory: tables with near_dedup
(the parts' near steps run for texts only, ``partition.near_runs``: a table's near
duplicates would go unmerged, as tests/integration/test_near_duplicates.py's
question-and-answer table showed), and specs that list near_dedup before exact_dedup.
Light: the DAG factory asks it while parsing."""

from __future__ import annotations

from typing import Any


def refusal(spec: Any) -> str | None:
    """Why the partitioned parts cannot deduplicate ``spec`` yet, or None when they can."""
    dedups = [s for s in spec.preprocess.steps if s in ("exact_dedup", "near_dedup")]
    if spec.modality == "table" and "near_dedup" in dedups:
        return "the partitioned deduplication does not decide near duplicates of tables yet"
    if dedups[:1] == ["near_dedup"] and "exact_dedup" in dedups:
        return "the partitioned deduplication does not run near_dedup before exact_dedup yet"
    return None
