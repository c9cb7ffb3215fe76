"""Great Expectations checks across runs: an expectation's identity (its type and arguments),
by which a refresh matches the checks of its base version with its own and the failed cells
of a check (lifecycle/quality/cells.py) are taken or left, and the expectations whose outcome
for a record depends on that record alone."""

from __future__ import annotations

import json
from typing import Any

# Row-local expectations: a record's outcome depends on that record alone, so the counts of a
# version are the sums of its parts' counts. A refresh that keeps every base record validates
# these on its new records only and adds the base version's counts (see merge_check in
# lifecycle/evaluate/expectations.py).
ROW_LOCAL = {"expect_column_values_to_not_be_null", "expect_column_values_to_be_null",
             "expect_column_values_to_be_in_type_list", "expect_column_values_to_be_of_type",
             "expect_column_values_to_be_in_set", "expect_column_values_to_not_be_in_set",
             "expect_column_values_to_be_between", "expect_column_values_to_match_regex",
             "expect_column_values_to_not_match_regex",
             "expect_column_values_to_match_regex_list",
             "expect_column_value_lengths_to_be_between",
             "expect_column_value_lengths_to_equal",
             "expect_column_values_to_match_strftime_format",
             "expect_column_values_to_be_json_parseable",
             "expect_column_values_to_be_dateutil_parseable"}


def check_key(expectation: str, kwargs: dict[str, Any]) -> str:
    """An expectation's identity across runs: its type and arguments (not GX's batch id)."""
    return json.dumps([expectation, {k: v for k, v in kwargs.items() if k != "batch_id"}],
                      sort_keys=True, default=str)
