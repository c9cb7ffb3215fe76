"""`granary`: the command line front door (Typer).

The stack, spec, run and demo commands are here; the commands on the catalog and its versions
are in granary/cli_versions.py, the token commands in granary/cli_tokens.py, and what they
share (settings, catalog, dataset references) in granary/cli_common.py."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from granary import cli_versions
from granary.cli_common import actor as _actor
from granary.cli_common import catalog as _catalog
from granary.cli_common import settings as _settings
from granary.cli_tokens import token_app, tokens
from granary.cli_versions import versions
from granary.console import console
from granary.console import fail as _fail
from granary.console import table as _table
from granary.settings import Settings
from lifecycle.spec import STAGES

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Granary: build, version and publish high-quality AI datasets.")


# ---- stack ------------------------------------------------------------------------------------
@app.command()
def up() -> None:
    """Start the local stack (S3 server and Airflow) and wait until both answer."""
    from granary.stack import LocalStack, StackError

    s = _settings()
    try:
        with console.status("starting the local stack..."):
            LocalStack(s, echo=console.print).up()
    except StackError as e:
        _fail(str(e))
    _print_where(s)


@app.command()
def down() -> None:
    """Stop the processes `granary up` started; data stays under the home."""
    from granary.stack import LocalStack

    stopped = LocalStack(_settings()).down()
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@app.command()
def status() -> None:
    """Show each component of the local stack, its URL and pid."""
    from granary.stack import LocalStack

    table = _table("component", "state", "url", "pid")
    for c in LocalStack(_settings()).status():
        table.add_row(c.name, "[green]running[/]" if c.running else "[red]stopped[/]", c.url,
                      str(c.pid or "-"))
    console.print(table)


def _print_where(s: Settings) -> None:
    console.print(f"Airflow UI: {s.api_url}  (user [bold]{s.airflow_user}[/], password in "
                  f"{s.airflow_home / 'simple_auth_manager_passwords.json'})")
    console.print(f"S3 endpoint: {s.endpoint_url}  (credentials in {s.home}/s3-credentials.json)")
    console.print(f"Granary catalog: {s.public_url}/  (sign in with a token: `granary token "
                  "create --name you`)")


@app.command()
def serve(host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
          port: Annotated[int, typer.Option(help="port")] = 8090) -> None:
    """Run the Granary web app (lineage API, schemas) on its own, outside Airflow."""
    import uvicorn

    from granary.webapp import create_app

    uvicorn.run(create_app(_settings()), host=host, port=port, log_level="info")


# ---- specs ------------------------------------------------------------------------------------
@app.command()
def check(specs: Annotated[list[Path] | None, typer.Argument(
        help="spec files or dataset names; default: every spec in the datasets folder",
        show_default=False)] = None) -> None:
    """Validate dataset specs and report every problem at once (file, line, field, fix);
    exit 1 if there is any."""
    from lifecycle.spec import check_spec

    s = _settings()
    paths = [_spec_path(s, p) for p in specs] if specs else sorted(
        [*s.datasets_dir.glob("*.yaml"), *s.datasets_dir.glob("*.yml")])
    if not paths:
        _fail(f"no spec (*.yaml) in {s.datasets_dir}; name the files to check")
    bad = 0
    problems = 0
    for path in paths:
        found = check_spec(path, inbox=s.inbox_dir)
        problems += len(found)
        bad += bool(found)
        if not found:
            console.print(f"[green]ok[/] {path}", highlight=False, soft_wrap=True)
        for problem in found:
            console.print(str(problem), markup=False, highlight=False, soft_wrap=True)
    if problems:
        _fail(f"{problems} problem{'s' if problems > 1 else ''} in {bad} of {len(paths)} "
              f"spec{'s' if len(paths) > 1 else ''}")
    console.print(f"{len(paths)} spec{'s' if len(paths) > 1 else ''} checked: no problem")


@app.command()
def profile(spec: Annotated[Path, typer.Argument(help="a spec file or dataset name")],
            reference: Annotated[Path, typer.Option(
                "--reference", help="CSV, TSV, JSONL or Parquet file to learn rules from")],
            accept: Annotated[bool, typer.Option(
                "--accept", help="merge the proposed rules into the spec file (comments "
                "kept)")] = False) -> None:
    """Propose quality rules (types, ranges, value sets, regex shapes, lengths, functional
    dependencies) learned from a reference table; print them as YAML to paste into the
    spec, or with --accept write them into it."""
    from lifecycle.errors import PermanentError
    from lifecycle.evaluate import profiling
    from lifecycle.spec import SpecError, load_spec

    path = _spec_path(_settings(), spec)
    if not path.is_file():
        _fail(f"no spec file {path}: name a spec file or a dataset of the datasets folder")
    try:
        loaded = load_spec(path).spec
        ref = profiling.typed(loaded, profiling.read_reference(reference))
    except (PermanentError, SpecError) as e:
        _fail(str(e))
    proposal = profiling.propose(loaded, ref, str(reference))
    if proposal.empty():
        console.print(f"{reference} ({proposal.rows:,} records): nothing to propose that the "
                      "spec does not already say")
        return
    if not accept:
        console.print(f"# rules proposed from {reference} ({proposal.rows:,} records); "
                      "add --accept to write them into the spec", highlight=False)
        print(proposal.yaml(), end="")
        return
    try:
        changed = profiling.accept(path, proposal)  # checked before the file is written
    except SpecError as e:
        _fail(f"the proposed rules were not written: {e}")
    console.print(f"{path}: {len(changed)} rules accepted", highlight=False)
    for line in changed:
        console.print(f"  {line}", markup=False, highlight=False)


def _spec_path(s: Settings, given: Path) -> Path:
    """A spec file as given, or the datasets folder's spec of that dataset name."""
    if given.exists() or given.suffix in (".yaml", ".yml") or len(given.parts) > 1:
        return given
    return s.datasets_dir / f"{given}.yaml"


