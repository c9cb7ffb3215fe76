"""Which specs preprocessing's partitioned parts deduplicate (lifecycle.contract's
``STAGE_DEFS["preprocess"]``), and why not the others: those run today's stage with one
global deduplicate (``contract.WHOLE_PREPROCESS``), which holds every record's keys and
signatures in one task, unbounded in memory: images with near_dedup until images' near
parts exist (docs/design/partitioned-dedup.md, §2 parts 7-9), and specs that list
near_dedup before exact_dedup. Tables with near_dedup run the parts: their keys (MinHash
signatures and key texts of the ``near_dedup.key`` fields) are made by the same ``clean``
as texts' (``partition.near_runs``). Light: the DAG factory asks it while parsing."""

from __future__ import annotations

from typing import Any


def refusal(spec: Any) -> str | None:
    """Why the partitioned parts cannot deduplicate ``spec`` yet, or None when they can."""
    dedups = [s for s in spec.preprocess.steps if s in ("exact_dedup", "near_dedup")]
    if spec.modality == "image" and "near_dedup" in dedups:
        return ("the partitioned deduplication does not decide near duplicates of images yet "
                "(issue 31)")
    if dedups[:1] == ["near_dedup"] and "exact_dedup" in dedups:
        return "the partitioned deduplication does not run near_dedup before exact_dedup yet"
    return None
