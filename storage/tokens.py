"""Access tokens of the web app and its APIs, kept in the catalog.

A token reads ``gra_<id>_<secret>``: ``id`` (8 hex digits) finds its row, ``secret`` is 32
random bytes from :mod:`secrets`. Only the SHA-256 of the whole token is stored. A slow
password hash (bcrypt, scrypt) protects guessable passwords; a 256-bit random secret cannot be
guessed, so one SHA-256 is as safe and keeps every request's check to one indexed lookup.

Scopes nest: ``read`` (see and download), ``write`` (also post lineage events, deprecate and
roll back versions), ``admin`` (also every restricted dataset). A restricted dataset is visible
to admin tokens and to the tokens granted it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import cast

from sqlalchemy import Table, select, update
from sqlalchemy.orm import Session

from storage.catalog import Catalog
from storage.models import ApiTokenRow, DatasetRow, TokenGrantRow

SCOPES = ("read", "write", "admin")
PREFIX = "gra_"
TOKEN_RE = re.compile(r"^gra_([0-9a-f]{8})_([A-Za-z0-9_-]{43})$")
# a token's last use is written at most this often (reads should not each cost a write)
LAST_USED_EVERY = timedelta(minutes=1)


class TokenError(ValueError):
    """A token command that cannot be done as asked; the message says why."""


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: a token, or the service key of the lineage transport."""

    name: str
    scope: str
    token_id: str | None = None
    granted: frozenset[str] = field(default_factory=frozenset)

    def allows(self, scope: str) -> bool:
        return SCOPES.index(self.scope) >= SCOPES.index(scope)

    def sees(self, dataset: str, access: str) -> bool:
        return access != "restricted" or self.scope == "admin" or dataset in self.granted


@dataclass(frozen=True)
class TokenInfo:
    id: str
    name: str
    scope: str
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    datasets: tuple[str, ...]

    @property
    def state(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and _aware(self.expires_at) <= _now():
            return "expired"
        return "active"


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Tokens:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def create(self, name: str, scope: str, *, datasets: list[str] | None = None,
               days: float | None = 90, created_by: str = "") -> tuple[TokenInfo, str]:
        """A new token; returns its record and the token itself (shown once, never stored)."""
        if scope not in SCOPES:
            raise TokenError(f"unknown scope {scope!r}: use one of {', '.join(SCOPES)}")
        if not name.strip():
            raise TokenError("a token needs a name (who or what uses it)")
        if days is not None and days <= 0:
            raise TokenError(f"--days must be positive, got {days:g} (omit it for no expiry)")
        token_id = secrets.token_hex(4)
        token = f"{PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
        now = _now()

        def write(s: Session) -> None:
            s.add(ApiTokenRow(id=token_id, name=name.strip(), scope=scope,
                              token_hash=digest(token), created_by=created_by, created_at=now,
                              expires_at=now + timedelta(days=days) if days else None))
            s.flush()
            for d in sorted(set(datasets or [])):
                s.add(TokenGrantRow(token_id=token_id, dataset=d, created_at=now))

        self.catalog._write(f"token {name}", write)
        return self.get(token_id), token

    def get(self, token_id: str) -> TokenInfo:
        with self.catalog.session() as s:
            row = s.get(ApiTokenRow, token_id)
            if row is None:
                raise TokenError(f"no token {token_id} (list them: `granary token list`)")
            return self._info(s, row)

    def list(self) -> list[TokenInfo]:
        with self.catalog.session() as s:
            rows = list(s.scalars(select(ApiTokenRow).order_by(ApiTokenRow.created_at)))
            return [self._info(s, r) for r in rows]

    def revoke(self, token_id: str) -> TokenInfo:
        def write(s: Session) -> None:
            row = s.get(ApiTokenRow, token_id)
            if row is None:
                raise TokenError(f"no token {token_id} (list them: `granary token list`)")
            if row.revoked_at is None:
                row.revoked_at = _now()

        self.catalog._write(f"revoke token {token_id}", write)
        return self.get(token_id)

    def grant(self, token_id: str, dataset: str, *, undo: bool = False) -> TokenInfo:
        def write(s: Session) -> None:
            if s.get(ApiTokenRow, token_id) is None:
                raise TokenError(f"no token {token_id} (list them: `granary token list`)")
            found = s.get(TokenGrantRow, (token_id, dataset))
            if undo and found is not None:
                s.delete(found)
            elif not undo and found is None:
                s.add(TokenGrantRow(token_id=token_id, dataset=dataset, created_at=_now()))

        self.catalog._write(f"grant {dataset} to token {token_id}", write)
        return self.get(token_id)

    def verify(self, token: str) -> Principal | None:
        """The principal of an active token, or None for a malformed, unknown, wrong, expired
        or revoked one (the caller answers all of them alike). One read, in SQLAlchemy Core:
        every request pays for it (an ORM session cost twice as much here)."""
        m = TOKEN_RE.match(token)
        if m is None:
            return None
        now = _now()
        tokens, grants = cast(Table, ApiTokenRow.__table__), TokenGrantRow.__table__
        with self.catalog.reader.connect() as conn:
            rows = conn.execute(
                select(tokens.c.name, tokens.c.scope, tokens.c.token_hash, tokens.c.expires_at,
                       tokens.c.revoked_at, tokens.c.last_used_at, grants.c.dataset)
                .select_from(tokens.outerjoin(grants, grants.c.token_id == tokens.c.id))
                .where(tokens.c.id == m.group(1))).all()
            if not rows or not hmac.compare_digest(rows[0].token_hash, digest(token)):
                return None
            row = rows[0]
            if row.revoked_at is not None or (row.expires_at is not None
                                              and _aware(row.expires_at) <= now):
                return None
            if row.last_used_at is None or _aware(row.last_used_at) < now - LAST_USED_EVERY:
                conn.execute(update(tokens).where(tokens.c.id == m.group(1))
                             .values(last_used_at=now))  # autocommit
        return Principal(name=row.name, scope=row.scope, token_id=m.group(1),
                         granted=frozenset(r.dataset for r in rows if r.dataset))

    def _info(self, s: Session, row: ApiTokenRow) -> TokenInfo:
        granted = tuple(s.scalars(select(TokenGrantRow.dataset).filter_by(token_id=row.id)
                                  .order_by(TokenGrantRow.dataset)))
        return TokenInfo(id=row.id, name=row.name, scope=row.scope, created_by=row.created_by,
                         created_at=row.created_at, expires_at=row.expires_at,
                         revoked_at=row.revoked_at, last_used_at=row.last_used_at,
                         datasets=granted)


def restricted(catalog: Catalog) -> set[str]:
    """The names of the catalog's restricted datasets."""
    table = DatasetRow.__table__
    with catalog.reader.connect() as conn:
        return set(conn.scalars(select(table.c.name).where(table.c.access == "restricted")))


def access_of(catalog: Catalog, dataset: str) -> str | None:
    """A dataset's access, or None when the catalog does not know it."""
    table = DatasetRow.__table__
    with catalog.reader.connect() as conn:
        found: str | None = conn.scalar(select(table.c.access).where(table.c.name == dataset))
        return found
