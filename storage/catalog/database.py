"""The catalog's database: its engines and sessions, its schema (Alembic migrations), and the one
way every write goes (``_write``: one transaction, a database that is down said as such).

SQLite under the Granary home by default, PostgreSQL in production and CI. The catalog's
parts (storage/catalog/runs.py, versions.py) build on :class:`Database`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent.with_name("migrations")


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


def _now() -> datetime:
    return datetime.now(UTC)


class Database:
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

    def dispose(self) -> None:
        self.engine.dispose()
        self.reader.dispose()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()
