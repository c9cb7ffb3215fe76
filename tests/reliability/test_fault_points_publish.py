"""SIGKILL at every named fault point of publishing (storage/faults.py): while the registry
is cloned, its objects sent (DVC's push, object by object), committed, tagged and pushed, the
release folder copied and the catalog written (inside its transaction too); then the task's
retry. What is published must be what an uninterrupted run publishes, read from outside
(tests/outcome.py): the records, the tags, the catalog's versions and evaluations, and the
registry and catalog in step (each file's hash in the catalog is the registry's file's)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.reliability.faultharness import Baseline, check_case

pytestmark = pytest.mark.reliability

POINTS = [
    "publish.before_registry",      # the release built, nothing published
    "registry.cloned",              # the registry cloned, nothing sent
    "registry.object_sent@2",       # mid push: between the objects of the version
    "registry.object_copied",       # a staged data file copied, the other not
    "registry.listing_sent",        # every object and the folder's listing, no commit
    "registry.before_commit",       # the .dvc file written, not committed
    "registry.after_commit",        # committed locally, not tagged
    "registry.before_push",         # tagged locally, not pushed
    "registry.after_push",          # the tag is out, publish does not know it
    "publish.after_registry",       # tagged; no release folder, no catalog entry
    "releases.file_copied@3",       # the release folder half copied
    "publish.before_catalog",       # the release folder whole, the catalog not told
    "catalog.version_row",          # inside the catalog's transaction, before its commit
    "publish.version_added",        # the version committed, the evaluation not marked
    "publish.before_dropping_staged",  # all done but removing the staged files
]


@pytest.mark.parametrize("point", POINTS)
def test_publish_killed_at_a_fault_point_and_retried(fault_baseline: Baseline, tmp_path: Path,
                                                     point: str, report: Any) -> None:
    check_case(fault_baseline, tmp_path, point, "publish", report)
