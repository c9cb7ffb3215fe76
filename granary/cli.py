"""`granary`: the command line front door (Typer)."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from granary.console import console, err
from granary.console import fail as _fail
from granary.console import table as _table
from granary.settings import Settings, load_settings
from lifecycle.spec import STAGES

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Granary: build, version and publish high-quality AI datasets.")


def _settings() -> Settings:
    return load_settings()


def _catalog(migrate: bool = False) -> Any:
    """The catalog, for a command that reads it: a clear error, saying where it looked and
    what to do, when there is none (nothing is created by looking)."""
    from granary.runtime import existing_catalog

    cat = existing_catalog(_settings())
    if migrate:  # an older catalog gains the newer tables; an existing one only
        cat.migrate()
    return cat


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


# ---- catalog ----------------------------------------------------------------------------------
@app.command()
def datasets() -> None:
    """List the datasets in the catalog with their newest version."""
    cat = _catalog(migrate=True)
    table = _table("dataset", "title", "domain", "licence", "access", "latest", "records")
    for d in cat.datasets():
        v = cat.latest(d.name)
        table.add_row(d.name, d.title, d.domain, d.licence, d.access,
                      f"v{v.version}" if v else "-",
                      str(v.row_count) if v else "-")
    console.print(table)


@app.command()
def versions(dataset: str) -> None:
    """List the published versions of DATASET."""
    cat = _catalog(migrate=True)
    rows = cat.versions(dataset)
    if not rows:
        _fail(_no_version(cat, dataset))
    latest = cat.latest(dataset)
    table = _table("version", "status", "records", "grade", "sha256", "published (UTC)", "run",
                   title=f"{dataset}: registry tags {dataset}/v<N>")
    for v in rows:
        status = ("deprecated" if v.deprecated else "") + (
            "latest" if latest and v.version == latest.version else "")
        table.add_row(f"v{v.version}", status, str(v.row_count), str(v.quality.get("grade", "")),
                      v.content_hash[:12], v.created_at.strftime("%Y-%m-%d %H:%M"), v.run_id)
    console.print(table)
    history = [e for e in cat.release_events(dataset) if e.action != "publish"]
    if history:
        table = _table("when (UTC)", "version", "action", "by", "why", title="history")
        for e in history:
            table.add_row(e.created_at.strftime("%Y-%m-%d %H:%M"), f"v{e.version}", e.action,
                          e.actor, e.reason)
        console.print(table)


def _no_version(cat: Any, dataset: str) -> str:
    """Why ``dataset`` has no version to show: unknown here, never run, or its runs failed."""
    known = [d.name for d in cat.datasets()]
    if dataset not in known:
        return (f"the catalog at {cat.safe_url} knows no dataset {dataset!r} (it knows: "
                f"{', '.join(known) or 'none yet'}); build it with `granary run {dataset}`")
    last = next(iter(cat.runs(dataset)), None)
    if last is None:
        return f"{dataset} has no published version yet (run it: `granary run {dataset}`)"
    return (f"{dataset} has no published version yet; its last run {last.run_id} ended "
            f"{last.status}: {last.message or '-'} (`granary runs {dataset} {last.run_id}`)")


def _actor(by: str | None) -> str:
    import getpass

    return by or getpass.getuser()


@app.command()
def deprecate(ref: str,
              reason: Annotated[str, typer.Option(help="why (shown to everyone who downloads)")],
              by: Annotated[str | None, typer.Option(help="who; your login when unset")] = None,
              undo: Annotated[bool, typer.Option("--undo", help="lift the deprecation")] = False,
              ) -> None:
    """Flag DATASET@vN deprecated: kept, marked in the catalog, warned about on download."""
    from lifecycle.versions.releases import deprecate as do_deprecate
    from storage.catalog import ReleaseError

    dataset, number = parse_ref(ref)
    if number is None:
        _fail(f"{ref}: name the version to deprecate, e.g. {dataset}@v2")
    assert number is not None
    cat = _catalog()
    try:
        v = do_deprecate(cat, dataset, number, _actor(by), reason, undo=undo)
    except ReleaseError as e:
        _fail(str(e))
    latest = cat.latest(dataset)
    console.print(f"{v.ref} {'is no longer deprecated' if undo else 'deprecated'}; latest is "
                  f"{latest.ref if latest else 'none'}")


@app.command()
def rollback(ref: str,
             reason: Annotated[str, typer.Option(help="why (kept in the history)")],
             by: Annotated[str | None, typer.Option(help="who; your login when unset")] = None,
             ) -> None:
    """Make DATASET@vN the latest version again (catalog and registry main); the next
    publish becomes latest as usual."""
    from granary.runtime import registry
    from lifecycle.versions.releases import rollback as do_rollback
    from storage.catalog import ReleaseError

    s = _settings()
    dataset, number = parse_ref(ref)
    if number is None:
        _fail(f"{ref}: name the version to roll back to, e.g. {dataset}@v1")
    assert number is not None
    try:
        v = do_rollback(_catalog(), registry(s), dataset, number, _actor(by), reason)
    except ReleaseError as e:
        _fail(str(e))
    console.print(f"latest {dataset} is {v.ref} again (registry main and catalog)")


@app.command()
def links(ref: str) -> None:
    """Print presigned download links for every file of DATASET[@VERSION] (they expire after
    GRANARY_DOWNLOAD_LINK_MINUTES, 15 by default)."""
    from datetime import timedelta

    from granary.runtime import public_object_store
    from lifecycle.versions.releases import deprecation_warning, download_links

    s = _settings()
    v = _resolve(ref)
    warning = deprecation_warning(v)
    if warning:
        err.print(f"[bold yellow]warning:[/] {warning}")
    bucket, prefix = s.registry_objects
    found = download_links(v, public_object_store(s), bucket, prefix,
                           timedelta(minutes=s.download_link_minutes))
    for link in found.values():
        console.print(f"{link.name}\t{link.url}", soft_wrap=True)


def _resolve(ref: str) -> Any:
    """The version a reference names; ``DATASET`` alone means its latest."""
    dataset, number = parse_ref(ref)
    cat = _catalog()
    v = cat.latest(dataset) if number is None else cat.get_version(dataset, number)
    if v is None:
        _fail(f"{ref}: no such published version (see `granary versions {dataset}`)")
    return v


def parse_ref(ref: str) -> tuple[str, int | None]:
    m = re.fullmatch(r"([a-z][a-z0-9_]*)(?:@(?:v?(\d+)|latest))?", ref)
    if not m:
        raise typer.BadParameter(f"{ref!r}: use DATASET@vN, DATASET@N or DATASET@latest")
    return m.group(1), int(m.group(2)) if m.group(2) else None


@app.command()
def get(ref: str, to: Annotated[Path, typer.Option("--to", help="destination folder")]) -> None:
    """Download DATASET@VERSION (e.g. zh_shopping_reviews@v1) from the registry into --to."""
    from granary.runtime import registry
    from lifecycle.versions.releases import deprecation_warning

    s = _settings()
    v = _resolve(ref)
    warning = deprecation_warning(v)
    if warning:
        err.print(f"[bold yellow]warning:[/] {warning}")
    with console.status(f"fetching {v.ref} from the registry..."):
        dest = registry(s).fetch(v.dataset, v.version, to)
    files = sorted(p.name for p in dest.iterdir())
    console.print(f"{v.ref} -> {dest}: {', '.join(files)}")


@app.command()
def trace(ref: str, record_id: str,
          as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False
          ) -> None:
    """Show where RECORD_ID of DATASET@VERSION came from: raw object, line, every stage."""
    import json as _json

    from granary.runtime import object_store
    from lifecycle.versions.trace import trace as trace_record

    s = _settings()
    dataset, number = parse_ref(ref)
    result = trace_record(_catalog(), object_store(s), dataset, number, record_id)
    if as_json:  # every value is plain typed Python (lifecycle.records.shards.to_python)
        print(_json.dumps(result, ensure_ascii=False, indent=2))
        return
    console.print(f"[bold]{dataset}@v{result['version']}[/] record [bold]{record_id}[/]: "
                  f"{result['record']}")
    if result["synthetic"]:
        for seed in result["raw_origins"]:
            console.print(f"  seed       {seed['id']} from {seed['source_uri']} line "
                          f"{seed['line']} (file {seed['source_path']})")
    for step in result["path"]:
        name = step["stage"]
        if name == "raw":
            console.print(f"  raw        {step['object']} line {step['line']} "
                          f"(file {step['file']}, sha256 {step['sha256'][:12]}, "
                          f"collected {step['collected_at']}, {step['licence']})")
            continue
        details = {k: v for k, v in step.items()
                   if k not in ("stage", "run_id", "status", "at", "output",
                                "absorbed_duplicates") and v not in (None, [], {})}
        console.print(f"  {name:<10} {step['status']} at {step['at']} (run {step['run_id']}) "
                      f"{' '.join(f'{k}={v}' for k, v in details.items())}", markup=False)
        for dup in step.get("absorbed_duplicates") or []:
            console.print(f"             absorbed {dup['reason']} {dup['id']} (into "
                          f"{dup['into']}, run {dup['run_id']}) from {dup['source_uri']} "
                          f"line {dup['line']} (file {dup['source_path']})", markup=False)


@app.command()
def maintain(dataset: Annotated[str | None, typer.Argument(help="one dataset; default all")] = None,
             dry_run: Annotated[bool, typer.Option(help="report, change nothing")] = False
             ) -> None:
    """What the daily maintenance DAG does, now: verify ledgers, prune work outputs past the
    retention window, re-evaluate versions whose quality rules changed, report stale ones."""
    from granary.runtime import maintain_dataset
    from lifecycle.spec import discover

    s = _settings()
    good, _ = discover(s.datasets_dir)
    names = [x.spec.name for x in good]
    if dataset is not None and dataset not in names:
        _fail(f"no dataset spec named {dataset!r} in {s.datasets_dir} (have: {', '.join(names)})")
    table = _table("dataset", "ledger", "stale", "pruned runs", "pruned bytes", "re-evaluated",
                   title="maintenance" + (" (dry run)" if dry_run else ""))
    broken = []
    for name in [dataset] if dataset else names:
        found = maintain_dataset(name, dry_run, s)
        ok = found["ledger"]["ok"]
        broken += [] if ok else [name]
        table.add_row(name, "intact" if ok else "BROKEN", "yes" if found.get("stale") else "no",
                      str(len(found["pruned"]["runs"])), f"{found['pruned']['bytes']:,}",
                      ", ".join(f"v{r['version']} {r['was']}->{r['grade']}"
                                for r in found["reevaluated"]) or "-")
    console.print(table)
    if broken:
        _fail(f"ledger broken for {', '.join(broken)}: `granary verify <dataset>` names the "
              "differences")


@app.command()
def verify(ref: str) -> None:
    """Re-hash every object of DATASET[@VERSION] in the registry bucket and its plain copy in
    the releases bucket, and walk its ledger chain; exit 1 naming each difference."""
    from granary.runtime import object_store
    from lifecycle.versions.verify import verify as verify_dataset

    s = _settings()
    dataset, number = parse_ref(ref)
    bucket, prefix = s.registry_objects
    try:
        result = verify_dataset(dataset, s.registry, object_store(s), bucket, prefix,
                                _catalog(), number, releases_bucket=s.bucket_releases)
    except ValueError as e:
        _fail(str(e))
    if not result.versions:
        _fail(f"{dataset} has no published version in the registry {s.registry}")
    if result.ok:
        console.print(f"[green]verified[/] {dataset} v{result.versions[0]}..v"
                      f"{result.versions[-1]}: {result.files} objects re-hashed, ledger chain "
                      "intact")
        return
    for f in result.findings:
        console.print(f"[red]v{f.version} {f.what}[/]: {f.problem}")
    _fail(f"{dataset}: {len(result.findings)} difference(s) in {len(result.versions)} "
          "version(s); restore the objects from a backup or republish")


# ---- tokens -----------------------------------------------------------------------------------
token_app = typer.Typer(no_args_is_help=True, help="Access tokens of the web app and its APIs "
                        "(scopes read < write < admin; see docs/security.md).")
app.add_typer(token_app, name="token")


def _tokens() -> Any:
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
        info, token = _tokens().create(name, scope, datasets=dataset or [],
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
    for t in _tokens().list():
        table.add_row(t.id, t.name, t.scope, t.state, ", ".join(t.datasets) or "-",
                      _when(t.created_at), t.created_by or "-", _when(t.expires_at),
                      _when(t.last_used_at))
    console.print(table)


@token_app.command("revoke")
def token_revoke(token_id: Annotated[str, typer.Argument(help="the id from `token list`")]) -> None:
    """Revoke a token: every request with it is refused from now on."""
    from storage.tokens import TokenError

    try:
        info = _tokens().revoke(token_id)
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
        info = _tokens().grant(token_id, dataset, undo=undo)
    except TokenError as e:
        _fail(str(e))
    console.print(f"token {info.id} ({info.name}) now sees: "
                  f"{', '.join(info.datasets) or 'no restricted dataset'}")


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
    info, token = _tokens().create(f"demo ({_actor(None)})", "admin", days=7,
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
