"""The human round trip against a real Label Studio server (tests/labelstudio_live.py), not
the stand-in: the annotate stage sends the records it routes to people with Granary's client
(label-studio-sdk, a Personal Access Token), two people sign in to Label Studio's web app and
submit their annotations through its API, the deferrable wait's trigger sees them and ends,
and the stage's second pass reads their labels back into the records; the same for
bounding boxes on images.

Skips, saying why, where Label Studio cannot be installed (no PyPI); .ci/run sets
GRANARY_TEST_REQUIRE_LABEL_STUDIO=1, which makes that a failure."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from granary.settings import Settings
from lifecycle.annotate import labelstudio
from lifecycle.annotate import stage as annotate
from lifecycle.collect import stage as collect
from lifecycle.preprocess import stage as preprocess
from lifecycle.records import shards
from lifecycle.records.shards import parse_uri
from tests.labelstudio_live import (
    REQUIRED,
    VERSION,
    LiveLabelStudio,
    Unavailable,
    label_studio_server,
    prepare,
)
from tests.stagectx import isolated, stage_context
from tests.tagged import NEUTRAL, SPEC, write_rows

pytestmark = pytest.mark.integration
LINKED = SPEC.replace("people: {completions: [label-studio/*.json]}",
                      "people: {label_studio: {connection: label_studio, poke_seconds: 1}}")


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveLabelStudio]:
    """One real server for the module, with its admin and a second annotator (who signs up)
    signed in."""
    try:
        prepare()
    except Unavailable as e:
        if os.environ.get(REQUIRED) == "1":
            pytest.fail(f"{REQUIRED}=1 and Label Studio {VERSION} could not be installed: {e}")
        pytest.skip(f"real Label Studio {VERSION} could not be installed here, so the round "
                    f"trip against it did not run (the stand-in's tests did): {e}")
    with label_studio_server(tmp_path_factory.mktemp("label-studio")) as server:
        server.sign_up("ana@granary.test", "ana-labels-pw")
        yield server


def _connect(monkeypatch: pytest.MonkeyPatch, studio: LiveLabelStudio, token: str,
             conn_id: str = "label_studio") -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(
        {"conn_type": "http", "host": studio.url, "password": token}))


def _tasks(studio: LiveLabelStudio, project: int) -> dict[str, Any]:
    """The project's task list as the API gives it, read apart from Granary's client."""
    answer = studio.admin.web.get("/api/tasks/", params={"project": project, "page_size": 1000})
    answer.raise_for_status()
    return answer.json()  # type: ignore[no-any-return]


def _wait(project: int, ids: list[str], deadline: datetime,
          conn_id: str = "label_studio") -> dict[str, Any]:
    """The first event of the wait_for_people sensor's trigger, run as the triggerer runs it
    (serialised, rebuilt, its async generator driven)."""
    from granary.people import LabelStudioTrigger

    _, kwargs = LabelStudioTrigger(conn_id, project, ids, 1.0, 0.2,
                                   deadline.isoformat()).serialize()

    async def first_event() -> dict[str, Any]:
        async for event in LabelStudioTrigger(**kwargs).run():
            return event.payload  # type: ignore[no-any-return]
        raise AssertionError("the trigger ended without an event")

    return asyncio.run(first_event())


def _choice(label: str) -> list[dict[str, Any]]:
    """The result the labelling page submits for one choice in Granary's config."""
    return [{"from_name": "label", "to_name": "text", "type": "choices",
             "value": {"choices": [label]}}]


