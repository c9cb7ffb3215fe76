"""Annotation's people pass as parts (lifecycle.contract's ``STAGE_DEFS["annotate"].people``)
against a Label Studio server (the in-repo fake over HTTP): the parts send the records they
route to the project as the single task does, and after people answered, the people pass's
parts (their plan pulling the project's tasks once) give what the single task's ``finish``
gives: the same records, labels, sources, counts and report."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from granary.settings import Settings
from lifecycle.annotate import stage as annotate
from lifecycle.collect import stage as collect
from lifecycle.contract import STAGE_DEFS, run_parts
from lifecycle.preprocess import stage as preprocess
from lifecycle.records import shards
from tests.integration.test_annotation_parts import COLUMNS, _nulls, _read, _report
from tests.labelstudio_server import label_studio
from tests.stagectx import isolated, stage_context
from tests.tagged import SPEC, write_rows

pytestmark = pytest.mark.integration
LINKED = SPEC.replace("people: {completions: [label-studio/*.json]}",
                      "people: {label_studio: {connection: label_studio, poke_seconds: 1}}")


def test_the_people_pass_as_parts_gives_the_single_tasks_finish(
        s3: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = isolated(s3, tmp_path)
    write_rows(tmp_path / "inbox" / "reviews")
    declared = STAGE_DEFS["annotate"]
    assert declared.people is not None
    with label_studio() as (url, fake):
        monkeypatch.setenv("AIRFLOW_CONN_LABEL_STUDIO", json.dumps(
            {"conn_type": "http", "host": url, "password": fake.token}))
        ctx = stage_context(env, LINKED, "run-whole", rows_per_shard=60)
        cleaned = preprocess.run(ctx, collect.run(ctx))
        assert len(shards.read_manifest(ctx.store, cleaned.manifest_uri)["shards"]) > 1
        whole = annotate.run(ctx, cleaned)
        parts_ctx = stage_context(env, LINKED, "run-parts", rows_per_shard=60)
        first = run_parts(declared, parts_ctx, cleaned)["merge"]
        # the same records routed and sent to the one project (the single task sent them
        # first, so the parts' import finds them there)
        assert set(first.label_studio["ids"]) == set(whole.label_studio["ids"])
        assert first.counts == whole.counts and first.counts["routed_to_people"] > 0
        assert (first.label_studio["imported"], first.label_studio["already_there"]) == \
            (0, len(first.label_studio["ids"]))
        [project] = fake.projects.values()
        answers = {rid: "neg" if i % 2 else "pos"
                   for i, rid in enumerate(sorted(whole.label_studio["ids"]))}
        for rid, value in answers.items():
            fake.annotate(project["id"], rid, 11, value)
            fake.annotate(project["id"], rid, 12, value if i_agree(rid) else "neg")

        def pulls() -> int:
            return sum(r.startswith("GET /api/tasks") for r in fake.requests)

        before = pulls()
        final = annotate.finish(ctx, whole)
        single = pulls() - before
        results = run_parts(declared.people, parts_ctx, first)
        # pulled once, by the plan, for every shard: as many requests as the single task's
        assert pulls() - before - single == single > 0
        assert len(results["finish_plan"]) > 1 and all(
            u["pulled"] == results["finish_plan"][0]["pulled"] != ""
            for u in results["finish_plan"])
        mine = results["finish"]
    got, want = _read(parts_ctx, mine.manifest_uri), _read(ctx, final.manifest_uri)
    pd.testing.assert_frame_equal(_nulls(got[COLUMNS]), _nulls(want[COLUMNS]))
    assert mine.counts == final.counts and final.counts["label_sources"]["people"] > 0
    assert json.dumps(_report(parts_ctx, mine), sort_keys=True, default=str) == \
        json.dumps(_report(ctx, final), sort_keys=True, default=str)
    by_id = got.set_index("id")
    people = by_id.loc[by_id["label_source"] == "people"]
    assert set(people.index) <= set(answers) and len(people) > 0


def i_agree(rid: str) -> bool:
    """The second annotator agrees with the first on most records, not all: ties too."""
    return not rid.endswith(("0", "5"))

