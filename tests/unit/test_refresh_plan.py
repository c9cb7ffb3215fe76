"""The refresh planner hands evaluation the refresh's candidate whole (lifecycle/refresh.py):
the base's records with the delta applied, the counts, which rows are new, and the base's
quality record when evaluation may add to it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest

from lifecycle import refresh
from lifecycle.context import StageContext
from lifecycle.spec import parse_spec
from storage.catalog import Version

SPEC = """\
name: keyed
title: Keyed
licence: {id: CC0-1.0}
owners: [{name: qa}]
sources: [{name: rows, type: files, path: t.csv, format: csv,
           licence: {id: CC0-1.0, origin: generated, legal_basis: own}}]
schema:
  fields: [{name: text, type: string}, {name: label, type: string, values: [pos, neg]},
           {name: review_id, type: string},
           {name: deleted, type: boolean}]
refresh: {key: [review_id], deleted_field: deleted}
"""
QUALITY = {"rules": "r", "checks": [], "failed_cells": {}, "label_check": {"checked": 3}}


def ctx(mode: str = "incremental") -> StageContext:
    """Only the spec and the dataset's name matter to assembling a candidate: no services."""
    return StageContext(spec=parse_spec(SPEC, "keyed.yaml"), run_id="r", store=None,  # type: ignore[arg-type]
                        catalog=None, registry=None, raw_bucket="", work_bucket="",  # type: ignore[arg-type]
                        inbox=None, releases_bucket="", mode=mode,  # type: ignore[arg-type]
                        now=datetime(2026, 11, 28, tzinfo=UTC))


def records(ids: list[int], deleted: tuple[int, ...] = ()) -> pd.DataFrame:
    return pd.DataFrame({"id": [f"id{i}" for i in ids], "text": [f"text {i}" for i in ids],
                         "review_id": [f"R{i}" for i in ids],
                         "deleted": [i in deleted for i in ids]})


def base(rows: int, quality: dict[str, Any] | None = None) -> Version:
    return Version("keyed", 4, "keyed@v4", "", "", "", rows, "run-4", {}, quality or QUALITY,
                   datetime(2026, 11, 1, tzinfo=UTC))


def conserved(counts: refresh.RefreshCounts) -> bool:
    return counts.base - counts.deleted - counts.replaced + counts.added + counts.updated \
        == counts.rows


def test_a_record_published_again_under_its_key_replaces_the_base_record() -> None:
    before = records([0, 1, 2])
    found = refresh.assemble(ctx(), base(3), before, records([1, 3, 4]), set())
    assert found.counts.as_dict() == {"base": 3, "deleted": 0, "replaced": 1, "updated": 1,
                                      "added": 2, "repeated": 0, "rows": 5, "base_version": 4}
    assert conserved(found.counts) and found.counts.rows == len(found.df)
    # the rows the base lacks by id: the replacement keeps its id, so it is not new
    assert found.df["id"].tolist() == ["id0", "id2", "id1", "id3", "id4"]
    assert found.fresh.tolist() == [False, False, False, True, True]
    assert found.carried is None and found.added is None


def test_new_records_only_keep_every_base_record_and_carry_its_quality() -> None:
    before = records([0, 1, 2])
    found = refresh.assemble(ctx(), base(3), before, records([3, 4]), set())
    assert found.counts.as_dict() == {"base": 3, "deleted": 0, "replaced": 0, "updated": 0,
                                      "added": 2, "repeated": 0, "rows": 5, "base_version": 4}
    assert found.df["id"].tolist() == ["id0", "id1", "id2", "id3", "id4"]
    assert found.fresh.tolist() == [False, False, False, True, True]
    assert found.carried is QUALITY and found.added is found.fresh
    assert found.base_version == 4 and found.label_check == {"checked": 3}
    assert found.published.version == 4 and found.published.records is before


@pytest.mark.parametrize("delta, deleted", [
    (records([1, 5], deleted=(1,)), {"R1"}),   # the source deletes R1
    (records([7]).assign(review_id=["R2"]), set()),  # a new record replaces R2 by its key
])
def test_a_refresh_that_removes_a_base_record_carries_nothing(delta: pd.DataFrame,
                                                              deleted: set[str]) -> None:
    before = records([0, 1, 2])
    found = refresh.assemble(ctx(), base(3), before, delta, deleted)
    assert conserved(found.counts) and found.counts.rows == len(found.df)
    assert found.counts.deleted + found.counts.replaced == 1
    assert not found.df["deleted"].any()  # the deletion markers are not records
    assert found.carried is None and found.added is None  # measure the whole candidate
    assert found.fresh.sum() == len(found.df) - 2  # still known: which rows are new


def test_a_base_whose_row_count_is_not_its_records_carries_nothing() -> None:
    found = refresh.assemble(ctx(), base(4), records([0, 1, 2]), records([3]), set())
    assert found.counts.added == 1 and found.carried is None and found.added is None


def test_a_full_run_has_no_refresh_candidate() -> None:
    """No base: the records are evaluated as they came (nothing is looked up)."""
    assert refresh.plan(ctx("full")).assemble(records([0, 1])) is None
