"""Collection's merge: the units' partial results combined; the bad share, schema drift and
conservation checked per source; the stage manifest written; the sources' incremental state
staged, which the catalog makes current only when the run succeeds."""

from __future__ import annotations

import json
import logging
from collections import Counter
from typing import Any

from lifecycle.collect.accounting import LINE_KINDS
from lifecycle.collect.rows import record_schema
from lifecycle.collect.state import DATASET_STATE, STAGE, _compact, _state
from lifecycle.collect.units import Fetched
from lifecycle.context import StageContext, StageResult
from lifecycle.errors import ConservationError, SourceError
from lifecycle.records import shards
from lifecycle.spec import DatasetSpec
from lineage.facets import DatasetIO
from storage.faults import fault_point

log = logging.getLogger(__name__)


def _check_bad_share(totals: dict[str, Counter[str]], reasons: dict[str, Counter[str]],
                     limit: float) -> None:
    """Fail when a source's quarantined share is above ``limit``, naming the worst source."""
    shares = {}
    for name, t in totals.items():
        looked = t["records_new"] + t["quarantined"]
        if looked:
            shares[name] = t["quarantined"] / looked
    over = {n: s for n, s in shares.items() if s > limit}
    if not over:
        return
    worst = max(over, key=lambda n: over[n])
    t = totals[worst]
    raise SourceError(
        f"source {worst!r}: {t['quarantined']} of {t['records_new'] + t['quarantined']} "
        f"records ({over[worst]:.1%}) could not be used, above the limit of {limit:.0%} "
        f"(collect.max_bad_share); reasons: {dict(reasons[worst])}. Fix the source or raise "
        "the limit in the spec.", source=worst)


def _drift(spec: DatasetSpec, source: Any, old: dict[str, list[str]],
           new: dict[str, list[str]]) -> dict[str, Any]:
    """New, missing and retyped columns of ``source`` since the last committed run.

    A column counts as missing only when the spec maps a field to it: optional keys of JSON
    records come and go without meaning anything."""
    if not old or not new:
        return {}
    mapped = {source.fields.get(f.name, f.name) for f in spec.schema_.fields}
    if source.label is not None and spec.schema_.label_field:
        mapped.discard(source.fields.get(spec.schema_.label_field, spec.schema_.label_field))
    added = sorted(set(new) - set(old))
    missing = sorted(c for c in mapped & set(old) if c not in new)
    retyped = {c: {"was": old[c], "now": new[c]} for c in sorted(set(old) & set(new))
               if not set(new[c]) <= set(old[c])}
    found = {k: v for k, v in (("added", added), ("missing", missing), ("retyped", retyped))
             if v}
    return found


def merge(ctx: StageContext, partials: list[Fetched]) -> StageResult:
    spec = ctx.spec
    partials = sorted((p for p in partials if p), key=lambda p: p["index"])
    incremental = ctx.refresh.incremental
    totals, reasons, lines, columns = _tally(spec, partials)
    _check_conservation(totals, lines)
    _check_bad_share(totals, reasons, spec.collect.max_bad_share)
    states, drift = _source_states(ctx, partials, columns, incremental)

    carried, carried_rows = [], 0
    if incremental:
        snapshot = _state(ctx, DATASET_STATE).get("snapshot")
        if snapshot:
            previous = shards.read_manifest(ctx.store, snapshot)
            carried = previous["shards"]
            carried_rows = int(previous.get("row_count", 0))
    main = carried + [s for p in partials for s in p["shards"]]
    quarantine = [s for p in partials for s in p["quarantine"]]
    landed = [x for p in partials for x in p["landed"]]
    counts = _counts(totals, reasons, lines, landed, carried_rows)
    extra = {"landed": landed, "sources": [s.provenance() for s in spec.sources],
             "mode": ctx.mode, "units": [p["label"] for p in partials],
             **({"schema_drift": drift} if drift else {}),
             **({"carried_from": _state(ctx, DATASET_STATE).get("snapshot")} if carried else {})}
    if incremental:
        base = ctx.refresh.nothing_new({"shards": main})
        if base is not None:  # nothing the published version does not already hold
            counts.update(nothing_new=True, base_version=base.version.version)
    uri = shards.write_manifest(ctx, STAGE, shards.arrow_columns(record_schema(spec)), main,
                                counts, {"quarantine": quarantine}, extra)
    states[DATASET_STATE] = {"snapshot": uri}
    fault_point("collect.before_source_state")  # the manifest written, the state not staged
    ctx.catalog.stage_source_states(ctx.dataset, ctx.run_id, states)
    log.info("collect %s: %s", ctx.dataset, {k: v for k, v in counts.items()
                                              if k != "per_source"})
    return StageResult(STAGE, uri, counts, lineage=_lineage(ctx, uri, landed))


