"""The sample dataset's lifecycle DAG through Airflow's dag.test(), against a real S3 server,
a real git + DVC registry and a real catalog database."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from granary.demo import stage_sample
from granary.runtime import catalog, object_store, registry
from granary.settings import Settings
from lifecycle.records.shards import read_manifest, read_table
from lineage.naming import stage_description
from tests.e2e.sample import (
    both_files,
    expected_reviews,
    jaccard3,
    published_form,
    unmasked_mobiles,
)
from tests.outcome import check_golden, release_files

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def granary_env(s3: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    s = s3.model_copy(update={"home": tmp_path, "registry_url": str(tmp_path / "registry.git"),
                              "database_url": f"sqlite:///{tmp_path / 'catalog.db'}",
                              "inbox": tmp_path / "inbox"})
    for key, value in s.to_env().items():
        monkeypatch.setenv(key, value)
    stage_sample(s.inbox_dir)
    return s


def _dag(repo: Path, dag_id: str):  # type: ignore[no-untyped-def]
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(repo / "dags"))
    assert bag.import_errors == {}
    return bag.dags[dag_id]


def test_sample_dag_publishes_the_distinct_normalised_reviews(
        airflow_db: Path, granary_env: Settings, repo: Path, tmp_path: Path,
        openlineage_events_file: Path) -> None:
    dag = _dag(repo, "granary_zh_shopping_reviews")
    seen = openlineage_events_file.stat().st_size if openlineage_events_file.exists() else 0
    run = dag.test()
    assert run.state == "success"
    with open(openlineage_events_file, "rb") as fh:
        fh.seek(seen)
        events = [json.loads(line) for line in fh.read().decode().splitlines() if line]
    check_lineage(events, granary_env, tmp_path)
    check_events_portable(events, granary_env, tmp_path)

    cat = catalog(granary_env)
    v = cat.get_version("zh_shopping_reviews")
    assert v is not None and (v.version, v.tag) == (1, "zh_shopping_reviews/v1")
    assert cat.run("zh_shopping_reviews", run.run_id).status == "success"
    counts = {r.stage: r.counts for r in cat.stage_results("zh_shopping_reviews", run.run_id)}
    assert counts["collect"]["records"] == 35124  # every line of pos.txt and neg.txt
    pre = counts["preprocess"]
    assert pre["in"] == pre["kept"] + pre["quarantined"] + pre["merged"]
    assert counts["evaluate"]["grade"] == "A"  # the sample is clean, labelled and licensed
    assert v.quality["grade"] == "A" and set(v.quality["dimensions"]) >= {"completeness",
                                                                          "safety"}
    # publishing emitted an Asset event that schedules consumers; the example consumer runs
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    with create_session() as session:
        extras = [e.extra for e in session.scalars(
            select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.uri == "granary://datasets/zh_shopping_reviews"))]
    assert extras and extras[-1]["version"] == 1 and extras[-1]["grade"] == "A"
    assert extras[-1]["rows"] == v.row_count
    consumed = _dag(repo, "example_consume_zh_shopping_reviews").test()
    assert consumed.state == "success"
    [evaluation] = cat.evaluations("zh_shopping_reviews")
    assert (evaluation.status, evaluation.version, evaluation.grade) == ("published", 1, "A")
    assert v.quality["splits"].keys() == {"train", "validation", "test"}
    check_readme_figures(repo / "README.md", counts, v.ref, v.tag, v.row_count)

    assert registry(granary_env).tags("zh_shopping_reviews") == {1: "zh_shopping_reviews/v1"}
    out = registry(granary_env).fetch("zh_shopping_reviews", 1, tmp_path / "v1")
    # the same records as before any refactoring: the parts of each format, concatenated in
    # order, fingerprinted as the one file was (the golden files keep the one file's name)
    for fmt, name in (("parquet", "data.parquet"), ("jsonl", "data.jsonl")):
        check_golden([p.read_bytes() for p in release_files(out, fmt)], name,
                     f"zh_shopping_reviews-v1-{name}")
    lines = b"".join(p.read_bytes() for p in release_files(out, "jsonl")).decode(
        "utf-8").splitlines()
    texts = [json.loads(line)["text"] for line in lines]
    assert {json.loads(line)["split"] for line in lines} == {"train", "validation", "test"}
    assert "<svg class='chart radar'" in (out / "quality.html").read_text(encoding="utf-8")
    expected = expected_reviews()
    near = pre["merge_reasons"]["near_duplicate"]
    assert 0 < near < 500  # near-duplicate reviews were found and merged
    ann = counts["annotate"]
    # likely label errors are flagged in place (action flag), not sent to people
    assert ann["suspected_label_errors"] > 0 and ann["routed_to_people"] == 0
    assert ann["in"] == ann["kept"] + ann["quarantined"]
    # duplicate groups, exact and near, from the collected records' own labels and texts
    # (normalised here) and the merges table, not from the stages' counts or reports
    results = {r.stage: r.output_uri for r in cat.stage_results("zh_shopping_reviews",
                                                                 run.run_id)}
    store = object_store(granary_env)
    collected = read_table(store, read_manifest(store, results["collect"]))
    merges = read_table(store, read_manifest(store, results["preprocess"]), "merges")
    text_of = {i: published_form(t) for i, t in zip(collected["id"], collected["text"],
                                                    strict=True)}
    label_of = dict(zip(collected["id"], collected["label"], strict=True))
    near_rows = merges.loc[merges["reason"] == "near_duplicate"]
    assert len(near_rows) == near
    for rid, kept_id, sim in zip(near_rows["id"], near_rows["kept_id"],
                                 near_rows["similarity"], strict=True):
        exact = jaccard3(text_of[rid], text_of[kept_id])  # every merge verified: at 0.8
        assert exact >= 0.8 and round(exact, 4) == sim, (text_of[rid], text_of[kept_id])
    parent = dict(zip(merges["id"], merges["kept_id"], strict=True))
    votes: dict[str, Counter[str]] = {}
    top_of_text: dict[str, str] = {}
    for rid in collected["id"]:
        top = rid
        while top in parent:
            top = parent[top]
        votes.setdefault(top, Counter())[label_of[rid]] += 1
        top_of_text[text_of[rid]] = top
    conflicts = {top: v for top, v in votes.items() if len(v) > 1}
    assert ann["label_conflicts"] == pre["label_conflicts"] == len(conflicts) > 47
    # the 47 reviews found in both files are among them (some now in near groups)
    assert all(top_of_text[t] in conflicts for t in both_files())
    # resolved: the label a group carries more often wins, a tie is quarantined
    ties = ann["quarantine_reasons"].get("label_conflict", 0)
    tied = {top for top, v in conflicts.items() if len(set(v.values())) == 1}
    assert ties == len(tied) > 0
    published = {json.loads(line)["text"]: json.loads(line)["label"] for line in lines}
    assert not {text_of[top] for top in tied} & set(published)
    assert all(published[text_of[top]] == v.most_common(1)[0][0]
               for top, v in conflicts.items() if top not in tied)
    # every exact duplicate removed; what remains is the expected set less the near
    # duplicates and the ties
    assert len(texts) == len(set(texts)) == v.row_count == len(expected) - near - ties
    assert set(texts) <= expected
    assert json.loads((out / "manifest.json").read_text())["row_count"] == len(texts)
    # the reviews that carried mobile numbers are published masked (138****5678)
    assert pre["pii_found"]["mobile"] >= 10 and unmasked_mobiles(texts) == []
    assert sum(bool(re.search(r"1[3-9]\d\*{4}\d{4}", t)) for t in texts) >= 5

    # collection fanned out: one mapped fetch task per source; preprocessing per shard
    assert _map_indexes(dag.dag_id, run.run_id, "collect.fetch") == [0, 1]
    assert _map_indexes(dag.dag_id, run.run_id, "preprocess.clean") == [0, 1]
    assert _map_indexes(dag.dag_id, run.run_id, "preprocess.apply") == [0, 1]
    # its deduplication partitioned: per shard and per partition (one for 35,000 records)
    assert _map_indexes(dag.dag_id, run.run_id, "preprocess.sift") == [0, 1]
    assert _map_indexes(dag.dag_id, run.run_id, "preprocess.stars") == [0]
    assert pre["shards"] == 2

    # the run committed its incremental state: a run of the refresh DAG (what a schedule
    # triggers) over the unchanged files lands nothing new and carries the 35,124 records
    # forward
    refresh = _dag(repo, "granary_zh_shopping_reviews_refresh")
    again = refresh.test()
    assert again.state == "success"
    inc = {r.stage: r.counts for r in cat.stage_results("zh_shopping_reviews", again.run_id)}
    c = inc["collect"]
    assert (c["raw_new"], c["records_new"], c["unchanged"]) == (0, 0, 2)
    assert c["records"] == c["carried"] == 35124
    # nothing new since v1: the stages after collection do not run, and the run says so
    assert c["nothing_new"] and cat.run("zh_shopping_reviews", again.run_id).message == \
        "no new version: nothing new in the sources since zh_shopping_reviews@v1"
    assert set(inc) == {"collect"}  # no later stage ran
    # the refresh's first task stopped after collection and skipped publishing; `end`
    # closed the run
    assert _states(refresh.dag_id, again.run_id) == {
        "collect_to_evaluate": "success", "publish": "skipped", "end": "success"}

    # a run whose records equal v1's (here: evaluated again from the earlier stages'
    # outputs) makes no new version and wakes no consumer
    same = dag.test(run_conf={"mode": "full", "first_stage": "evaluate",
                              "last_stage": "publish"})
    assert same.state == "success"
    assert cat.run("zh_shopping_reviews", same.run_id).message == \
        "no new version: the records equal zh_shopping_reviews@v1"
    assert [x.version for x in cat.versions("zh_shopping_reviews")] == [1]
    from airflow.models.taskinstance import TaskInstance

    with create_session() as session:
        state = session.scalar(select(TaskInstance.state).where(
            TaskInstance.dag_id == dag.dag_id, TaskInstance.run_id == same.run_id,
            TaskInstance.task_id == "publish.release"))
        events = session.scalar(select(func.count()).select_from(AssetEvent).join(
            AssetModel, AssetEvent.asset_id == AssetModel.id).where(
            AssetModel.uri == "granary://datasets/zh_shopping_reviews"))
    assert state == "skipped" and events == len(extras)

    # a refresh with three new reviews: the published version plus exactly those three
    with open(granary_env.inbox_dir / "zh_shopping_reviews" / "pos.txt", "a",
              encoding="utf-8") as fh:
        fh.write("这款台灯做工精致,光线柔和,第一次买就很满意。\n"
                 "快递第二天就到了,耳机音质清楚,推荐给朋友。\n"
                 "水杯保温效果超出预期,颜色也漂亮,五星好评。\n")
    seen = openlineage_events_file.stat().st_size
    fresh = refresh.test()
    assert fresh.state == "success"
    with open(openlineage_events_file, "rb") as fh:
        fh.seek(seen)
        events = [json.loads(line) for line in fh.read().decode().splitlines() if line]
    check_refresh_lineage(events, granary_env, tmp_path)
    counts = {r.stage: r.counts for r in cat.stage_results("zh_shopping_reviews",
                                                           fresh.run_id)}
    assert counts["collect"]["records_new"] == 3 and counts["preprocess"]["in"] == 3
    assert counts["evaluate"]["refresh"]["added"] == 3
    v2 = cat.get_version("zh_shopping_reviews", 2)
    assert v2 is not None and v2.row_count == v.row_count + 3
    assert cat.run("zh_shopping_reviews", fresh.run_id).message == \
        "published zh_shopping_reviews@v2"
    trace_every_record(granary_env, {1: pre["merged"],
                                     2: pre["merged"] + counts["preprocess"]["merged"]})
    assert _states(refresh.dag_id, fresh.run_id) == {
        "collect_to_evaluate": "success", "publish": "success", "end": "success"}

    # a dataset runs one run at a time across its two DAGs: while a lifecycle run is going,
    # a refresh stops before its first stage and skips publishing (the next refresh picks
    # up what is new), and says why ...
    blocker = _running_run(dag.dag_id)
    try:
        held = refresh.test()
        assert held.state == "success"
        assert _states(refresh.dag_id, held.run_id) == {
            "collect_to_evaluate": "success", "publish": "skipped", "end": "success"}
        record = cat.run("zh_shopping_reviews", held.run_id)
        assert (record.status, record.message) == (
            "skipped", "skipped: a run of the lifecycle DAG granary_zh_shopping_reviews is "
                       "going; the next refresh picks up what is new")
        assert cat.stage_results("zh_shopping_reviews", held.run_id) == []
    finally:
        _finish_run(dag.dag_id, blocker)
    # ... and a lifecycle run triggered while a refresh is going fails at begin, saying so
    blocker = _running_run(refresh.dag_id)
    try:
        refused = dag.test()
        assert refused.state == "failed"
        assert _states(dag.dag_id, refused.run_id)["begin"] == "failed"
        record = cat.run("zh_shopping_reviews", refused.run_id)
        assert record.status == "failed" and record.message.startswith(
            "refused: a run of the refresh DAG granary_zh_shopping_reviews_refresh is going")
    finally:
        _finish_run(refresh.dag_id, blocker)
    assert [x.version for x in cat.versions("zh_shopping_reviews")] == [1, 2]

    # the daily maintenance DAG: ledgers intact, nothing to prune or re-evaluate yet
    daily = _dag(repo, "granary_maintenance").test()
    assert daily.state == "success"
    health = next(d for d in cat.datasets() if d.name == "zh_shopping_reviews").health
    assert health["ledger"] == {"ok": True, "versions": 2, "files": health["ledger"]["files"],
                                "findings": []}
    assert health["ledger"]["files"] > 0 and health["pruned"]["runs"] == []
    assert health["reevaluated"] == [] and health["stale"] is False



def check_readme_figures(readme: Path, counts: dict[str, dict], ref: str, tag: str,
                         rows: int) -> None:
    """The README's `make demo` figures are this run's: every ``key=value`` it shows on a
    stage's line, and the published line, equal what the catalog recorded."""
    text = readme.read_text(encoding="utf-8")
    block = text.split("**`make demo`**", 1)[1].split("```", 2)[1]
    shown = 0
    for line in block.splitlines():
        stage, _, rest = line.partition(" ")
        if stage in counts:
            for key, value in re.findall(r"(\w+)=(\d+)", rest):
                assert counts[stage][key] == int(value), (stage, key, counts[stage][key])
                shown += 1
    assert shown >= 8, block
    published = re.search(r"published (\S+) \(tag (\S+), (\d+) records\)", block)
    assert published is not None, block
    assert published.groups() == (ref, tag, str(rows)), published.groups()

