"""Preprocessing (清洗): the spec's operators in the spec's order.

Operators: ``normalise`` (ftfy, HTML, NFKC, OpenCC, control characters, whitespace),
``filter`` (length, tokens, language, regexes, character ratios, repetition, field rules),
``pii`` (personal data masked, replaced, hashed, dropped or kept), ``exact_dedup`` and
``near_dedup`` (MinHash LSH candidates, verified by exact Jaccard similarity; see
lifecycle/preprocess/neardedup.py). Every record that goes in comes out exactly once: kept,
quarantined (with the operator, a reason code and the value that triggered it, masked when
personal), or merged into the record it duplicates. ``in == kept + quarantined + merged`` is
checked on every run and a violation fails the stage. A report (counts per operator and
reason, the largest duplicate clusters, personal data per type, languages) is written beside
the output.

The parts, which the DAG runs as tasks (lifecycle.contract's ``STAGE_DEFS["preprocess"]``):
plan -> clean (per shard) -> the deduplication partitioned (published, scatter, partition,
exact, sift, pairs, verify, components, regroup, stars, cluster: docs/design/partitioned-dedup.md)
-> apply (per shard) -> merge. Image specs with near_dedup run the stage's whole instead: plan
-> clean -> deduplicate (one global task) -> apply -> merge (lifecycle/preprocess/scope.py).
The operators are in operators.py.
"""

from __future__ import annotations

from lifecycle.context import StageContext, StageResult
from lifecycle.preprocess.apply import apply
from lifecycle.preprocess.clean import PREVIEW, clean, plan
from lifecycle.preprocess.dedup import (
    INDEX_COLUMNS,
    MERGE_COLUMNS,
    SPLIT_LINK_COLUMNS,
    TOP_CLUSTERS,
    deduplicate,
    label_conflicts,
)
from lifecycle.preprocess.merge import merge
from lifecycle.preprocess.operators import ExactDeduplicator, _replace, pii_fields
from lifecycle.preprocess.work import GLOBAL, LOCAL, STAGE, phases

__all__ = ["GLOBAL", "INDEX_COLUMNS", "LOCAL", "MERGE_COLUMNS", "PREVIEW", "SPLIT_LINK_COLUMNS",
           "STAGE", "TOP_CLUSTERS", "ExactDeduplicator", "_replace", "apply", "clean",
           "deduplicate", "label_conflicts", "merge", "phases", "pii_fields", "plan", "run"]


def run(ctx: StageContext, upstream: StageResult) -> StageResult:
    """Plan, clean every shard, deduplicate, apply and merge, in this process
    (lifecycle.contract's parts, as declared for the spec)."""
    from lifecycle.contract import declared, run_in_process

    return run_in_process(declared(STAGE, ctx.spec), ctx, upstream)

