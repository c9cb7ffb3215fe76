"""The catalog's record of runs: each run's status, why its tasks failed, its stages' results,
and the incremental state of its sources (what the next run of a source starts from).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from storage.catalog.database import Database, _now
from storage.models import RunFailureRow, RunRow, SourceStateRow, StageResultRow


@dataclass(frozen=True)
class Failure:
    """Why one task of a run failed (see RunFailureRow)."""

    task_id: str
    error_type: str
    message: str
    stage: str | None = None
    map_index: int = -1
    try_number: int = 1
    will_retry: bool = False
    record_id: str | None = None
    field: str | None = None
    file: str | None = None
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    created_at: datetime | None = None

    @property
    def task(self) -> str:
        """The task as Airflow shows it: ``collect.fetch[2]`` for a mapped one."""
        return self.task_id + (f"[{self.map_index}]" if self.map_index >= 0 else "")

    @property
    def where(self) -> str:
        """The record, field, file, line and source the failure names, as one phrase."""
        parts = [f"{k} {v}" for k, v in (
            ("source", self.details.get("source")), ("file", self.file),
            ("line", self.details.get("line")), ("record", self.record_id),
            ("field", self.field)) if v not in (None, "")]
        return ", ".join(parts)

    def summary(self) -> str:
        """One line: stage, task, exception and message, and where."""
        where = f" ({self.where})" if self.where else ""
        stage = f"{self.stage} " if self.stage else ""
        return f"{stage}task {self.task} failed: {self.error_type}: {self.message}{where}"


def _to_failure(row: RunFailureRow) -> Failure:
    return Failure(task_id=row.task_id, error_type=row.error_type, message=row.message,
                   stage=row.stage, map_index=row.map_index, try_number=row.try_number,
                   will_retry=row.will_retry, record_id=row.record_id, field=row.field,
                   file=row.file, details=dict(row.details or {}), created_at=row.created_at)


class Runs(Database):
    # ---- runs --------------------------------------------------------------------------------
    def start_run(self, dataset: str, run_id: str, mode: str) -> None:
        def write(s: Session) -> None:
            row = s.scalar(select(RunRow).filter_by(dataset=dataset, run_id=run_id))
            if row is None:
                s.add(RunRow(dataset=dataset, run_id=run_id, mode=mode, status="running",
                             message="", started_at=_now()))
            else:
                row.status, row.mode, row.ended_at = "running", mode, None

        self._write(f"run {dataset}/{run_id}", write)

    def finish_run(self, dataset: str, run_id: str, status: str, message: str = "") -> None:
        def write(s: Session) -> None:
            row = s.scalar(select(RunRow).filter_by(dataset=dataset, run_id=run_id))
            if row is None:
                row = RunRow(dataset=dataset, run_id=run_id, mode="full", started_at=_now())
                s.add(row)
            row.status, row.message, row.ended_at = status, message, _now()

        self._write(f"run {dataset}/{run_id}", write)

    def runs(self, dataset: str) -> list[RunRow]:
        """Every run of ``dataset``, newest first."""
        with self.session() as s:
            q = select(RunRow).filter_by(dataset=dataset)
            return list(s.scalars(q.order_by(RunRow.started_at.desc(), RunRow.id.desc())))

    def run(self, dataset: str, run_id: str) -> RunRow | None:
        with self.session() as s:
            return s.scalar(select(RunRow).filter_by(dataset=dataset, run_id=run_id))

    # ---- failures ----------------------------------------------------------------------------
    def record_failure(self, dataset: str, run_id: str, failure: Failure) -> None:
        """Record why a task of the run failed, replacing what an earlier try of the same
        task instance recorded; ``created_at`` stays the time its first try failed."""
        def write(s: Session) -> None:
            row = s.scalar(select(RunFailureRow).filter_by(
                dataset=dataset, run_id=run_id, task_id=failure.task_id,
                map_index=failure.map_index))
            if row is None:
                row = RunFailureRow(dataset=dataset, run_id=run_id, task_id=failure.task_id,
                                    map_index=failure.map_index, created_at=_now())
                s.add(row)
            row.try_number, row.will_retry = failure.try_number, failure.will_retry
            row.stage, row.error_type, row.message = failure.stage, failure.error_type, \
                failure.message
            row.record_id, row.field, row.file = failure.record_id, failure.field, failure.file
            row.details = dict(failure.details)

        self._write(f"failure {dataset}/{run_id}/{failure.task}", write)

    def clear_failure(self, dataset: str, run_id: str, task_id: str, map_index: int = -1
                      ) -> bool:
        """Forget the failure a task instance recorded: a later try of it succeeded, so it
        is no cause of the run's outcome. Whether there was one."""
        def write(s: Session) -> bool:
            result = s.execute(delete(RunFailureRow).where(
                RunFailureRow.dataset == dataset, RunFailureRow.run_id == run_id,
                RunFailureRow.task_id == task_id, RunFailureRow.map_index == map_index))
            return bool(getattr(result, "rowcount", 0))

        return bool(self._write(f"failure {dataset}/{run_id}/{task_id} cleared", write))

    def failures(self, dataset: str, run_id: str) -> list[Failure]:
        """Why the run's tasks failed (those whose last try failed: a try that Airflow was
        to retry is flagged ``will_retry``, and forgotten if a later try succeeds), in the
        order their first tries failed."""
        return self.failures_of(dataset, [run_id]).get(run_id, [])

    def failures_of(self, dataset: str, run_ids: list[str]) -> dict[str, list[Failure]]:
        """:meth:`failures` of several runs in one read, by run id."""
        if not run_ids:
            return {}
        with self.session() as s:
            rows = s.scalars(select(RunFailureRow).where(
                RunFailureRow.dataset == dataset, RunFailureRow.run_id.in_(run_ids))
                .order_by(RunFailureRow.created_at, RunFailureRow.id))
            out: dict[str, list[Failure]] = {}
            for row in rows:
                out.setdefault(row.run_id, []).append(_to_failure(row))
            return out

    # ---- stage results -----------------------------------------------------------------------
    def record_stage(self, dataset: str, run_id: str, stage: str, status: str,
                     output_uri: str, counts: dict[str, Any]) -> None:
        def write(s: Session) -> None:
            row = s.scalar(select(StageResultRow).filter_by(dataset=dataset, run_id=run_id,
                                                            stage=stage))
            if row is None:
                row = StageResultRow(dataset=dataset, run_id=run_id, stage=stage,
                                     created_at=_now())
                s.add(row)
            row.status, row.output_uri, row.counts = status, output_uri, counts
            row.created_at = _now()

        self._write(f"stage result {dataset}/{run_id}/{stage}", write)

    def stage_results(self, dataset: str, run_id: str) -> list[StageResultRow]:
        with self.session() as s:
            q = select(StageResultRow).filter_by(dataset=dataset, run_id=run_id)
            return list(s.scalars(q.order_by(StageResultRow.id)))

    def latest_stage_result(self, dataset: str, stage: str) -> StageResultRow | None:
        """Newest successful output of ``stage`` for ``dataset`` (a run may start mid-way)."""
        with self.session() as s:
            q = (select(StageResultRow)
                 .filter_by(dataset=dataset, stage=stage, status="success")
                 .order_by(StageResultRow.created_at.desc(), StageResultRow.id.desc()).limit(1))
            return s.scalar(q)

    # ---- incremental source state -------------------------------------------------------------
    def source_state(self, dataset: str, source: str,
                     exclude_run: str | None = None) -> dict[str, Any]:
        """Newest committed state of ``source`` ({} before the first committed run).

        ``exclude_run`` ignores what that run committed, so re-running a run that already
        committed starts from the same state as its first attempt (idempotent reruns)."""
        with self.session() as s:
            q = select(SourceStateRow).filter_by(dataset=dataset, source=source,
                                                 status="committed")
            if exclude_run is not None:
                q = q.where(SourceStateRow.run_id != exclude_run)
            row = s.scalar(q.order_by(SourceStateRow.committed_at.desc(),
                                      SourceStateRow.id.desc()).limit(1))
            return dict(row.state) if row is not None else {}

    def stage_source_states(self, dataset: str, run_id: str,
                            states: dict[str, dict[str, Any]]) -> None:
        """Record what ``run_id`` would advance each source to; nothing is visible yet."""
        def write(s: Session) -> None:
            for source, state in states.items():
                row = s.scalar(select(SourceStateRow).filter_by(
                    dataset=dataset, source=source, run_id=run_id))
                if row is None:
                    s.add(SourceStateRow(dataset=dataset, source=source, run_id=run_id,
                                         status="pending", state=state, created_at=_now()))
                else:
                    row.state = state

        self._write(f"source state {dataset}/{run_id}", write)

    def commit_source_states(self, dataset: str, run_id: str) -> int:
        """Make the run's staged states current; returns how many sources advanced."""
        def write(s: Session) -> int:
            rows = list(s.scalars(select(SourceStateRow).filter_by(
                dataset=dataset, run_id=run_id, status="pending")))
            for row in rows:
                row.status, row.committed_at = "committed", _now()
            return len(rows)

        count: int = self._write(f"commit source state {dataset}/{run_id}", write)
        return count
