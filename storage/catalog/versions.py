"""The catalog's datasets and their versions: what a dataset is, the versions it published, their
release history (deprecations, rollbacks: what "latest" means), and the quality evaluations
of its runs (candidates and the value curve).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.catalog.database import Database, _now
from storage.faults import fault_point
from storage.models import DatasetRow, EvaluationRow, ReleaseEventRow, VersionRow


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


def _to_version(row: VersionRow) -> Version:
    return Version(row.dataset, row.version, row.tag, row.git_rev, row.dvc_md5, row.content_hash,
                   row.row_count, row.run_id, dict(row.files or {}), dict(row.quality or {}),
                   row.created_at, dict(row.deprecated) if row.deprecated else None)


class ReleaseError(ValueError):
    """A deprecation or rollback that cannot be done as asked; the message says why."""


class Versions(Database):
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
