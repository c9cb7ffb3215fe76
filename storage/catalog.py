"""The catalog repository: datasets, runs, stage results and versions in one SQL database.

SQLite under the Granary home by default, PostgreSQL in production and CI. Every write is an
upsert keyed by natural keys (dataset, run id, stage, version), so a retried task leaves one row.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, delete, event, func, inspect, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from storage.faults import fault_point
from storage.models import (
    DatasetRow,
    EvaluationRow,
    ReleaseEventRow,
    RunFailureRow,
    RunRow,
    SourceStateRow,
    StageResultRow,
    VersionRow,
)

MIGRATIONS = Path(__file__).with_name("migrations")


class CatalogError(RuntimeError):
    """The catalog database could not be reached or refused a write."""


class CatalogMissing(CatalogError):
    """There is no catalog where one was looked for (nothing is created by looking)."""


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL (None for other databases or in-memory SQLite)."""
    if not url.startswith("sqlite"):
        return None
    path = url.split("///", 1)[-1] if "///" in url else ""
    return Path(path) if path and path != ":memory:" else None


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


@dataclass(frozen=True)
class Version:
    dataset: str
    version: int
    tag: str
    git_rev: str
    dvc_md5: str
    content_hash: str
    row_count: int
    run_id: str
    files: dict[str, Any]
    quality: dict[str, Any]
    created_at: datetime
    deprecated: dict[str, Any] | None = None  # {"by", "reason", "at"} while deprecated

    @property
    def ref(self) -> str:
        return f"{self.dataset}@v{self.version}"


@dataclass(frozen=True)
class ReleaseEvent:
    dataset: str
    version: int
    action: str       # publish | deprecate | undeprecate | rollback
    actor: str
    reason: str
    created_at: datetime


def _now() -> datetime:
    return datetime.now(UTC)


def _to_version(row: VersionRow) -> Version:
    return Version(row.dataset, row.version, row.tag, row.git_rev, row.dvc_md5, row.content_hash,
                   row.row_count, row.run_id, dict(row.files or {}), dict(row.quality or {}),
                   row.created_at, dict(row.deprecated) if row.deprecated else None)


class ReleaseError(ValueError):
    """A deprecation or rollback that cannot be done as asked; the message says why."""