def test_a_real_label_studio_round_trip_with_the_deferred_wait(
        studio: LiveLabelStudio, s3: Settings, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    env = isolated(s3, tmp_path, lineage_api_key=SecretStr("k"))
    write_rows(tmp_path / "inbox" / "reviews")
    admin, other = studio.people
    assert admin.token.count(".") == 2  # a Personal Access Token (a JWT), not a legacy key
    _connect(monkeypatch, studio, admin.token)
    ctx = stage_context(env, LINKED, "run-live", rows_per_shard=120)
    cleaned = preprocess.run(ctx, collect.run(ctx))
    # tasks out: the project made from the guideline, one task per routed record
    first = annotate.run(ctx, cleaned)
    sent = first.label_studio
    routed = sorted(sent["ids"])
    assert len(routed) == first.counts["routed_to_people"] >= len(NEUTRAL)
    assert (sent["imported"], sent["already_there"]) == (len(routed), 0)
    project = admin.web.get(f"/api/projects/{sent['project']}/").json()
    assert project["title"] == "Granary: tagged_reviews"
    assert 'hint="the buyer is satisfied"' in project["label_config"]
    listed = _tasks(studio, project["id"])
    held = {t["data"]["granary_id"]: t["id"] for t in listed["tasks"]}
    assert sorted(held) == routed and listed["total"] == len(routed)
    again = annotate.run(ctx, cleaned)  # a retried task imports nothing twice
    assert again.label_studio["imported"] == 0
    assert _tasks(studio, project["id"])["total"] == len(routed)

    # the title of a dataset with the longest name fits the server's 50 characters
    client = labelstudio.server("label_studio").client()
    long_title = labelstudio.project_title("d" * 64)
    assert labelstudio.ensure_project(client, long_title, project["label_config"], "") \
        != project["id"]

    # nobody has labelled yet: the wait runs out
    late = _wait(project["id"], routed, datetime.now(UTC) + timedelta(seconds=1))
    assert (late["status"], late["done"], late["total"]) == ("timeout", 0, len(routed))
    # the admin's legacy token is refused by a new organisation: the wait says so
    legacy = admin.web.get("/api/current-user/token").json()["token"]
    _connect(monkeypatch, studio, legacy, "label_studio_legacy")
    refused = _wait(project["id"], routed, datetime.now(UTC) + timedelta(seconds=1),
                    "label_studio_legacy")
    assert refused["status"] == "timeout" and "status_code: 401" in refused["error"]
    assert "legacy token authentication has been disabled" in refused["error"]

    # two people label every task in Label Studio; the wait ends
    answers = {rid: "neg" if i % 2 else "pos" for i, rid in enumerate(routed)}
    for rid, label in answers.items():
        for person in (admin, other):
            stored = person.submit(held[rid], _choice(label))
            assert stored["completed_by"] == person.id
    done = _wait(project["id"], routed, datetime.now(UTC) + timedelta(minutes=2))
    assert (done["status"], done["done"], done["total"]) == ("done", len(routed),
                                                             len(routed))

    # results in: the second pass reads what they answered, and the records carry it
    final = annotate.finish(ctx, first)
    out = shards.read_table(ctx.store, shards.read_manifest(ctx.store, final.manifest_uri))
    by_id = out.set_index("id")
    read_back = {rid: (by_id.loc[rid, "label"], by_id.loc[rid, "label_source"])
                 for rid in routed if rid in by_id.index}
    assert len(read_back) >= len(NEUTRAL)  # the records that stayed (none was a conflict tie)
    assert read_back == {rid: (answers[rid], "people") for rid in read_back}
    assert final.counts["routed_to_people"] == 0 and final.counts["unlabelled"] == 0
    bucket, key = parse_uri(final.reports["annotation_report"])
    people = json.loads(ctx.store.get_bytes(bucket, key))["people"]
    assert people["completions"] == 2 * len(routed)
    assert sorted(people["annotators"]) == sorted(str(p.id) for p in (admin, other))
    assert people["agreement"]["overall"] == 1.0  # both gave the same label everywhere


def test_boxes_drawn_in_a_real_label_studio_come_back(
        studio: LiveLabelStudio, s3: Settings, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Images go out as tasks of a RectangleLabels project, with links that serve them; two
    people draw a box on each; the boxes come back averaged, in pixels."""
    import httpx

    from tests.integration.test_image_annotation import _rect, box_scenes

    admin, other = studio.people
    _connect(monkeypatch, studio, other.token)  # any member's token will do
    s = isolated(s3, tmp_path)
    truth, spec = box_scenes(s)
    ctx = stage_context(s, spec, "run-live")
    up = preprocess.run(ctx, collect.run(ctx))
    first = annotate.run(ctx, up)
    sent = first.label_studio
    project = admin.web.get(f"/api/projects/{sent['project']}/").json()
    assert project["title"] == "Granary: digit_people"
    assert "<RectangleLabels" in project["label_config"]
    tasks = _tasks(studio, project["id"])["tasks"]
    assert len(tasks) == sent["imported"] == 3
    for task in tasks:  # the link in each task serves the image
        assert httpx.get(task["data"]["image"], timeout=30).status_code == 200
        x, y = truth[task["data"]["file_name"].rsplit("/", 1)[-1]]
        for person, dx in ((admin, 1), (other, -1)):
            person.submit(task["id"], [_rect("zero", x + dx, y)])
    done = _wait(project["id"], sorted(sent["ids"]), datetime.now(UTC) + timedelta(minutes=2))
    assert (done["status"], done["done"]) == ("done", 3)
    final = annotate.finish(ctx, first)
    assert final.counts["images_with_boxes"] == 3 and final.counts["routed_to_people"] == 0
    out = shards.read_table(ctx.store, shards.read_manifest(ctx.store, final.manifest_uri))
    boxes = {name.rsplit("/", 1)[-1]: json.loads(b)
             for name, b in zip(out["file_name"], out["boxes"], strict=True)}
    for name, (x, y) in truth.items():
        [box] = boxes[name]
        assert (box["label"], box["x"], box["y"]) == ("zero", x, y)  # the two averaged