def _tally(spec: DatasetSpec, partials: list[Fetched]) -> tuple[
        dict[str, Counter[str]], dict[str, Counter[str]], dict[str, Counter[str]],
        dict[str, dict[str, set[str]]]]:
    """Per source: the units' counts, quarantine reasons, physical lines by kind and the
    columns seen with their types."""
    totals: dict[str, Counter[str]] = {s.name: Counter() for s in spec.sources}
    reasons: dict[str, Counter[str]] = {s.name: Counter() for s in spec.sources}
    lines: dict[str, Counter[str]] = {s.name: Counter() for s in spec.sources}
    columns: dict[str, dict[str, set[str]]] = {s.name: {} for s in spec.sources}
    for p in partials:
        totals[p["source"]].update(p["counts"])
        reasons[p["source"]].update(p["reasons"])
        lines[p["source"]].update(p.get("lines", {}))
        for column, types in p["columns"].items():
            columns[p["source"]].setdefault(column, set()).update(types)
    return totals, reasons, lines, columns


def _check_conservation(totals: dict[str, Counter[str]],
                        lines: dict[str, Counter[str]]) -> None:
    """Every row read and every physical line of a source accounted for exactly once."""
    for name, t in totals.items():
        if t["read"] != t["records_new"] + t["quarantined"] + t["already_seen"]:
            raise ConservationError(
                f"source {name!r}: read {t['read']} rows but kept {t['records_new']}, "
                f"quarantined {t['quarantined']} and skipped {t['already_seen']} as seen; "
                "this is a bug, nothing was published", source=name)
        held = lines[name]
        if held["physical"] != sum(held[k] for k in LINE_KINDS):
            raise ConservationError(
                f"source {name!r}: its line-oriented files hold {held['physical']} lines, but "
                f"{dict(held)} were accounted for; this is a bug, nothing was published",
                source=name)