# ---- runs -------------------------------------------------------------------------------------
def trigger_and_wait(dataset: str, mode: str = "full", first_stage: str = "collect",
                     last_stage: str = "publish", timeout: float = 1800,
                     refresh: bool = False) -> tuple[str, str]:
    """Unpause and trigger a dataset's lifecycle DAG (``refresh``: its refresh DAG), show
    progress, and return (run id, final state); see granary.clirun."""
    from granary.clirun import trigger_and_wait as trigger

    return trigger(dataset, mode, first_stage, last_stage, timeout, refresh)


def print_run(dataset: str, run_id: str, refresh: bool = False) -> None:
    """The run's stages, its version, or why it failed (each failed task's cause)."""
    from granary.clirun import print_run as show
    from lineage.naming import dag_id, refresh_dag_id

    show(_catalog(), _settings(), dataset, run_id,
         refresh_dag_id(dataset) if refresh else dag_id(dataset))


@app.command()
def run(dataset: str,
        mode: Annotated[str, typer.Option(help="full or incremental")] = "full",
        first_stage: Annotated[str, typer.Option(help="first stage to run")] = "collect",
        last_stage: Annotated[str, typer.Option(help="last stage to run")] = "publish") -> None:
    """Trigger DATASET's lifecycle DAG in Airflow and wait for it; a failed run prints why."""
    for name, value in (("--first-stage", first_stage), ("--last-stage", last_stage)):
        if value not in STAGES:
            _fail(f"{name} {value!r} is not a stage; choose one of {', '.join(STAGES)}")
    if mode not in ("full", "incremental"):
        _fail(f"--mode {mode!r}: choose full or incremental")
    run_id, state = trigger_and_wait(dataset, mode, first_stage, last_stage)
    print_run(dataset, run_id)
    if state != "success":
        _fail(f"run {run_id} ended {state}")


