"""What people do for annotation, through Label Studio: their completions read (export files
under the inbox, the project's tasks pulled through its API), and the records routed to them
exported as tasks with the model's pre-annotations (and sent to the project)."""

from __future__ import annotations

import json
import logging
from typing import Any

import pandas as pd

from lifecycle.annotate.reports import _write_json, _write_text
from lifecycle.context import StageContext
from lifecycle.errors import PermanentError
from lifecycle.labels import labelling
from lifecycle.records import shards

log = logging.getLogger(__name__)
MODEL_VERSION = "granary-tfidf-logreg"


def read_completions(ctx: StageContext, pulled: list[dict[str, Any]] | None,
                     project: int | None) -> tuple[list[labelling.Completion], list[str],
                                                   list[str]]:
    """(completions, where they came from, problems) from the spec's Label Studio exports
    under the inbox and the tasks pulled from its project (None when not pulled)."""
    completions: list[labelling.Completion] = []
    problems: list[str] = []
    paths = _completion_files(ctx)
    names = [p.name for p in paths]
    if pulled is not None:
        found, bad = labelling.read_export(pulled)
        completions += found
        problems += [f"Label Studio API: {b}" for b in bad]
        names.append(f"Label Studio project {project}")
    for path in paths:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise PermanentError(f"{path}: not a Label Studio JSON export ({e}); export the "
                                 "project as JSON (not JSON-MIN or CSV)") from e
        if not isinstance(data, list):
            raise PermanentError(f"{path}: a Label Studio JSON export is a list of tasks")
        found, bad = labelling.read_export(data)
        completions += found
        problems += [f"{path.name}: {b}" for b in bad]
    return completions, names, problems


def _completion_files(ctx: StageContext) -> list[Any]:
    root = ctx.inbox.resolve()
    found = []
    for pattern in ctx.spec.annotate.people.completions:
        matches = sorted(p for p in root.glob(pattern) if p.is_file())
        outside = [p for p in matches if not p.resolve().is_relative_to(root)]
        if outside:
            raise PermanentError(f"annotate.people.completions {pattern!r} reaches outside the "
                                 f"inbox {root}: {outside[0]}")
        if not matches:
            raise PermanentError(f"annotate.people.completions {pattern!r} matches no file "
                                 f"under the inbox {root}; put the Label Studio export there")
        found += matches
    return found


def _export_image_tasks(ctx: StageContext, df: pd.DataFrame, routed: set[str],
                        suggestion: dict[str, tuple[str, float]]) -> dict[str, Any]:
    """Label Studio tasks for the images routed to people: a link to the processed image
    (presigned for ``people.link_days``, or its s3:// key), its file name and record id, and
    the classifier's guess as a pre-annotation; checked against the labelling config."""
    from datetime import timedelta

    from label_studio_sdk.label_interface import LabelInterface

    spec = ctx.spec
    people = spec.annotate.people
    config = labelling.labelling_config(spec.guideline, spec.annotate.task, modality="image")
    rows = df.loc[df["id"].isin(routed), ["id", "image", "file_name"]]
    records = []
    for r in rows.to_dict(orient="records"):
        bucket, key = shards.parse_uri(str(r["image"]))
        link = (ctx.store.presigned_get(bucket, key, timedelta(days=people.link_days))
                if people.image_links == "presigned" else str(r["image"]))
        guess = suggestion.get(r["id"], (None, 0.0)) if spec.annotate.task != "boxes" \
            else (None, 0.0)
        records.append({"id": r["id"], "link": link, "file_name": r["file_name"],
                        "suggested": guess[0], "confidence": guess[1]})
    tasks = labelling.tasks(records, "link", MODEL_VERSION, object_name="image")
    interface = LabelInterface(config)
    invalid = [t["data"]["granary_id"] for t in tasks
               if not all(interface.validate_prediction(p) for p in t.get("predictions", []))]
    if invalid:
        raise PermanentError(f"annotate {ctx.dataset}: {len(invalid)} Label Studio tasks do not "
                             f"fit the labelling config (first: {invalid[0]}); a suggested "
                             "label outside the guideline? Check annotate.labels")
    return {"count": len(tasks), "tasks_uri": _write_json(ctx, "label-studio-tasks.json", tasks),
            "config_uri": _write_text(ctx, "label-studio-config.xml", config),
            "image_links": people.image_links}


def _studio(ctx: StageContext) -> tuple[Any, int]:
    """(client, project id) of the spec's Label Studio server; the project is created with
    the guideline's labelling config on first use."""
    from lifecycle.annotate import labelstudio

    link = ctx.spec.annotate.people.label_studio
    assert link is not None
    client = labelstudio.server(link.connection).client()
    guide = "\n".join(f"{lab.name}: {lab.description}" for lab in ctx.spec.guideline)
    project = labelstudio.ensure_project(
        client, link.project or labelstudio.project_title(ctx.dataset),
        labelling.labelling_config(ctx.spec.guideline, ctx.spec.annotate.task,
                                   modality=ctx.spec.modality), guide)
    return client, project


def _send(ctx: StageContext, studio: tuple[Any, int], tasks_uri: str) -> dict[str, Any]:
    """Import the exported tasks into the project (those it does not hold yet)."""
    from lifecycle.annotate import labelstudio

    bucket, key = shards.parse_uri(tasks_uri)
    tasks = json.loads(ctx.store.get_bytes(bucket, key))
    pushed = labelstudio.push(studio[0], studio[1], tasks)
    log.info("annotate %s: Label Studio project %s: %s", ctx.dataset, studio[1], pushed)
    return {"project": studio[1], **pushed,
            "ids": [t["data"]["granary_id"] for t in tasks]}


def _export_tasks(ctx: StageContext, df: pd.DataFrame, routed: set[str],
                  suggestion: dict[str, tuple[str, float]]) -> dict[str, Any]:
    """Label Studio import tasks for the records routed to people, with the model's
    suggestion as a pre-annotation, and the labelling config built from the guideline; both
    checked with label-studio-sdk's LabelInterface before they are written."""
    from label_studio_sdk.label_interface import LabelInterface

    spec = ctx.spec
    text = spec.schema_.text_field or "text"
    config = labelling.labelling_config(spec.guideline, spec.annotate.task)
    rows = df.loc[df["id"].isin(routed)]
    # a table without text shows people its fields, one "name: value" a line
    shown = (rows[text].tolist() if spec.schema_.text_field else
             ["\n".join(f"{f.name}: {shards.to_python(r.get(f.name))}"
                        for f in spec.schema_.fields if f.name != spec.schema_.label_field)
              for r in rows.to_dict(orient="records")])
    records = [{"id": rid, text: value,
                "suggested": suggestion.get(rid, (None, 0.0))[0],
                "confidence": suggestion.get(rid, (None, 0.0))[1]}
               for rid, value in zip(rows["id"].tolist(), shown, strict=True)]
    tasks = labelling.tasks(records, text, MODEL_VERSION)
    interface = LabelInterface(config)
    invalid = [t["data"]["granary_id"] for t in tasks
               if not interface.validate_task({"data": t["data"]})  # type: ignore[arg-type]
               or not all(interface.validate_prediction(p) for p in t.get("predictions", []))]
    if invalid:
        raise PermanentError(f"annotate {ctx.dataset}: {len(invalid)} Label Studio tasks do not "
                         f"fit the labelling config (first: {invalid[0]}); a suggested label "
                         "outside the guideline? Check annotate.labels")
    return {"count": len(tasks), "tasks_uri": _write_json(ctx, "label-studio-tasks.json", tasks),
            "config_uri": _write_text(ctx, "label-studio-config.xml", config)}