def _source_states(ctx: StageContext, partials: list[Fetched],
                   columns: dict[str, dict[str, set[str]]], incremental: bool,
                   ) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Per source: its schema drift since the last committed run (failing the run when the
    spec says so) and the state its next incremental run should know."""
    spec = ctx.spec
    states: dict[str, dict[str, Any]] = {}
    drift: dict[str, Any] = {}
    for source in spec.sources:
        old = _state(ctx, source.name)
        observed = {c: sorted(v) for c, v in columns[source.name].items()}
        change = _drift(spec, source, old.get("columns", {}), observed)
        if change:
            drift[source.name] = change
            if spec.collect.schema_drift == "fail":
                raise SourceError(
                    f"source {source.name!r}: its columns changed since the last run: "
                    f"{json.dumps(change, ensure_ascii=False)}. Change the spec's field "
                    "mapping, or give collect.schema_drift: accept to take the new shape.",
                    source=source.name,
                    field=", ".join([*change.get("missing", []), *change.get("retyped", {}),
                                     *change.get("added", [])]) or None)
            log.warning("source %s: schema drift accepted: %s", source.name, change)
        mine = [p for p in partials if p["source"] == source.name]
        states[source.name] = _next_state(ctx, source.name, old, mine, observed, incremental)
    return states, drift


def _counts(totals: dict[str, Counter[str]], reasons: dict[str, Counter[str]],
            lines: dict[str, Counter[str]], landed: list[dict[str, Any]],
            carried_rows: int) -> dict[str, Any]:
    """The stage's counts: over every source, and per source."""
    total = sum(totals.values(), Counter())
    all_lines = sum(lines.values(), Counter())
    counts = {
        "files": len(landed),
        "raw_new": total["raw_new"],
        "raw_existing": total["raw_existing"],
        "unchanged": total["unchanged"],
        "appended": total["appended_files"],  # files that only grew: their new lines read
        "bytes": total["bytes"],
        "read": total["read"],
        "records_new": total["records_new"],
        "already_seen": total["already_seen"],
        "skipped_members": total["skipped_members"],  # an image archive's other files
        "carried": carried_rows,
        "records": carried_rows + total["records_new"],
        "quarantined": total["quarantined"],
        "quarantine_reasons": dict(sum(reasons.values(), Counter())),
        # conservation: in = kept + quarantined + merged
        "in": total["read"] + carried_rows,
        "kept": carried_rows + total["records_new"],
        "merged": total["already_seen"],
        # physical lines of the text, JSONL, CSV and TSV files parsed, counted from their
        # bytes, by where each went: physical = records + quarantined + seen + header + blank
        "lines": _line_counts(all_lines),
        "per_source": {n: {**{k: t[k] for k in ("read", "records_new", "quarantined",
                                                "already_seen", "payloads", "unchanged")},
                           "lines": _line_counts(lines[n])}
                       for n, t in totals.items()},
    }
    return counts


def _line_counts(held: Counter[str]) -> dict[str, int]:
    return {"physical": held["physical"], **{k: held[k] for k in LINE_KINDS}}


def _next_state(ctx: StageContext, source: str, old: dict[str, Any],
                partials: list[Fetched], observed: dict[str, list[str]],
                incremental: bool) -> dict[str, Any]:
    """What the next incremental run of ``source`` should know, if this run commits."""
    base = old if incremental else {}
    payloads = dict(base.get("payloads", {}))
    seen = list(base.get("seen", []))
    listing = dict(base.get("listing", {}))
    files = dict(base.get("files", {}))
    delivered = dict(base.get("delivered", {}))
    state: dict[str, Any] = {}
    for p in partials:
        payloads.update(p["payloads"])
        delivered.update(p.get("delivered", {}))
        files.update(p.get("files", {}))
        if p["seen"]:
            seen.append(p["seen"])
        updates = p["updates"]
        listing.update(updates.get("listing", {}))
        if "pages" in updates:
            state["pages"] = updates["pages"]
        for k in ("watermark", "watermark_type"):
            if updates.get(k) is not None:
                state[k] = updates[k]
    if "watermark" not in state and "watermark" in old:
        state["watermark"], state["watermark_type"] = old["watermark"], old.get("watermark_type")
    state.update(payloads=payloads, delivered=delivered, seen=_compact(ctx, source, seen),
                 columns=observed or old.get("columns", {}))
    if listing:
        state["listing"] = listing
    if files:
        state["files"] = files
    return state


def _lineage(ctx: StageContext, uri: str, landed: list[dict[str, Any]]) -> list[DatasetIO]:
    read = list({x["uri"]: x for x in landed if x.get("parsed")}.values())
    ios = [DatasetIO(uri=x["uri"], direction="input", file_format=x["format"],
                     version=x["version_id"] or x["sha256"], size=x["bytes"], files=1,
                     licence={"id": x["licence"], "legal_basis": x["legal_basis"]},
                     description=f"raw {x['path']} of source {x['source']}")
           for x in read]
    manifest = shards.read_manifest(ctx.store, uri)
    licence = ctx.spec.licence.model_dump()
    return [*ios, shards.stage_io(uri, manifest, "output", licence=licence)]