def trace_every_record(settings: Settings, merged: dict[int, int]) -> None:
    """Every record of each published version traces to a raw object and the line of it that
    holds its text (cut from the raw bytes, not parsed), and so do the duplicates it
    absorbed; v2's records carried from v1 too. ``merged``: records preprocessing merged
    for the version, of which those published records absorbed (the others were merged into
    a record annotation then set aside as a tied label conflict)."""
    import time

    from granary.runtime import object_store
    from lifecycle.spec import load_spec
    from tests.tracecheck import lines_hold_texts, walk

    cat, store = catalog(settings), object_store(settings)
    spec = load_spec(settings.datasets_dir / "zh_shopping_reviews.yaml").spec
    for number, most in merged.items():
        started = time.perf_counter()
        found = walk(cat, store, "zh_shopping_reviews", number, settings.bucket_raw, spec)
        walked = time.perf_counter() - started
        counts = found["counts"]
        absorbed = sum(v for k, v in counts.items() if k.startswith("absorbed_"))
        checked = lines_hold_texts(store, found["traces"])
        print(f"traced all {counts['records']} records of zh_shopping_reviews@v{number} in "
              f"{walked:.1f} s ({absorbed} absorbed duplicates, {counts.get('carried', 0)} "
              f"carried; {checked} origins' lines checked against the raw bytes)")
        v = cat.get_version("zh_shopping_reviews", number)
        assert v is not None and counts["records"] == v.row_count
        assert 0 < absorbed <= most and checked == counts["records"] + absorbed
        assert counts.get("carried", 0) == (0 if number == 1 else
                                           cat.get_version("zh_shopping_reviews", 1).row_count)


