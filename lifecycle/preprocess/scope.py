"""Which specs preprocessing's partitioned parts deduplicate (lifecycle.contract's
``STAGE_DEFS["preprocess"]``), and why not the others: those run today's stage with one
global deduplicate (``contract.WHOLE_PREPROCESS``), which holds every record's keys and
signatures in one task, unbounded in memory: specs that list near_dedup before
exact_dedup. Texts, tables (their keys, MinHash signatures and key texts of the
``near_dedup.key`` fields, are made by the same ``clean`` as texts') and images (their near
parts: lifecycle/preprocess/imageparts.py) run the parts. Light: the DAG factory asks it
while parsing."""

from __future__ import annotations

from typing import Any


def refusal(spec: Any) -> str | None:
    """Why the partitioned parts cannot deduplicate ``spec`` yet, or None when they can."""
    dedups = [s for s in spec.preprocess.steps if s in ("exact_dedup", "near_dedup")]
    if dedups[:1] == ["near_dedup"] and "exact_dedup" in dedups:
        return "the partitioned deduplication does not run near_dedup before exact_dedup yet"
    return None
