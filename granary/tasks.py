"""What every Granary task does around its work: Granary's errors translated into Airflow's
(skip, fail at once, retry), and a failure recorded in the catalog with its cause before
Airflow hears of it (granary.runtime.record_failure), so the run's `end` and the CLI can say
why a run failed. The DAG factory (granary/dagfactory.py) wraps every task in these."""

from __future__ import annotations

import contextlib
from typing import Any

from lifecycle.spec import STAGES, SpecError

# the refresh DAG's one task before publishing (granary.dagfactory._refresh_task)
REFRESH_TASK = "collect_to_evaluate"


def _as_airflow(fn: Any, name: str, context: dict[str, Any], stage: str | None = None,
                unit: str | None = None, last: bool = True) -> Any:
    """Run ``fn`` translating Granary's errors: skips skip; bad input, a failed gate or a
    refused source fail at once (retrying cannot help); anything else is retried. A failure
    is recorded in the catalog first (runtime.record_failure), with whether Airflow will try
    again, so the run's `end` task and the CLI can say why it failed. When a retry succeeds
    (and ``fn`` is the ``last`` part of its task) the earlier try's failure is forgotten."""
    from airflow.sdk.exceptions import (
        AirflowFailException,
        AirflowSkipException,
        DownstreamTasksSkipped,
    )

    from granary import usage
    from granary.runtime import StageSkipped, clear_failure, record_failure
    from lifecycle.errors import PermanentError

    usage.note_start()
    try:
        result = fn()
        ti = context["ti"]
        if last and ti.try_number > 1:
            clear_failure(name, context["run_id"], ti.task_id, _map_index(ti))
        return result
    except StageSkipped as e:
        raise AirflowSkipException(str(e)) from e
    except (AirflowSkipException, DownstreamTasksSkipped):
        raise
    except Exception as e:
        permanent = isinstance(e, PermanentError | SpecError | ValueError | AirflowFailException)
        ti = context["ti"]
        record_failure(name, context["run_id"], ti.task_id, e, stage=stage,
                       map_index=_map_index(ti), try_number=ti.try_number,
                       will_retry=not permanent and ti.try_number <= ti.max_tries, unit=unit,
                       dag_id=ti.dag_id)
        if permanent and not isinstance(e, AirflowFailException):
            failed = AirflowFailException(str(e))
            failed.granary_recorded = True  # type: ignore[attr-defined]
            raise failed from e
        with contextlib.suppress(AttributeError):
            e.granary_recorded = True  # type: ignore[attr-defined]
        raise
    finally:
        usage.record(context)  # only when a benchmark asks (GRANARY_TASK_USAGE_DIR)


def _map_index(ti: Any) -> int:
    index = getattr(ti, "map_index", None)
    return index if isinstance(index, int) else -1


def _failure_callback(name: str) -> Any:
    """A task's on_failure_callback: records a failure that did not pass through
    :func:`_as_airflow` (a timeout, a sensor giving up, an error in Airflow's hand-over)."""
    def record(context: Any) -> None:
        error = context.get("exception")
        if getattr(error, "granary_recorded", False):
            return
        from granary.runtime import record_failure

        ti = context["ti"]
        record_failure(name, context["run_id"], ti.task_id,
                       error if isinstance(error, BaseException) else None,
                       stage=stage_of(ti.task_id), map_index=_map_index(ti),
                       try_number=ti.try_number, dag_id=ti.dag_id)

    return record


def stage_of(task_id: str) -> str | None:
    """The stage a task runs, from its id: the lifecycle DAG's ``collect.fetch``, the refresh
    DAG's ``publish``, ``annotate_finish`` or ``annotate_wait_for_people``. None for a task
    of no stage (``begin``, ``end``) or of several (``collect_to_evaluate``)."""
    head = task_id.split(".")[0]
    if head == REFRESH_TASK:
        return None
    head = head.split("_")[0]
    return head if head in STAGES else None
