"""A quality report made by hand, in the shape lifecycle/evaluate/report.py builds, for the
tests of its page: every key the page reads, with little in each, and any key replaced."""

from __future__ import annotations

from typing import Any


def quality_report(**changes: Any) -> dict[str, Any]:
    """A report of a small labelled dataset graded A; ``changes`` replace whole keys."""
    report: dict[str, Any] = {
        "dataset": "shop", "title": "Shop reviews", "run_id": "run 1", "rows": 1200,
        "evaluated_at": "2026-01-02T03:04:05.678901+00:00",
        "grade": "A", "score": 0.96, "passed": True, "weak": [],
        "gate": {"min_grade": "B", "min_rows": 100},
        "dimensions": {"completeness": 1.0, "validity": 0.98, "uniqueness": 0.95,
                       "label_quality": 0.9},
        "not_measured": {}, "warnings": [],
        "weights": {"completeness": 1.0, "validity": 1.0, "uniqueness": 1.0,
                    "label_quality": 1.0},
        "evidence": {"label_conflicts": 0, "residual_duplicates": 0},
        "balance": {},
        "expectations": {"total": 1, "failed": [], "blocking": [], "per_shard": [],
                         "results": [{"expectation": "expect_column_values_to_not_be_null",
                                      "kwargs": {"column": "text"}, "success": True,
                                      "unexpected_count": 0}]},
        "labels": {"pos": 700, "neg": 500},
        "label_errors": {},
        "lengths": {},
        "duplicates": {"exact_merged": 0, "near_merged": 0, "label_conflicts": 0,
                       "residual": 0},
        "pii": {"found_in_preprocessing": {}, "residual_records": 0, "residual": {}},
        "splits": {}, "links": {}, "cells": {}, "proposals": {},
    }
    report.update(changes)
    return report
