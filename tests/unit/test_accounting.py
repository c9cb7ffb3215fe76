"""What collection checks on every file (lifecycle.collect.accounting): its errors say where (the
field, the header's line), so the run's failure cause names them."""

from __future__ import annotations

import pytest

from lifecycle.collect.accounting import ColumnCheck, FileLines
from lifecycle.errors import ConservationError, SourceError

pytestmark = pytest.mark.unit

NEEDED = {"text": "body", "label": "label", "stars": "stars"}


def test_a_header_without_the_needed_columns_names_the_fields_and_its_line() -> None:
    check = ColumnCheck("source 's' a.csv", NEEDED, "csv")
    with pytest.raises(SourceError, match=r"no column for the field\(s\) text \(column 'body'\), "
                       r"stars \(column 'stars'\)") as failed:
        check.header(("label", "other"), line=3)
    assert (failed.value.field, failed.value.line) == ("text, stars", 3)
    check = ColumnCheck("source 's' a.csv", NEEDED, "csv")
    with pytest.raises(SourceError, match="more than once") as failed:
        check.header(("body", "label", "stars", "label"), line=1)
    assert (failed.value.field, failed.value.line) == ("label", 1)


def test_records_without_a_needed_key_name_the_field() -> None:
    check = ColumnCheck("source 's' a.jsonl", NEEDED, "jsonl")
    check.record({"body": "x", "label": "y"})
    with pytest.raises(SourceError, match=r"text|stars") as failed:
        check.close()
    assert failed.value.field == "stars" and failed.value.line is None


def test_lines_that_do_not_add_up_fail_the_file() -> None:
    lines = FileLines("source 's' a.csv")
    lines.add("records", 2)
    with pytest.raises(ConservationError, match="holds 3 lines"):
        lines.close(3)