def _running_run(dag_id: str) -> str:
    """A run of ``dag_id`` that Airflow's database holds as running (as a scheduler would
    while its tasks work); its run id."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunType

    run_id = f"manual__held_{dag_id}"
    with create_session() as session:
        session.add(DagRun(dag_id=dag_id, run_id=run_id, run_type=DagRunType.MANUAL,
                           state=DagRunState.RUNNING))
    return run_id


def _finish_run(dag_id: str, run_id: str) -> None:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from sqlalchemy import update

    with create_session() as session:
        session.execute(update(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
                        .values(state=DagRunState.SUCCESS))


def _states(dag_id: str, run_id: str) -> dict[str, str]:
    """task id -> state of a run's unmapped (or not yet expanded) task instances."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(select(TaskInstance.task_id, TaskInstance.state).where(
            TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id,
            TaskInstance.map_index == -1))
        return {task: str(state) for task, state in rows}


def _map_indexes(dag_id: str, run_id: str, task_id: str) -> list[int]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(select(TaskInstance.map_index).where(
            TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id,
            TaskInstance.task_id == task_id, TaskInstance.state == "success"))
        return sorted(rows)


def test_run_from_a_later_stage_reuses_earlier_outputs(
        airflow_db: Path, granary_env: Settings, repo: Path) -> None:
    # the first 1,500 reviews of each file are enough to show the reuse (and keep it quick)
    for name in ("pos.txt", "neg.txt"):
        path = granary_env.inbox_dir / "zh_shopping_reviews" / name
        lines = path.read_text(encoding="utf-8-sig").splitlines()[:1500]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    dag = _dag(repo, "granary_zh_shopping_reviews")
    # full confs: dag.test() keeps params given to an earlier call on the same DAG object
    first = dag.test(run_conf={"first_stage": "collect", "last_stage": "preprocess"})
    assert first.state == "success"
    cat = catalog(granary_env)
    assert {r.stage for r in cat.stage_results("zh_shopping_reviews", first.run_id)} == \
        {"collect", "preprocess"}
    assert cat.versions("zh_shopping_reviews") == []

    second = dag.test(run_conf={"first_stage": "annotate", "last_stage": "publish"})
    assert second.state == "success"
    stages = {r.stage: r for r in cat.stage_results("zh_shopping_reviews", second.run_id)}
    assert {s for s, r in stages.items() if r.status == "success"} == \
        {"annotate", "synthesize", "evaluate", "publish"}
    assert {s for s, r in stages.items() if r.status == "reused"} == {"collect", "preprocess"}
    first_pre = {r.stage: r for r in cat.stage_results("zh_shopping_reviews", first.run_id)}
    assert stages["preprocess"].output_uri == first_pre["preprocess"].output_uri
    assert cat.get_version("zh_shopping_reviews").run_id == second.run_id


