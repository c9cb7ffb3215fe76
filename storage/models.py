"""Catalog tables (SQLAlchemy 2). Schema changes go through an Alembic migration."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class DatasetRow(Base):
    __tablename__ = "datasets"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    title: Mapped[str] = mapped_column(String(500))
    description: Mapped[str] = mapped_column(Text, default="")
    domain: Mapped[str] = mapped_column(String(200), default="")
    modality: Mapped[str] = mapped_column(String(50), default="text")
    task: Mapped[str] = mapped_column(String(200), default="")
    licence: Mapped[str] = mapped_column(String(200), default="")
    language: Mapped[str] = mapped_column(String(200), default="")  # comma-separated codes
    tags: Mapped[str] = mapped_column(String(1000), default="")     # comma-separated
    # a rollback pins "latest" to an earlier version; None: the newest version not deprecated
    latest_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    spec_hash: Mapped[str] = mapped_column(String(64), default="")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # what the daily maintenance found: {checked_at, stale, ledger_ok, findings, pruned, ...}
    health: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # "public": every token with read scope sees it; "restricted": only admin tokens and tokens
    # granted the dataset (TokenGrantRow) see it, its pages, files and lineage
    access: Mapped[str] = mapped_column(String(20), default="public")


class RunRow(Base):
    __tablename__ = "runs"
    __table_args__ = (UniqueConstraint("dataset", "run_id", name="uq_runs_dataset_run"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataset: Mapped[str] = mapped_column(ForeignKey("datasets.name"), index=True)
    run_id: Mapped[str] = mapped_column(String(250))
    mode: Mapped[str] = mapped_column(String(20), default="full")
    status: Mapped[str] = mapped_column(String(20), default="running")
    message: Mapped[str] = mapped_column(Text, default="")
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class RunFailureRow(Base):
    """Why a task of a run failed: the stage, the task (and mapped index), the exception's
    type and message (bounded, secrets masked) and, where the code raising it knew them, the
    record, field, file and source. One row per task instance: a retry that fails again
    replaces it (``will_retry`` says whether Airflow was to try again)."""

    __tablename__ = "run_failures"
    __table_args__ = (UniqueConstraint("dataset", "run_id", "task_id", "map_index",
                                       name="uq_run_failures_task"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # no foreign key: a run can fail before its dataset is registered (a broken spec)
    dataset: Mapped[str] = mapped_column(String(200), index=True)
    run_id: Mapped[str] = mapped_column(String(250))
    task_id: Mapped[str] = mapped_column(String(250))
    map_index: Mapped[int] = mapped_column(Integer, default=-1)
    try_number: Mapped[int] = mapped_column(Integer, default=1)
    will_retry: Mapped[bool] = mapped_column(Boolean, default=False)
    stage: Mapped[str | None] = mapped_column(String(50), nullable=True)
    error_type: Mapped[str] = mapped_column(String(200))
    message: Mapped[str] = mapped_column(Text)
    record_id: Mapped[str | None] = mapped_column(String(250), nullable=True)
    field: Mapped[str | None] = mapped_column(String(250), nullable=True)
    file: Mapped[str | None] = mapped_column(Text, nullable=True)
    # further context: source, line, the mapped unit's label
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class StageResultRow(Base):
    __tablename__ = "stage_results"
    __table_args__ = (
        UniqueConstraint("dataset", "run_id", "stage", name="uq_stage_results_run_stage"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataset: Mapped[str] = mapped_column(ForeignKey("datasets.name"), index=True)
    run_id: Mapped[str] = mapped_column(String(250))
    stage: Mapped[str] = mapped_column(String(50))
    status: Mapped[str] = mapped_column(String(20))
    output_uri: Mapped[str] = mapped_column(Text, default="")
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class VersionRow(Base):
    __tablename__ = "versions"
    __table_args__ = (
        UniqueConstraint("dataset", "version", name="uq_versions_dataset_version"),
        UniqueConstraint("dataset", "run_id", name="uq_versions_dataset_run"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataset: Mapped[str] = mapped_column(ForeignKey("datasets.name"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    tag: Mapped[str] = mapped_column(String(250))
    git_rev: Mapped[str] = mapped_column(String(64))
    dvc_md5: Mapped[str] = mapped_column(String(64), default="")
    content_hash: Mapped[str] = mapped_column(String(64))
    row_count: Mapped[int] = mapped_column(Integer)
    run_id: Mapped[str] = mapped_column(String(250))
    files: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    quality: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # {"by", "reason", "at"} while the version is deprecated; kept, flagged, warned about
    deprecated: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class ReleaseEventRow(Base):
    """What was done to a published version and by whom: publish, deprecate, undeprecate,
    rollback (append-only)."""

    __tablename__ = "release_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataset: Mapped[str] = mapped_column(ForeignKey("datasets.name"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(20))
    actor: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class EvaluationRow(Base):
    """The quality evaluation of one run. ``status`` is ``candidate`` until the run publishes
    (then ``published`` with its version); a candidate that failed its gate stays one, with
    its report, and is never published."""

    __tablename__ = "evaluations"
    __table_args__ = (UniqueConstraint("dataset", "run_id", name="uq_evaluations_run"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataset: Mapped[str] = mapped_column(ForeignKey("datasets.name"), index=True)
    run_id: Mapped[str] = mapped_column(String(250))
    status: Mapped[str] = mapped_column(String(20))
    passed: Mapped[bool] = mapped_column(Boolean)
    grade: Mapped[str] = mapped_column(String(1))
    score: Mapped[float] = mapped_column(Float)
    row_count: Mapped[int] = mapped_column(Integer)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    report_uri: Mapped[str] = mapped_column(Text)
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SourceStateRow(Base):
    """What collection has seen of one source (hashes, watermark, ETags, schema).

    A run stages its state as ``pending``; it becomes ``committed`` only when the run succeeds,
    and the next run starts from the newest committed state."""

    __tablename__ = "source_states"
    __table_args__ = (UniqueConstraint("dataset", "source", "run_id",
                                       name="uq_source_states_run"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataset: Mapped[str] = mapped_column(ForeignKey("datasets.name"), index=True)
    source: Mapped[str] = mapped_column(String(200))
    run_id: Mapped[str] = mapped_column(String(250))
    status: Mapped[str] = mapped_column(String(20))
    state: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    committed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class LineageEventRow(Base):
    """One OpenLineage event as received (append-only; never updated)."""

    __tablename__ = "lineage_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_key: Mapped[str] = mapped_column(String(64), unique=True)
    event_type: Mapped[str] = mapped_column(String(16))
    event_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    run_id: Mapped[str] = mapped_column(String(64), index=True)
    job_namespace: Mapped[str] = mapped_column(String(500))
    job_name: Mapped[str] = mapped_column(String(1000))
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class LineageRunRow(Base):
    __tablename__ = "lineage_runs"

    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    job_namespace: Mapped[str] = mapped_column(String(500))
    job_name: Mapped[str] = mapped_column(String(1000))
    state: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    parent_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    parent_job_name: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    facets: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class LineageIORow(Base):
    """A dataset a run read (``in``) or wrote (``out``), with its version and facets."""

    __tablename__ = "lineage_io"
    __table_args__ = (UniqueConstraint("run_id", "namespace", "name", "direction",
                                       name="uq_lineage_io"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(64), index=True)
    namespace: Mapped[str] = mapped_column(String(500))
    name: Mapped[str] = mapped_column(String(1000))
    direction: Mapped[str] = mapped_column(String(6))
    version: Mapped[str | None] = mapped_column(String(200), nullable=True)
    facets: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    event_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ApiTokenRow(Base):
    """An access token of the web app and APIs. Only the token's SHA-256 is stored; the token
    itself is shown once, when it is created."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    scope: Mapped[str] = mapped_column(String(10))  # read | write | admin
    token_hash: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                          nullable=True)


class TokenGrantRow(Base):
    """A restricted dataset a token may see and download."""

    __tablename__ = "token_grants"

    token_id: Mapped[str] = mapped_column(ForeignKey("api_tokens.id"), primary_key=True)
    dataset: Mapped[str] = mapped_column(String(200), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
