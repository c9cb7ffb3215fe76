"""SIGKILL at every named fault point of collection, preprocessing (the partitioned dedup's
among them), annotation, synthesis and evaluation (storage/faults.py), then the task's retry:
what is published must be what an uninterrupted run publishes, read from outside
(tests/outcome.py). Publishing's points are in test_fault_points_publish.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.reliability.faultharness import Baseline, check_case

pytestmark = pytest.mark.reliability

# (fault point[@N], the stage the run starts at: the faulted one, upstream as prepared)
POINTS = [
    ("collect.before_raw_object@2", "collect"),   # one raw object landed, the second not
    ("collect.raw_landed@2", "collect"),          # between raw objects
    ("store.before_promote@2", "collect"),        # a shard uploaded under its temporary key
    ("store.after_promote@3", "collect"),         # promoted, the temporary key left
    ("collect.shard_written@2", "collect"),       # between collection's shards
    ("collect.payloads_parsed", "collect"),       # every raw object parsed, no seen keys
    ("collect.before_manifest", "collect"),       # every shard written, no manifest
    ("collect.before_source_state", "collect"),   # the manifest written, no state staged
    ("preprocess.unit_cleaned@2", "preprocess"),  # between the shards' cleaning
    ("preprocess.exact.keys_read", "preprocess"),  # a partition's keys, nothing decided
    ("preprocess.verify.pairs_read", "preprocess"),  # candidate pairs read, none verified
    ("preprocess.cluster.decided", "preprocess"),  # decisions combined, no merges written
    ("preprocess.unit_merges_written@2", "preprocess"),  # a unit's merges, no dedup index
    ("preprocess.shard_written@2", "preprocess"),  # between the final shard writes
    ("preprocess.unit_applied@2", "preprocess"),
    ("preprocess.before_manifest", "preprocess"),
    ("annotate.shard_written", "annotate"),
    ("annotate.shard_written@5", "annotate"),    # among the parts' later shards
    ("annotate.before_manifest", "annotate"),
    ("synthesize.before_manifest", "synthesize"),
    ("evaluate.docs_uploaded", "evaluate"),
    ("evaluate.before_manifest", "evaluate"),
    ("evaluate.before_catalog", "evaluate"),
]


@pytest.mark.parametrize(("point", "first"), POINTS, ids=[p for p, _ in POINTS])
def test_killed_at_a_fault_point_and_retried(fault_baseline: Baseline, tmp_path: Path,
                                             point: str, first: str, report: Any) -> None:
    check_case(fault_baseline, tmp_path, point, first, report)
