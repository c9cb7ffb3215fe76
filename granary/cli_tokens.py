"""`granary token`: create, list, revoke and grant the access tokens of the web app and its
APIs (added to the `granary` command by granary/cli.py)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from granary.cli_common import actor as _actor
from granary.cli_common import catalog as _catalog
from granary.console import console, err
from granary.console import fail as _fail
from granary.console import table as _table

token_app = typer.Typer(no_args_is_help=True, help="Access tokens of the web app and its APIs "
                        "(scopes read < write < admin; see docs/security.md).")


def tokens() -> Any:
    from storage.tokens import Tokens

    return Tokens(_catalog(migrate=True))


def _when(t: Any) -> str:
    return t.strftime("%Y-%m-%d %H:%M") if t else "-"


@token_app.command("create")
def token_create(
        name: Annotated[str, typer.Option(help="who or what uses the token")],
        scope: Annotated[str, typer.Option(help="read, write or admin")] = "read",
        dataset: Annotated[list[str] | None, typer.Option(
            "--dataset", help="a restricted dataset the token may see (repeatable)")] = None,
        days: Annotated[float, typer.Option(help="days until it expires; 0 = never")] = 90,
        by: Annotated[str | None, typer.Option(help="who creates it (default: you)")] = None,
) -> None:
    """Create a token and print it once: only its hash is kept."""
    from storage.tokens import TokenError

    try:
        info, token = tokens().create(name, scope, datasets=dataset or [],
                                       days=days or None, created_by=_actor(by))
    except TokenError as e:
        _fail(str(e))
    err.print(f"token {info.id} ({info.scope}) for {info.name}, expires "
              f"{_when(info.expires_at)}" + (f", granted {', '.join(info.datasets)}"
                                             if info.datasets else "")
              + ". Keep it now: it is not shown again.")
    print(token)


@token_app.command("list")
def token_list() -> None:
    """List tokens (never the tokens themselves): scope, state, grants, last use."""
    table = _table("id", "name", "scope", "state", "datasets", "created (UTC)", "by",
                   "expires", "last used")
    for t in tokens().list():
        table.add_row(t.id, t.name, t.scope, t.state, ", ".join(t.datasets) or "-",
                      _when(t.created_at), t.created_by or "-", _when(t.expires_at),
                      _when(t.last_used_at))
    console.print(table)


@token_app.command("revoke")
def token_revoke(token_id: Annotated[str, typer.Argument(help="the id from `token list`")]) -> None:
    """Revoke a token: every request with it is refused from now on."""
    from storage.tokens import TokenError

    try:
        info = tokens().revoke(token_id)
    except TokenError as e:
        _fail(str(e))
    console.print(f"token {info.id} ({info.name}) revoked at {_when(info.revoked_at)} UTC")


@token_app.command("grant")
def token_grant(token_id: str, dataset: str,
                undo: Annotated[bool, typer.Option("--undo", help="take the grant back")] = False
                ) -> None:
    """Let a token see a restricted DATASET (or, with --undo, no longer)."""
    from storage.tokens import TokenError

    try:
        info = tokens().grant(token_id, dataset, undo=undo)
    except TokenError as e:
        _fail(str(e))
    console.print(f"token {info.id} ({info.name}) now sees: "
                  f"{', '.join(info.datasets) or 'no restricted dataset'}")
