"""What the `granary` command's modules share: the settings, the catalog, who acts, and
dataset references (DATASET@vN)."""

from __future__ import annotations

import re
from typing import Any

import typer

from granary.settings import Settings, load_settings


def settings() -> Settings:
    return load_settings()


def catalog(migrate: bool = False) -> Any:
    """The catalog, for a command that reads it: a clear error, saying where it looked and
    what to do, when there is none (nothing is created by looking)."""
    from granary.runtime import existing_catalog

    cat = existing_catalog(settings())
    if migrate:  # an older catalog gains the newer tables; an existing one only
        cat.migrate()
    return cat


def actor(by: str | None) -> str:
    import getpass

    return by or getpass.getuser()


def parse_ref(ref: str) -> tuple[str, int | None]:
    m = re.fullmatch(r"([a-z][a-z0-9_]*)(?:@(?:v?(\d+)|latest))?", ref)
    if not m:
        raise typer.BadParameter(f"{ref!r}: use DATASET@vN, DATASET@N or DATASET@latest")
    return m.group(1), int(m.group(2)) if m.group(2) else None
