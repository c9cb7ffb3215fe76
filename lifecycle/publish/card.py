"""What travels with a release besides its data: the dataset card (README.md with Hugging
Face-style YAML front matter), Croissant 1.1 JSON-LD metadata (built with mlcroissant, the
MLCommons reference library, so it validates with the same code that reads it), and the
changelog against the previous version.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from lifecycle.spec import DatasetSpec
from lifecycle.versions.files import (
    FORMATS,
    LEGACY,
    data_files,
    data_format,
    part_glob,
)

# task -> Hugging Face task category (the spec's task is free text)
TASK_CATEGORIES = {"sentiment-classification": "text-classification",
                   "text-classification": "text-classification",
                   "topic-classification": "text-classification",
                   "ner": "token-classification", "token-classification": "token-classification",
                   "question-answering": "question-answering", "qa": "question-answering",
                   "summarization": "summarization", "translation": "translation",
                   "tabular-classification": "tabular-classification"}
ENCODINGS = {"parquet": "application/x-parquet", "jsonl": "application/jsonlines",
             "csv": "text/csv"}


def size_category(n: int) -> str:
    for bound, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                         (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < bound:
            return label
    return "n>10M"


# ---- the card ---------------------------------------------------------------------------------
def _annotation_section(spec: DatasetSpec, counts: dict[str, Any], q: dict[str, Any]) -> str:
    """Labels: the guideline, where they came from, conflicts, suspected errors, review."""
    a = spec.annotate
    guide = "\n".join(f"- `{lab.name}`" + (f": {lab.description}" if lab.description else "")
                      for lab in spec.guideline)
    sources = ", ".join(f"{k} {v:,}" for k, v in (counts.get("label_sources") or {}).items())
    where = f"labels in `{spec.schema_.label_field}`" if spec.schema_.label_field else \
        "boxes in `boxes`"
    lines = [f"Task: {a.task.replace('_', ' ')}, {where}:",
             guide,
             f"Where labels came from (precedence people, source, rules, model): "
             f"{sources or 'the source'}."]
    conflicts = int(counts.get("label_conflicts") or 0)
    if conflicts:
        dropped = (counts.get("quarantine_reasons") or {}).get("label_conflict", 0)
        lines.append(f"Conflicts: {conflicts} identical texts carried different labels; "
                     f"resolved by {a.conflicts.resolve} (ties: {a.conflicts.tie}), "
                     f"{dropped} quarantined.")
    suspected = int(counts.get("suspected_label_errors") or 0)
    if suspected:
        lines.append(f"Likely wrong labels (confident learning): {suspected:,} found, action "
                     f"`{a.label_errors.action}`; flagged records carry `label_flag` and "
                     "`suggested_label`.")
    if "boxes" in counts:
        lines.append(f"Bounding boxes in `boxes` (JSON, pixels of the published image; "
                     f"consensus of the annotators, boxes of the same label matching at IoU "
                     f">= {a.box_iou:g}): {counts['boxes']:,} boxes on "
                     f"{counts.get('images_with_boxes', 0):,} images, "
                     f"{counts.get('box_conflicts', 0):,} images where annotators disagreed "
                     f"(resolved by {a.conflicts.resolve}).")
    if counts.get("routed_to_people"):
        lines.append(f"{counts['routed_to_people']:,} records await people (Label Studio "
                     "tasks exported with the run).")
    lines.append("Label distribution: " + ", ".join(
        f"{k} {v:,}" for k, v in (q.get("labels") or {}).items()))
    return "\n\n".join(lines)


def data_pattern(files: Any) -> tuple[str, str]:
    """The format a consumer reads of a release holding ``files`` (names) and what names its
    data: the parts' glob (``data/parquet/*.parquet``), or an older version's one file
    (``data.parquet``). Parquet when the release has it, else JSON Lines, else CSV (the
    spec's ``publish.formats`` decide which the release holds)."""
    names = list(files)
    fmt = data_format(names) or "parquet"
    found = data_files(names, fmt)
    return fmt, (found[0] if found == [LEGACY[fmt]] else part_glob(fmt))


def _front_matter(spec: DatasetSpec, rows: int, annotated_by: list[str],
                  files: Any = ()) -> dict[str, Any]:
    """The card's YAML front matter; its configs name the data files the release holds
    (``files``: the release's file names): Hugging Face's loader reads every part of the
    format as the one split ``train``; the records' own split is their ``split`` column."""
    creators = {"source": "found", "rules": "machine-generated", "model": "machine-generated",
                "people": "expert-generated"}
    return {
        "license": spec.licence.id.lower(),
        "language": spec.language or ["und"],
        "task_categories": [TASK_CATEGORIES.get(spec.task, spec.task or "other")],
        "size_categories": [size_category(rows)],
        "pretty_name": spec.title,
        "tags": spec.tags,
        "annotations_creators": sorted({creators.get(a, "machine-generated")
                                        for a in annotated_by}) or ["no-annotation"],
        "source_datasets": ["original"],
        "configs": [{"config_name": "default",
                     "data_files": [{"split": "train", "path": data_pattern(files)[1]}]}],
    }


def card(spec: DatasetSpec, release: dict[str, Any], report: dict[str, Any],
         change: dict[str, Any], stages: dict[str, dict[str, Any]], registry: str) -> str:
    """README.md of the release."""
    rows = int(release["row_count"])
    label = spec.schema_.label_field
    annotated_by = sorted(stages.get("annotate", {}).get("label_sources") or {"source": 1})
    fmt, pattern = data_pattern(release.get("files") or ())
    front = yaml.safe_dump(_front_matter(spec, rows, annotated_by, release.get("files") or ()),
                           allow_unicode=True, sort_keys=False)
    version, name = release["version"], spec.name
    q = report or {}
    dims = q.get("dimensions", {})
    unmeasured = q.get("not_measured") or {}  # left out of the score and the grade
    collect, pre = stages.get("collect", {}), stages.get("preprocess", {})
    splits = release.get("splits") or {}
    split_line = (", ".join(f"{k} {v}" for k, v in splits.items()) if splits
                  else "no splits (one table)")
    verdict = "passed" if q.get("passed") else "not passed"
    pii_found = ", ".join(f"{k} {v}" for k, v in (pre.get("pii_found") or {}).items()) or "none"
    label_section = _annotation_section(spec, stages.get("annotate", {}), q) \
        if label or spec.annotate.task == "boxes" else "No labels."
    return f"""---
{front}---

# {spec.title}

{spec.description or spec.title}

Version **v{version}** of `{name}`: {rows:,} records, content hash `{release['content_hash']}`.

## Sources

{_sources(spec)}

Dataset licence: {spec.licence.id}. {spec.licence.legal_basis or ''}

## Collection and processing

Collected: {collect.get('records', '?')} records from {collect.get('files', '?')} payloads
({collect.get('quarantined', 0)} quarantined). Preprocessing ({', '.join(spec.preprocess.steps)}):
{pre.get('in', '?')} in, {pre.get('kept', '?')} kept, {pre.get('quarantined', '?')} quarantined,
{pre.get('merged', '?')} merged as duplicates. Personal data found and handled:
{pii_found}.
Every record carries its source object, line and raw hash (`granary trace {name}@v{version} <id>`).

## Annotation

{label_section}

## Synthetic share

{_synthetic_section(spec, stages.get("synthesize", {}))}

## Quality

Grade **{q.get('grade', '?')}** (score {q.get('score', '?')}), gate {verdict}.

| dimension | value |
|---|---|
{chr(10).join(f"| {k} | {v:.4f} |" for k, v in dims.items())}
{chr(10).join(f"| {k} | not measured: {why} |" for k, why in unmeasured.items())}

Splits: {split_line}. The full report is `quality.html` / `quality.json` in this release.

## Known limitations

{chr(10).join(_limitations(dims, q))}

## Changelog

{_history(version, change)}

""" + _how_to_load(name, fmt, pattern, version, registry, part_rows(spec, release))


def _sources(spec: DatasetSpec) -> str:
    """The card's sources: each with its licence, legal basis and origin."""
    return "\n".join(
        f"- **{s.name}** ({s.type}): licence {s.licence_id}, legal basis "
        f"{s.legal_basis or 'not given (accepted unlicensed)'}"
        + (f", origin: {s.licence.origin}" if s.licence and s.licence.origin else "")
        for s in spec.sources)


def _history(version: Any, change: dict[str, Any]) -> str:
    """The card's changelog line for this version."""
    grade_change = change["grade"]
    return (f"- v{version}: {change['added']} added, {change['removed']} removed, "
            f"{change['relabelled']} relabelled; grade {grade_change['from'] or '-'} -> "
            f"{grade_change['to']}")


def _synthetic_section(spec: DatasetSpec, syn: dict[str, Any]) -> str:
    """The card's synthetic share: how many records synthesis made and how they are marked."""
    return (
        f"{int(syn.get('synthetic', 0)):,} synthetic records ({float(syn.get('share', 0)):.1%} "
        f"of this version, cap {spec.synthesize.max_share:.0%}), made by "
        f"`{spec.synthesize.generator}`; {int(syn.get('made', 0)):,} made, "
        f"{int(syn.get('rejected', 0)):,} rejected. Each carries `synthetic = true`, its "
        "`generator`, `generator_params` and `seed_ids` (the real records it came from)."
        if syn.get("synthetic") else "0% (no synthetic records in this version).")


def _limitations(dims: dict[str, float], q: dict[str, Any]) -> list[str]:
    """The card's known limitations: the dimensions below grade A, the labels likely wrong."""
    weak = [k for k, v in dims.items() if v < 0.95]
    limitations = [f"- {k} is {dims[k]:.3f} (see the quality report)" for k in weak]
    le = q.get("label_errors") or {}
    if le.get("estimated"):
        limitations.append(f"- about {le['rate']:.1%} of labels are estimated wrong by "
                           f"confident learning ({le['flagged']} flagged for review)")
    if not limitations:
        limitations = ["- none measured below grade A; the quality report lists the evidence"]
    return limitations


def part_rows(spec: DatasetSpec, release: dict[str, Any]) -> int:
    """The records per part of the ``release`` (the version's own size; the spec's when the
    release does not say)."""
    return int(release.get("part_rows") or spec.publish.part_rows)


def _how_to_load(name: str, fmt: str, pattern: str, version: Any, registry: str,
                 per_part: int) -> str:
    """The card's last section: the data files (``pattern``, in format ``fmt``, parts of at
    most ``per_part`` records) read with pandas, DuckDB, Hugging Face datasets and dvc.api,
    and the release got with ``dvc get``."""
    read = {"parquet": "pd.read_parquet({})", "jsonl": "pd.read_json({}, lines=True)",
            "csv": "pd.read_csv({})"}[fmt]
    duck = {"parquet": "read_parquet", "jsonl": "read_json", "csv": "read_csv"}[fmt]
    hf_format = {"jsonl": "json"}.get(fmt, fmt)
    # the card's text for a reader to run, not a query made here
    query = f"SELECT * FROM {duck}('{name}/{pattern}')"  # nosec B608
    return f"""## How to load

The records are in `{pattern}`: files named `part-<n>`, at most {per_part:,}
records each, which read in name order hold the records in the published order. After
`dvc get` (below):

```python
import glob
import pandas as pd
parts = sorted(glob.glob("{name}/{pattern}"))          # in the published order
df = pd.concat([{read.format("p")} for p in parts], ignore_index=True)

import duckdb
duckdb.sql("{query}")

from datasets import load_dataset                     # Hugging Face datasets
ds = load_dataset("{hf_format}", data_files="{name}/{pattern}", split="train")

import dvc.api                                        # straight from the registry
fs = dvc.api.DVCFileSystem("{registry}", rev="{name}/v{version}")
parts = sorted(fs.glob("datasets/{name}/{pattern}"))
df = pd.concat([{read.format('fs.open(p, "rb")')} for p in parts], ignore_index=True)
```

```sh
dvc get {registry} datasets/{name} --rev {name}/v{version}
```
"""


# ---- Croissant --------------------------------------------------------------------------------
def _data_type(dtype: str) -> Any:
    import mlcroissant as mlc

    if dtype.startswith(("int", "Int")):
        return mlc.DataType.INTEGER
    if dtype.startswith(("float", "Float", "double")):
        return mlc.DataType.FLOAT
    if dtype.startswith("bool"):
        return mlc.DataType.BOOL
    return mlc.DataType.TEXT


def croissant(spec: DatasetSpec, release: dict[str, Any], columns: list[tuple[str, str]],
              published: datetime, registry: str, report: dict[str, Any]) -> dict[str, Any]:
    """Croissant 1.1 metadata: the files with their sha256, one record set read from the
    data file (Parquet when the release has it), and provenance (sources, processing, personal
    data) in the RAI terms."""
    import mlcroissant as mlc

    ctx = mlc.Context()
    files = release["files"]
    fmt, pattern = data_pattern(files)
    named = [n for f in FORMATS for n in data_files(files, f)]
    distribution = [
        mlc.FileObject(ctx=ctx, id=name, name=name, content_url=name,
                       encoding_formats=[ENCODINGS[name.rsplit(".", 1)[1]]],
                       sha256=files[name]["sha256"],
                       content_size=f"{files[name]['bytes']} B") for name in named]
    # the record set reads every part of the preferred format, as one FileSet (a glob)
    source: dict[str, str] = {"file_object": pattern}
    if "*" in pattern:
        distribution += [
            mlc.FileSet(ctx=ctx, id=f"{f}-parts", name=f"{f}-parts",
                        encoding_formats=[ENCODINGS[f]], includes=[part_glob(f)],
                        description=f"The records as {f}, in parts of at most "
                                    f"{part_rows(spec, release):,} records; read in name "
                                    "order for the published order")
            for f in FORMATS if data_files(files, f)]
        source = {"file_set": f"{fmt}-parts"}
    tars = sorted(n for n in files if n.startswith("images-") and n.endswith(".tar"))
    if tars:  # image datasets: the WebDataset shards, one FileObject each, as one FileSet
        distribution += [
            mlc.FileObject(ctx=ctx, id=name, name=name, content_url=name,
                           encoding_formats=["application/x-tar"], sha256=files[name]["sha256"],
                           content_size=f"{files[name]['bytes']} B") for name in tars]
        distribution.append(mlc.FileSet(
            ctx=ctx, id="images", name="images", contained_in=tars,
            encoding_formats=["image/png", "image/jpeg", "image/webp"],
            includes=["*.png", "*.jpg", "*.webp"],
            description="The images, one per record, named <id>.<ext> inside the shards"))
    fields = [mlc.Field(ctx=ctx, id=f"records/{c}", name=c, data_types=[_data_type(t)],
                        source=mlc.Source(ctx=ctx, **source,  # type: ignore[arg-type]
                                          extract=mlc.Extract(ctx=ctx, column=c)))
              for c, t in columns]
    records = mlc.RecordSet(ctx=ctx, id="records", name="records", fields=fields,
                            key=["records/id"],
                            description=f"One record per row of {pattern}.")
    pre = report.get("pii", {}).get("found_in_preprocessing", {})
    metadata = mlc.Metadata(
        ctx=ctx, name=spec.name, description=spec.description or spec.title,
        url=f"{registry}#datasets/{spec.name}", version=f"{release['version']}.0.0",
        license=[f"https://spdx.org/licenses/{spec.licence.id}.html"],
        date_published=published, conforms_to=["http://mlcommons.org/croissant/1.1"],
        cite_as=f"{spec.title}, version {release['version']} ({spec.name}/v{release['version']})",
        keywords=spec.tags or None, in_language=spec.language or None,
        distribution=distribution, record_sets=[records],
        data_collection="; ".join(s.describe() for s in spec.sources),
        data_preprocessing_protocol=[f"{step}" for step in spec.preprocess.steps],
        personal_sensitive_information=[f"{k}: {v['found']} found, {v['action']}"
                                        for k, v in pre.items()] or None,
        data_limitations=[f"quality grade {report.get('grade')} (score {report.get('score')})"],
    )
    out: dict[str, Any] = metadata.to_json()
    issues = ctx.issues
    if issues.errors:
        raise ValueError(f"Croissant metadata of {spec.name} is invalid: {issues.report()}")
    return out


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n",
                    encoding="utf-8")
