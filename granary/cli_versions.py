"""The `granary` commands on the catalog and its published versions: datasets, versions,
deprecate, rollback, links, get, trace, maintain and verify (registered by granary/cli.py, in
that order)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from granary.cli_common import actor as _actor
from granary.cli_common import catalog as _catalog
from granary.cli_common import parse_ref
from granary.cli_common import settings as _settings
from granary.console import console, err
from granary.console import fail as _fail
from granary.console import table as _table


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


COMMANDS = (datasets, versions, deprecate, rollback, links, get, trace, maintain, verify)
