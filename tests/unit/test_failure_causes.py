"""What a failure record says about an exception (type, message, stage, where), and how the
CLI reads Airflow's import errors; no services."""

from __future__ import annotations

import pytest

from granary.airflow_client import import_error_message
from granary.clirun import blocks
from lifecycle.errors import (
    MAX_MESSAGE,
    SourceError,
    bounded,
    failure_facts,
    mark_stage,
)
from lifecycle.spec import SpecError
from storage.catalog import Failure

pytestmark = pytest.mark.unit


def _raised(error: BaseException, wrap: type[BaseException] | None = None) -> BaseException:
    """``error`` as raised (and, with ``wrap``, re-raised from inside another)."""
    try:
        try:
            raise error
        except BaseException as e:
            if wrap is None:
                raise
            raise wrap(str(e)) from e
    except BaseException as outer:
        return outer


def test_the_granary_error_under_airflows_wrapper_is_the_cause() -> None:
    from airflow.sdk.exceptions import AirflowFailException

    inner = SourceError("source 'pos': no file matches 'a/*.txt'", source="pos",
                        file="/inbox/a/*.txt")
    facts = failure_facts(_raised(inner, AirflowFailException))
    assert facts["error_type"] == "SourceError"
    assert facts["message"] == "source 'pos': no file matches 'a/*.txt'"
    assert (facts["source"], facts["file"]) == ("pos", "/inbox/a/*.txt")
    assert facts["record_id"] is None and facts["field"] is None


def test_a_missing_key_names_the_field_and_the_stage_it_escaped_from() -> None:
    error = _raised(KeyError("id"))
    mark_stage(error, "annotate")
    mark_stage(error, "evaluate")  # an outer runner does not overwrite the inner stage
    facts = failure_facts(error)
    assert (facts["error_type"], facts["message"]) == ("KeyError", "no key 'id'")
    assert (facts["field"], facts["stage"]) == ("id", "annotate")


def test_a_spec_error_keeps_its_file_line_and_field() -> None:
    facts = failure_facts(_raised(SpecError("/d/x.yaml", "unknown key.", field="titel", line=3)))
    assert (facts["file"], facts["line"], facts["field"]) == ("/d/x.yaml", 3, "titel")


def test_the_root_cause_is_kept_when_the_message_does_not_carry_it() -> None:
    try:
        try:
            b"\xff".decode("utf-8")
        except UnicodeDecodeError as e:
            raise SourceError("source 'pos': cannot read the file") from e
    except SourceError as outer:
        facts = failure_facts(outer)
    assert facts["cause"].startswith("UnicodeDecodeError: 'utf-8' codec can't decode")


def test_long_messages_keep_their_start_and_end() -> None:
    text = "START " + "x" * 10_000 + " END"
    cut = bounded(text)
    assert cut.startswith("START ") and cut.endswith(" END")
    assert len(cut) < MAX_MESSAGE + 60 and "characters cut" in cut
    assert bounded("short") == "short"


def test_a_failure_reads_as_one_line_naming_stage_task_and_where() -> None:
    f = Failure(task_id="collect.fetch", map_index=2, stage="collect", error_type="SourceError",
                message="boom", file="/inbox/a.txt", record_id="r1", field="text",
                details={"source": "pos", "line": 7})
    assert f.task == "collect.fetch[2]"
    assert f.summary() == ("collect task collect.fetch[2] failed: SourceError: boom (source "
                           "pos, file /inbox/a.txt, line 7, record r1, field text)")


TRACE = """Traceback (most recent call last):
  File "<frozen importlib._bootstrap>", line 488, in _call_with_frames_removed
  File "/repo/dags/granary_spec_check.py", line 14, in <module>
    raise ImportError(spec_errors_message(_bad))
ImportError: 1 dataset spec(s) could not be loaded; their DAGs are missing until fixed:
  /repo/datasets/broken_set.yaml: 2 problems:
    /repo/datasets/broken_set.yaml:2: field 'titel': unknown key. Did you mean 'title'?
    /repo/datasets/broken_set.yaml:9: field 'modality': Input should be 'text' (got 'txt').
"""


def test_an_import_errors_whole_message_without_the_traceback() -> None:
    message = import_error_message({"stack_trace": TRACE})
    assert message.startswith("ImportError: 1 dataset spec(s) could not be loaded")
    assert message.endswith("Input should be 'text' (got 'txt').")
    assert len(message.splitlines()) == 4  # every line of the message, none cut
    assert import_error_message({"stack_trace": "no exception line"}) == "no exception line"


def test_which_import_errors_keep_a_datasets_dag_from_loading() -> None:
    spec_check = {"filename": "granary_spec_check.py", "stack_trace": TRACE}
    concerns = blocks("broken_set")
    assert concerns(spec_check)
    assert not blocks("broken")(spec_check)  # a name that is only a prefix of another
    assert not blocks("other_set")(spec_check)
    assert blocks("other_set")({"filename": "dags/granary_lifecycle.py", "stack_trace": "x"})
    assert not concerns({"filename": "example_consumer.py", "stack_trace": TRACE})