def test_inverted_stage_range_fails_fast_and_is_recorded(
        airflow_db: Path, granary_env: Settings, repo: Path) -> None:
    dag = _dag(repo, "granary_zh_shopping_reviews")
    run = dag.test(run_conf={"first_stage": "publish", "last_stage": "collect"})
    assert run.state == "failed"
    recorded = catalog(granary_env).run("zh_shopping_reviews", run.run_id)
    assert recorded.status == "failed" and "comes after last_stage" in recorded.message
    assert catalog(granary_env).stage_results("zh_shopping_reviews", run.run_id) == []


def check_lineage(events: list[dict], settings: Settings, tmp_path: Path) -> None:
    """Every event the run emitted is valid OpenLineage, and the lineage store built from them
    leads from the published version back to each raw file, through every stage, with counts."""
    from lineage.validate import validate_event

    assert events, "the run emitted no OpenLineage event"
    for e in events:
        validate_event(e)  # core fields and every facet by its _schemaURL
    by_job: dict[str, set[str]] = {}
    for e in events:
        by_job.setdefault(e["job"]["name"], set()).add(e["eventType"])
    for stage, task in (("collect", "merge"), ("preprocess", "merge"),
                        ("annotate", "merge"), ("synthesize", "merge"),
                        ("evaluate", "grade"), ("publish", "release")):
        job = f"granary_zh_shopping_reviews.{stage}.{task}"
        assert {"START", "RUNNING", "COMPLETE"} <= by_job[job], job
    declared = [e for e in events if e["eventType"] == "RUNNING"]
    assert all("parent" in e["run"]["facets"] for e in declared)
    conservation = {e["run"]["facets"]["granary_conservation"]["stage"]:
                    e["run"]["facets"]["granary_conservation"] for e in declared}
    pre = conservation["preprocess"]
    assert pre["recordsIn"] == pre["kept"] + pre["quarantined"] + pre["merged"] == 35124
    publish = next(e for e in declared if e["job"]["name"].endswith("publish.release"))
    out = publish["outputs"][0]
    assert out["facets"]["granary_registry"]["tag"] == "zh_shopping_reviews/v1"
    assert out["facets"]["granary_licence"]["licence"] == "MIT"
    # the published dataset is named by its release folder, an existing prefix of the
    # releases bucket that holds every file of the version
    assert (out["namespace"], out["name"]) == (f"s3://{settings.bucket_releases}",
                                               "zh_shopping_reviews/v1")
    released = {o.key for o in object_store(settings).list(settings.bucket_releases,
                                                           f"{out['name']}/")}
    assert f"{out['name']}/manifest.json" in released
    assert len(released) == out["outputFacets"]["outputStatistics"]["fileCount"]
    # the job facets of a stage's task are Granary's: the stage's description and the
    # spec's owners (the provider builds them from the task's doc_md and owner)
    for e in events:
        if e["job"]["name"] == "granary_zh_shopping_reviews.preprocess.merge":
            job = e["job"]["facets"]
            assert job["documentation"]["description"] == stage_description(
                "Chinese shopping reviews (sentiment)", "preprocess"), e["eventType"]
            assert [o["name"] for o in job["ownership"]["owners"]] == ["granary-data"]
    evaluate = next(e for e in declared if e["job"]["name"].endswith("evaluate.grade"))
    assertions = evaluate["outputs"][0]["facets"]["dataQualityAssertions"]["assertions"]
    assert len(assertions) == 12 and all(a["success"] for a in assertions)  # 11 + 1 listed

    node = f"dataset:s3://{settings.bucket_releases}:zh_shopping_reviews/v1"
    graph = _graph(events, tmp_path / "lineage.db", node)
    raw = {i for i in graph if i.startswith(f"dataset:s3://{settings.bucket_raw}:")}
    assert len(raw) == 2 and all(r.endswith(".txt") for r in raw)
    jobs = {n["data"]["name"].split(".")[1] for n in graph.values() if n["type"] == "JOB"}
    assert jobs == {"collect", "preprocess", "annotate", "synthesize", "evaluate", "publish"}
    versions = graph[node]["data"]["versions"]
    assert versions[0]["rowCount"] < len(expected_reviews()) and versions[0]["tag"]


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def check_events_portable(events: list[dict], settings: Settings, tmp_path: Path) -> None:
    """No event names this machine's folders (the checkout, the home directory, the Granary
    home), and the JSON schema of every Granary facet answers at its ``_schemaURL``, the
    configured public URL of the web app, without a token (the app mounted as Airflow
    mounts it, asked through a test client)."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from granary.webapp import create_app

    folders = {str(REPO): "the checkout", str(Path.home()): "the home directory",
               str(tmp_path): "the Granary home"}
    for e in events:
        for text in _strings(e):
            for folder, what in folders.items():
                assert not re.search(rf"{re.escape(folder)}(/|$|[^\w.-])", text), \
                    f"{what} in {e['job']['name']} {e['eventType']}: {text[:200]}"
    schemas = {f["_schemaURL"] for e in events for f in _facets(e)
               if f.get("_schemaURL", "").split("#")[0].rsplit("/", 1)[-1].startswith(
                   "Granary")}
    assert len(schemas) >= 4  # conservation, licence, registry, quality
    airflow = FastAPI()
    airflow.mount("/granary", create_app(settings))
    with TestClient(airflow) as client:
        for url in sorted(schemas):
            document, _, facet = url.partition("#/$defs/")
            assert document.startswith(f"{settings.public_url}/schemas/"), url
            answer = client.get(document)  # no token
            assert answer.status_code == 200, (url, answer.text[:200])
            assert facet in answer.json()["$defs"]


def _facets(event: dict) -> list[dict]:
    found = [*event["run"].get("facets", {}).values(), *event["job"].get("facets", {}).values()]
    for ds in [*event.get("inputs", []), *event.get("outputs", [])]:
        for group in ("facets", "inputFacets", "outputFacets"):
            found.extend(ds.get(group, {}).values())
    return [f for f in found if isinstance(f, dict)]


def _graph(events: list[dict], db: Path, node: str) -> dict[str, dict]:
    """The lineage store built from ``events`` (every one accepted): the graph around
    ``node``, by node id."""
    from lineage.store import LineageStore
    from storage.catalog import Catalog

    catalog = Catalog(f"sqlite:///{db}")
    catalog.migrate()
    store = LineageStore(catalog)
    assert all(store.add_many(events))
    return {n["id"]: n for n in store.graph(node, depth=30)["graph"]}


def check_refresh_lineage(events: list[dict], settings: Settings, tmp_path: Path) -> None:
    """A refresh's stages before publishing run in one task, and each is still a job of its
    own: a run whose parent is that task's run, with its datasets and counts; the lineage
    store leads from the new version back to the new raw file through every stage."""
    from lineage.validate import validate_event

    for e in events:
        validate_event(e)
    prefix = "granary_zh_shopping_reviews_refresh"
    [task_run] = {e["run"]["runId"] for e in events
                  if e["job"]["name"] == f"{prefix}.collect_to_evaluate"}
    by_job: dict[str, list[dict]] = {}
    for e in events:
        by_job.setdefault(e["job"]["name"], []).append(e)
    for stage in ("collect", "preprocess", "annotate", "synthesize", "evaluate"):
        stage_events = by_job[f"{prefix}.{stage}"]
        assert [e["eventType"] for e in stage_events] == ["START", "COMPLETE"], stage
        assert len({e["run"]["runId"] for e in stage_events} - {task_run}) == 1
        for e in stage_events:
            parent = e["run"]["facets"]["parent"]
            assert (parent["run"]["runId"], parent["job"]["name"]) == (
                task_run, f"{prefix}.collect_to_evaluate")
            assert parent["root"]["job"]["name"] == prefix
        done = stage_events[-1]
        assert done["run"]["facets"]["granary_conservation"]["stage"] == stage
        assert done["outputs"], stage
    pre = by_job[f"{prefix}.preprocess"][-1]["run"]["facets"]["granary_conservation"]
    assert pre["recordsIn"] == pre["kept"] == 3
    publish = [e for e in by_job[f"{prefix}.publish"] if e["eventType"] == "RUNNING"]
    assert publish[0]["outputs"][0]["facets"]["granary_registry"]["tag"] == \
        "zh_shopping_reviews/v2"
    assert publish[0]["outputs"][0]["name"] == "zh_shopping_reviews/v2"
    # a stage inside the task is a job of its own, with Granary's description and owners
    job = by_job[f"{prefix}.annotate"][-1]["job"]["facets"]
    assert job["documentation"]["description"] == stage_description(
        "Chinese shopping reviews (sentiment)", "annotate")
    assert [o["name"] for o in job["ownership"]["owners"]] == ["granary-data"]
    check_events_portable(events, settings, tmp_path)

    node = f"dataset:s3://{settings.bucket_releases}:zh_shopping_reviews/v2"
    graph = _graph(events, tmp_path / "refresh-lineage.db", node)
    assert any(i.startswith(f"dataset:s3://{settings.bucket_raw}:") for i in graph)
    jobs = {n["data"]["name"] for n in graph.values() if n["type"] == "JOB"}
    assert {f"{prefix}.{s}" for s in ("collect", "preprocess", "annotate", "synthesize",
                                      "evaluate", "publish")} <= jobs


def test_a_failed_stage_records_its_cause_and_the_run_says_it(
        airflow_db: Path, granary_env: Settings, repo: Path) -> None:
    """Collection finds no file (the inbox was emptied): the task fails at once (retrying
    cannot help), its cause is in the catalog before `end` runs, and the run says it."""
    for path in (granary_env.inbox_dir / "zh_shopping_reviews").iterdir():
        path.unlink()
    dag = _dag(repo, "granary_zh_shopping_reviews")
    run = dag.test(run_conf={"mode": "full", "first_stage": "collect",
                             "last_stage": "publish"})
    assert run.state == "failed"
    states = _states(dag.dag_id, run.run_id)
    assert states["collect.plan"] == "failed" and states["end"] == "success"
    cat = catalog(granary_env)
    [f] = cat.failures("zh_shopping_reviews", run.run_id)
    assert (f.stage, f.task_id, f.map_index, f.error_type) == (
        "collect", "collect.plan", -1, "SourceError")
    assert (f.try_number, f.will_retry) == (1, False)  # a permanent error: no retry
    assert f.details["source"] == "positive" and f.details["dag_id"] == dag.dag_id
    assert f.message.startswith("source 'positive': no file matches")
    assert f.file == str(granary_env.inbox_dir / "zh_shopping_reviews" / "pos.txt")
    record = cat.run("zh_shopping_reviews", run.run_id)
    assert record.status == "failed" and record.message == f.summary()
