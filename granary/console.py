"""The CLI's consoles and the small helpers every command uses (kept apart so the command
modules share them without importing each other)."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console()
err = Console(stderr=True)


def table(*columns: str, title: str | None = None) -> Table:
    """A table whose cells wrap instead of being cut with an ellipsis (ids must stay whole)."""
    t = Table(title=title)
    for c in columns:
        t.add_column(c, overflow="fold")
    return t


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``message`` (plain text, never cut) as an error and end the command with exit
    code ``code``."""
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True, highlight=False)
    raise typer.Exit(code)
