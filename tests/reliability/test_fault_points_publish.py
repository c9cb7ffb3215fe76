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

from tests.reliability.faultharness import Baseline, check_case, run_case

pytestmark = pytest.mark.reliability

POINTS = [
    "publish.part_staged",          # a write part's first file staged, the other not
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


def test_publish_killed_after_the_push_then_a_new_run(fault_baseline: Baseline, tmp_path: Path,
                                                      report: Any) -> None:
    """The task's retries spent (killed after the registry's push each time), the user
    triggers a new run. The new run must not leave the registry and the catalog out of step
    (a tag the catalog never learns of), nor publish the same records as a second version.
    The killed run's evaluation stays a candidate (that run failed): the evaluations are the
    one legitimate difference."""
    result = run_case(fault_baseline, tmp_path, "registry.after_push", "publish",
                      new_run_from="evaluate")
    assert result.exitcode == -9
    c = result.comparison
    report("SIGKILL at registry.after_push, then a new run (retries spent)",
           f"killed in publish; the next run: {c.summary()}", c.lost)
    assert (c.lost, c.extra, c.raw, c.tags, c.versions, c.out_of_step, c.mirror) == \
        (0, 0, [], [], [], [], []), c.summary()