@app.command()
def refresh(dataset: str) -> None:
    """Trigger DATASET's refresh DAG (the published version plus what is new in its sources,
    what its schedule runs) and wait for it; a failed run prints why."""
    run_id, state = trigger_and_wait(dataset, "incremental", refresh=True)
    print_run(dataset, run_id, refresh=True)
    if state != "success":
        _fail(f"run {run_id} ended {state}")


@app.command()
def runs(dataset: str,
         run_id: Annotated[str | None, typer.Argument(
             help="one run: its stages and every failed task's cause")] = None,
         limit: Annotated[int, typer.Option(help="how many of the newest runs")] = 10) -> None:
    """List DATASET's newest runs with how each ended (a failed run: its cause), or show
    one run."""
    cat = _catalog(migrate=True)
    if run_id is None:
        from granary.clirun import print_runs

        print_runs(cat, dataset, limit)
        return
    if cat.run(dataset, run_id) is None and not cat.stage_results(dataset, run_id):
        _fail(f"the catalog has no run {run_id} of {dataset} (`granary runs {dataset}` lists "
              "them)")
    from granary.clirun import print_run as show

    show(cat, _settings(), dataset, run_id, retried=True)


# ---- catalog and versions (granary/cli_versions.py) ------------------------------------------
for _command_fn in cli_versions.COMMANDS:
    app.command()(_command_fn)


# ---- tokens (granary/cli_tokens.py) -----------------------------------------------------------
app.add_typer(token_app, name="token")


# ---- demo -------------------------------------------------------------------------------------
@app.command()
def demo() -> None:
    """Stage the sample data, start the stack, run zh_shopping_reviews and show the result."""
    from granary.demo import stage_images, stage_sample

    s = _settings()
    staged = stage_sample(s.inbox_dir)
    console.print(f"staged the sample reviews: {', '.join(str(p) for p in staged)}")
    console.print(f"staged the sample images in {stage_images(s.inbox_dir)} (trigger "
                  "granary_digit_images in the Airflow UI to build them)")
    up()
    run_id, state = trigger_and_wait("zh_shopping_reviews")
    print_run("zh_shopping_reviews", run_id)
    if state != "success":
        _fail(f"the demo run {run_id} ended {state}; see the Airflow UI")
    versions("zh_shopping_reviews")
    _print_where(s)
    info, token = tokens().create(f"demo ({_actor(None)})", "admin", days=7,
                                   created_by=_actor(None))
    console.print(f"Sign in to the Granary pages with this admin token (id {info.id}, 7 days; "
                  f"`granary token revoke {info.id}` ends it):")
    print(token)
    console.print("Stop everything with `make down` (data stays in .granary/).")


def _command() -> int:
    """Run the command line's command; its exit code."""
    from granary.airflow_client import AirflowError
    from lifecycle.errors import LifecycleError  # includes TraceError
    from lifecycle.spec import SpecError
    from storage.catalog import CatalogError
    from storage.objectstore import StorageError
    from storage.registry import RegistryError

    try:
        try:
            # without standalone mode click returns a typer.Exit's code instead of raising it
            code = app(standalone_mode=False)
        except (AirflowError, LifecycleError, SpecError, CatalogError, StorageError,
                RegistryError) as e:
            _fail(str(e))
        return code if isinstance(code, int) else 0
    except KeyboardInterrupt:
        return 130
    except typer.Exit as e:
        return int(e.exit_code or 0)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)


def main() -> None:
    """The `granary` command. Its process ends with os._exit once the command's output is
    flushed: PyArrow's native thread pools, left to the interpreter's own teardown, now and
    then abort the process after the command has done its work ("terminate called without
    an active exception", exit -6; apache/arrow#34314; 3 of 40 `granary trace` runs here).
    Nothing the CLI starts needs the teardown (the stack's processes are detached)."""
    import contextlib
    import logging
    import os

    code = _command()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more to say
            stream.flush()
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    main()