class Catalog:
    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        kwargs: dict[str, Any] = {"echo": echo, "future": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 30}
            Path(url.split("///", 1)[-1]).parent.mkdir(parents=True, exist_ok=True)
        else:
            kwargs["pool_pre_ping"] = True
        self.engine: Engine = create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._session = sessionmaker(self.engine, expire_on_commit=False)
        # single-statement reads on the web app's hot paths: no BEGIN and ROLLBACK around
        # each one, and on PostgreSQL no ping before each checkout (three of the four round
        # trips a pooled read cost). A connection the server dropped fails one read, and
        # SQLAlchemy then replaces every pooled connection older than the failure.
        self.reader: Engine = (
            create_engine(url, future=True, isolation_level="AUTOCOMMIT", pool_size=10)
            if url.startswith("postgresql")
            else self.engine.execution_options(isolation_level="AUTOCOMMIT"))
        self._read_session = sessionmaker(self.reader, expire_on_commit=False)

    # ---- schema ------------------------------------------------------------------------------
    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (idempotent)."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        try:
            with self.engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        except OperationalError as e:
            raise CatalogError(f"cannot migrate the catalog at {self.safe_url}: {e.orig}") from e

    def require(self) -> None:
        """Raise CatalogMissing unless the database holds a Granary catalog (its schema has
        been created by :meth:`migrate`): readers check first, and never create one."""
        try:
            with self.reader.connect() as conn:
                found = inspect(conn).has_table("alembic_version")
        except OperationalError as e:
            raise CatalogError(f"cannot open the catalog at {self.safe_url}: {e.orig}") from e
        if not found:
            raise CatalogMissing(f"the database at {self.safe_url} holds no Granary catalog")

    @property
    def safe_url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    def session(self) -> Session:
        return self._session()

    def _write(self, what: str, fn: Any) -> Any:
        try:
            with self.session() as s, s.begin():
                return fn(s)
        except OperationalError as e:
            raise CatalogError(
                f"catalog write failed ({what}) at {self.safe_url}: {e.orig}. "
                "Is the database running and migrated (`granary up`)?"
            ) from e

    # ---- datasets ----------------------------------------------------------------------------
    def upsert_dataset(self, name: str, **fields: Any) -> None:
        def write(s: Session) -> None:
            row = s.get(DatasetRow, name)
            if row is None:
                row = DatasetRow(name=name, title=fields.get("title", name), updated_at=_now())
                s.add(row)
            for k, v in fields.items():
                setattr(row, k, v)
            row.updated_at = _now()

        self._write(f"dataset {name}", write)

    def search(self, q: str = "", *, domain: str = "", modality: str = "", task: str = "",
               language: str = "", licence: str = "", grade: str = "", min_rows: int = 0,
               max_rows: int | None = None) -> list[tuple[DatasetRow, Version | None]]:
        """Datasets whose name, title, description or tags hold ``q`` (case-insensitive),
        matching every filter given; with their latest version. ``grade`` means that grade
        or better; the size filters apply to the latest version's records."""
        with self.session() as s:
            query = select(DatasetRow)
            if q:
                like = f"%{q.lower()}%"
                query = query.where(func.lower(DatasetRow.name).like(like)
                                    | func.lower(DatasetRow.title).like(like)
                                    | func.lower(DatasetRow.description).like(like)
                                    | func.lower(DatasetRow.tags).like(like))
            for column, value in ((DatasetRow.domain, domain), (DatasetRow.modality, modality),
                                  (DatasetRow.task, task), (DatasetRow.licence, licence)):
                if value:
                    query = query.where(func.lower(column) == value.lower())
            rows = list(s.scalars(query.order_by(DatasetRow.name)))
        out = []
        for row in rows:
            if language and language.lower() not in (row.language or "").lower().split(","):
                continue
            latest = self.latest(row.name)
            size = latest.row_count if latest else 0
            if grade and not (latest and str(latest.quality.get("grade") or "Z") <= grade):
                continue
            if size < min_rows or (max_rows is not None and size > max_rows):
                continue
            out.append((row, latest))
        return out

    def datasets(self) -> list[DatasetRow]:
        with self.session() as s:
            return list(s.scalars(select(DatasetRow).order_by(DatasetRow.name)))

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

    # ---- versions ----------------------------------------------------------------------------
    def next_version(self, dataset: str) -> int:
        with self.session() as s:
            current = s.scalar(select(func.max(VersionRow.version)).filter_by(dataset=dataset))
            return int(current or 0) + 1

    def add_version(self, v: Version) -> Version:
        """Insert the version, or return the one this run already published (idempotent)."""

        def write(s: Session) -> Version:
            existing = s.scalar(select(VersionRow).filter_by(dataset=v.dataset, run_id=v.run_id))
            if existing is not None:
                return _to_version(existing)
            row = VersionRow(dataset=v.dataset, version=v.version, tag=v.tag, git_rev=v.git_rev,
                             dvc_md5=v.dvc_md5, content_hash=v.content_hash,
                             row_count=v.row_count, run_id=v.run_id, files=v.files,
                             quality=v.quality, created_at=v.created_at)
            s.add(row)
            dataset = s.get(DatasetRow, v.dataset)
            if dataset is not None:
                dataset.latest_version = None  # a new version is the latest again
            s.add(ReleaseEventRow(dataset=v.dataset, version=v.version, action="publish",
                                  actor="granary", reason=f"run {v.run_id}",
                                  created_at=v.created_at))
            s.flush()
            fault_point("catalog.version_row")  # in the transaction, before its commit
            return _to_version(row)

        return self._write(f"version {v.ref}", write)

    def version_for_run(self, dataset: str, run_id: str) -> Version | None:
        with self.session() as s:
            row = s.scalar(select(VersionRow).filter_by(dataset=dataset, run_id=run_id))
            return _to_version(row) if row else None

    def versions(self, dataset: str) -> list[Version]:
        with self.session() as s:
            return _versions(s, dataset)

    def get_version(self, dataset: str, version: int | None = None) -> Version | None:
        """A version by number, or the newest one when ``version`` is None."""
        with self.session() as s:
            q = select(VersionRow).filter_by(dataset=dataset)
            if version is None:
                q = q.order_by(VersionRow.version.desc()).limit(1)
            else:
                q = q.filter_by(version=version)
            row = s.scalar(q)
            return _to_version(row) if row else None

    def latest(self, dataset: str) -> Version | None:
        """What "latest" means to consumers: the version a rollback pinned, else the newest
        version that is not deprecated, else the newest."""
        with self.session() as s:
            row = s.get(DatasetRow, dataset)
            pinned = row.latest_version if row is not None else None
        return pick_latest(self.versions(dataset), pinned)

    def dataset_record(self, name: str) -> tuple[DatasetRow, list[Version],
                                                  list[ReleaseEvent]] | None:
        """A dataset's row, versions (oldest first) and release history in one read (the
        release API's answer), or None when the catalog does not know it."""
        with self._read_session() as s:
            row = s.get(DatasetRow, name)
            if row is None:
                return None
            return row, _versions(s, name), _release_events(s, name)

    def deprecate(self, dataset: str, version: int, actor: str, reason: str,
                  *, undo: bool = False) -> Version:
        """Flag a version deprecated (kept, shown, warned about on download), or lift the
        flag with ``undo``; recorded with who and why."""
        if not reason.strip() or not actor.strip():
            raise ReleaseError("say who is deprecating and why (actor and reason)")

        def write(s: Session) -> Version:
            row = s.scalar(select(VersionRow).filter_by(dataset=dataset, version=version))
            if row is None:
                raise ReleaseError(f"{dataset} has no version {version}")
            if undo and row.deprecated is None:
                raise ReleaseError(f"{dataset}@v{version} is not deprecated")
            row.deprecated = None if undo else {"by": actor, "reason": reason,
                                                "at": _now().isoformat()}
            ds = s.get(DatasetRow, dataset)
            if not undo and ds is not None and ds.latest_version == version:
                ds.latest_version = None  # a deprecated version stops being pinned latest
            s.add(ReleaseEventRow(dataset=dataset, version=version,
                                  action="undeprecate" if undo else "deprecate", actor=actor,
                                  reason=reason, created_at=_now()))
            s.flush()
            return _to_version(row)

        result: Version = self._write(f"deprecate {dataset}@v{version}", write)
        return result

    def set_latest(self, dataset: str, version: int, actor: str, reason: str) -> Version:
        """Pin "latest" to ``version`` (a rollback); recorded with who and why."""
        if not reason.strip() or not actor.strip():
            raise ReleaseError("say who is rolling back and why (actor and reason)")

        def write(s: Session) -> Version:
            row = s.scalar(select(VersionRow).filter_by(dataset=dataset, version=version))
            if row is None:
                raise ReleaseError(f"{dataset} has no version {version}")
            if row.deprecated is not None:
                why = row.deprecated.get("reason", "")
                raise ReleaseError(f"{dataset}@v{version} is deprecated ({why}); lift that "
                                   "first (granary deprecate --undo) or pick another version")
            ds = s.get(DatasetRow, dataset)
            if ds is None:
                raise ReleaseError(f"no dataset {dataset}")
            ds.latest_version = version
            s.add(ReleaseEventRow(dataset=dataset, version=version, action="rollback",
                                  actor=actor, reason=reason, created_at=_now()))
            s.flush()
            return _to_version(row)

        result: Version = self._write(f"rollback {dataset} to v{version}", write)
        return result

    def release_events(self, dataset: str) -> list[ReleaseEvent]:
        """The release history of ``dataset``, oldest first."""
        with self.session() as s:
            return _release_events(s, dataset)

    # ---- quality evaluations (candidates and the value curve) -------------------------------
    def set_health(self, dataset: str, health: dict[str, Any]) -> None:
        """What the maintenance run found about ``dataset`` (replaces the previous finding)."""
        def write(s: Session) -> None:
            row = s.get(DatasetRow, dataset)
            if row is not None:
                row.health = health

        self._write(f"health of {dataset}", write)

    def record_evaluation(self, dataset: str, run_id: str, *, passed: bool, grade: str,
                          score: float, row_count: int, summary: dict[str, Any],
                          report_uri: str) -> None:
        """Record (or replace, on a retry) the evaluation of a run as a candidate."""
        def write(s: Session) -> None:
            row = s.scalar(select(EvaluationRow).filter_by(dataset=dataset, run_id=run_id))
            if row is None:
                row = EvaluationRow(dataset=dataset, run_id=run_id, status="candidate")
                s.add(row)
            row.passed, row.grade, row.score, row.row_count = passed, grade, score, row_count
            row.summary, row.report_uri, row.created_at = summary, report_uri, _now()

        self._write(f"evaluation {dataset}/{run_id}", write)

    def mark_published(self, dataset: str, run_id: str, version: int,
                       status: str = "published", graded: dict[str, Any] | None = None) -> None:
        """The run's evaluation is of ``version``: it published it, or (status
        ``reevaluated``) it re-evaluated it under changed rules, beside the old evaluation.
        ``graded``: the grade, score, dimensions and dimensions not measured once publishing
        measured the release (accessibility), which replace the evaluation's."""
        def write(s: Session) -> None:
            row = s.scalar(select(EvaluationRow).filter_by(dataset=dataset, run_id=run_id))
            if row is not None:
                row.status, row.version = status, version
                if graded is not None:
                    row.grade, row.score = graded["grade"], graded["score"]
                    row.summary = {**(row.summary or {}), "grade": graded["grade"],
                                   "score": graded["score"],
                                   "dimensions": graded["dimensions"],
                                   "notMeasured": graded["not_measured"]}

        self._write(f"evaluation {dataset}/{run_id}", write)

    def evaluations(self, dataset: str, status: str | None = None) -> list[EvaluationRow]:
        """Evaluations oldest first: the value curve (and, with status='candidate', the
        versions that were not published)."""
        with self.session() as s:
            q = select(EvaluationRow).filter_by(dataset=dataset)
            if status is not None:
                q = q.filter_by(status=status)
            return list(s.scalars(q.order_by(EvaluationRow.created_at, EvaluationRow.id)))

    def evaluation(self, dataset: str, run_id: str) -> EvaluationRow | None:
        with self.session() as s:
            return s.scalar(select(EvaluationRow).filter_by(dataset=dataset, run_id=run_id))

    def dispose(self) -> None:
        self.engine.dispose()
        self.reader.dispose()


def _versions(s: Session, dataset: str) -> list[Version]:
    rows = s.scalars(select(VersionRow).filter_by(dataset=dataset).order_by(VersionRow.version))
    return [_to_version(r) for r in rows]


def _release_events(s: Session, dataset: str) -> list[ReleaseEvent]:
    rows = s.scalars(select(ReleaseEventRow).filter_by(dataset=dataset)
                     .order_by(ReleaseEventRow.created_at, ReleaseEventRow.id))
    return [ReleaseEvent(r.dataset, r.version, r.action, r.actor, r.reason, r.created_at)
            for r in rows]


def pick_latest(versions: list[Version], pinned: int | None) -> Version | None:
    """"Latest" among a dataset's ``versions`` (oldest first): the one a rollback ``pinned``,
    else the newest that is not deprecated, else the newest."""
    for v in reversed(versions):
        if v.version == pinned:
            return v
    live = [v for v in versions if v.deprecated is None] or versions
    return live[-1] if live else None


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()
