"""Every spec builds a DAG; parsing opens no connection and stays fast; a broken spec is an
import error naming its file while the other DAGs still load."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from lifecycle.preprocess.scope import refusal
from lifecycle.spec import STAGES, discover

pytestmark = pytest.mark.unit


def _dagbag(folder: Path):  # type: ignore[no-untyped-def]
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(str(folder))


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    attempts: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise AssertionError(f"DAG parsing tried to connect to {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


def test_every_spec_builds_a_dag_without_connecting(repo: Path, no_network: list[object]) -> None:
    bag = _dagbag(repo / "dags")
    assert bag.import_errors == {}
    assert no_network == []
    consumer = bag.dags["example_consume_zh_shopping_reviews"]
    assert [a.uri for a in consumer.timetable.asset_condition.objects] == [
        "granary://datasets/zh_shopping_reviews"]
    specs, _ = discover(repo / "datasets")
    for loaded in specs:
        dag = bag.dags[f"granary_{loaded.spec.name}"]
        groups = {t.task_group.group_id for t in dag.tasks if t.task_group and
                  t.task_group.group_id}
        assert groups == set(STAGES)
        assert {"begin", "end"} <= set(dag.task_ids)
        assert dag.params["mode"] == "full" and dag.params["last_stage"] == "publish"
        assert dag.get_task("publish.release").pool == "granary_registry"
        # publishing updates the dataset's Asset; the example consumer is scheduled on it
        [outlet] = dag.get_task("publish.release").outlets
        assert outlet.uri == f"granary://datasets/{loaded.spec.name}"
        assert dag.get_task("collect.merge").retries == 2
        # collection fans out: one mapped task per source (or group of files)
        assert "Mapped" in type(dag.get_task("collect.fetch")).__name__
        assert dag.get_task("collect.plan").downstream_task_ids == {"collect.fetch"}
        # preprocessing: per shard, the deduplication partitioned, per shard again, then
        # merge; a spec listing near_dedup first, or a table with near_dedup: one global
        # dedup (lifecycle.preprocess.scope)
        preprocess = {t.task_id.removeprefix("preprocess.") for t in dag.tasks
                      if t.task_id.startswith("preprocess.")}
        for mapped in ("preprocess.clean", "preprocess.apply"):
            assert "Mapped" in type(dag.get_task(mapped)).__name__
        if refusal(loaded.spec) is not None:
            assert preprocess == {"plan", "clean", "deduplicate", "apply", "merge"}
            assert dag.get_task("preprocess.deduplicate").downstream_task_ids == {
                "preprocess.apply", "preprocess.merge"}
        else:
            assert preprocess == {"plan", "clean", "published", "scatter", "partition",
                                  "exact", "sift", "pairs", "verify", "components",
                                  "regroup", "stars", "cluster", "apply", "merge"}
            for mapped in ("scatter", "exact", "sift", "pairs", "verify", "regroup",
                           "stars"):
                assert "Mapped" in type(dag.get_task(f"preprocess.{mapped}")).__name__
            assert dag.get_task("preprocess.cluster").downstream_task_ids == {
                "preprocess.apply", "preprocess.merge"}
        # annotation as parts, texts and images alike (per shard, the model and the votes
        # once, per shard, the label check once, per shard, merge)
        annotate = {t.task_id.removeprefix("annotate.") for t in dag.tasks
                    if t.task_id.startswith("annotate.")}
        assert annotate == {"plan", "label", "train", "votes", "apply", "check", "flag",
                            "merge"}
        for mapped in ("annotate.label", "annotate.apply", "annotate.flag"):
            assert "Mapped" in type(dag.get_task(mapped)).__name__
        assert dag.get_task("annotate.check").downstream_task_ids == {
            "annotate.flag", "annotate.merge"}
        assert dag.get_task("annotate.merge").downstream_task_ids == {
            "synthesize.plan", "synthesize.merge"}
        # synthesis: per shard, the sample once, the candidates per chunk, per shard again,
        # decided per chunk, then merge
        for mapped in ("synthesize.mark", "synthesize.generate", "synthesize.screen",
                       "synthesize.decide"):
            assert "Mapped" in type(dag.get_task(mapped)).__name__
        assert dag.get_task("synthesize.sample").downstream_task_ids == {
            "synthesize.chunk", "synthesize.generate", "synthesize.screen", "synthesize.decide",
            "synthesize.merge"}
        assert dag.get_task("synthesize.generate").downstream_task_ids == {
            "synthesize.screen", "synthesize.decide", "synthesize.merge"}
        assert dag.get_task("synthesize.screen").downstream_task_ids == {"synthesize.decide"}
        # publishing: the plan, one write task per unit of parts, then the release
        assert "Mapped" in type(dag.get_task("publish.write")).__name__
        assert dag.get_task("publish.plan").downstream_task_ids == {
            "publish.write", "publish.release"}
        assert dag.get_task("publish.write").downstream_task_ids == {"publish.release"}
        assert dag.get_task("publish.write").pool != "granary_registry"
        assert loaded.spec.name in dag.tags
        assert loaded.spec.title in (dag.doc_md or "")
        assert dag.max_active_runs == 1
        assert dag.schedule is None  # triggered by hand; schedules run the refresh DAG
        # the refresh DAG: the stages before publishing in one task, then publish and end;
        # with people in Label Studio, begin and a task per stage
        fresh = bag.dags[f"granary_{loaded.spec.name}_refresh"]
        assert fresh.params["mode"] == "incremental" and fresh.max_active_runs == 1
        people = loaded.spec.annotate.people.label_studio is not None
        task = fresh.get_task("begin" if people else "collect_to_evaluate")
        chain = [task.task_id]
        while task.downstream_task_ids:
            [next_id] = task.downstream_task_ids
            task = fresh.get_task(next_id)
            chain.append(task.task_id)
        if not people:
            assert chain == ["collect_to_evaluate", "publish", "end"]
        else:
            assert chain[:3] == ["begin", "collect", "preprocess"] and chain[-1] == "end"
        assert fresh.get_task("publish").pool == "granary_registry"
        [outlet] = fresh.get_task("publish").outlets
        assert outlet.uri == f"granary://datasets/{loaded.spec.name}"
        assert "refresh" in fresh.tags and dag.dag_id in (fresh.doc_md or "")


def test_parsing_is_fast(repo: Path) -> None:
    bag = _dagbag(repo / "dags")
    durations = {Path(s.file).name: s.duration.total_seconds() for s in bag.dagbag_stats}
    assert durations, "no DAG file was parsed"
    assert all(d < 2.0 for d in durations.values()), durations


def test_broken_spec_is_an_import_error_and_others_still_load(
        repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    good = (repo / "datasets" / "zh_shopping_reviews.yaml").read_text(encoding="utf-8")
    (specs / "zh_shopping_reviews.yaml").write_text(good, encoding="utf-8")
    # two problems: the import error names both, each with its line
    broken = good.replace("name: zh_shopping_reviews", "name: broken_reviews").replace(
        "    format: text\n    label: positive", "    fromat: text\n    label: positive") \
        .replace("modality: text", "modality: txt", 1)
    (specs / "broken_reviews.yaml").write_text(broken, encoding="utf-8")
    monkeypatch.setenv("GRANARY_DATASETS_DIR", str(specs))
    bag = _dagbag(repo / "dags")
    assert "granary_zh_shopping_reviews" in bag.dags
    assert "granary_broken_reviews" not in bag.dags
    errors = {Path(f).name: text for f, text in bag.import_errors.items()}
    assert list(errors) == ["granary_spec_check.py"]
    message = errors["granary_spec_check.py"]
    assert "broken_reviews.yaml:" in message and "fromat" in message
    lines = broken.splitlines()
    for fragment, field in (("fromat:", "sources[0].fromat"), ("modality: txt", "modality")):
        line = next(i for i, text in enumerate(lines, 1) if fragment in text)
        assert f"broken_reviews.yaml:{line}: field '{field}'" in message


def test_a_derived_dataset_runs_when_its_upstream_publishes(
        repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    good = (repo / "datasets" / "zh_shopping_reviews.yaml").read_text(encoding="utf-8")
    (specs / "zh_shopping_reviews.yaml").write_text(good, encoding="utf-8")
    derived = (good.split("sources:")[0].replace("name: zh_shopping_reviews",
                                                  "name: reviews_positive")
               + "sources:\n  - {name: upstream, type: dataset, dataset: zh_shopping_reviews,\n"
               "     licence: {id: CC-BY-4.0, origin: zh_shopping_reviews, legal_basis: licence}}\n"
               + "schema:" + good.split("\nschema:", 1)[1])
    (specs / "reviews_positive.yaml").write_text(derived, encoding="utf-8")
    monkeypatch.setenv("GRANARY_DATASETS_DIR", str(specs))
    bag = _dagbag(repo / "dags")
    assert bag.import_errors == {}
    dag = bag.dags["granary_reviews_positive_refresh"]
    condition = dag.timetable.asset_condition
    assert [a.uri for a in getattr(condition, "objects", [condition])] == [
        "granary://datasets/zh_shopping_reviews"]
    assert dag.params["mode"] == "incremental"  # a refresh: the published version + the change
    assert "publishes a new version" in (dag.doc_md or "")
    assert bag.dags["granary_reviews_positive"].schedule is None
    assert bag.dags["granary_zh_shopping_reviews"].params["mode"] == "full"
    assert "granary_maintenance" in bag.dags


def test_a_failure_the_callback_records_names_the_stage_of_every_stage_task(
        repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every task of both DAGs (the refresh DAG's publish, annotate_finish... too): the
    stage the failure callback records is the one the task's description names (its doc_md,
    "<stage> stage of ..."); none for begin, end and the refresh DAG's collect_to_evaluate."""
    from types import SimpleNamespace

    import granary.runtime
    from granary.dagfactory import _failure_callback, build_dags
    from granary.settings import Settings

    specs = tmp_path / "specs"
    specs.mkdir()
    good = (repo / "datasets" / "zh_shopping_reviews.yaml").read_text(encoding="utf-8")
    (specs / "zh_shopping_reviews.yaml").write_text(good, encoding="utf-8")
    people = good.replace("name: zh_shopping_reviews", "name: reviews_people").replace(
        "\nannotate:\n", "\nannotate:\n  people: {label_studio: {connection: ls}}\n")
    (specs / "reviews_people.yaml").write_text(people, encoding="utf-8")
    dags, errors = build_dags(Settings(datasets_dir=specs))
    assert errors == [] and len(dags) == 4
    recorded: list[str | None] = []
    monkeypatch.setattr(granary.runtime, "record_failure",  # a double of the catalog write
                        lambda *a, **k: recorded.append(k.get("stage")))
    seen: set[str] = set()
    for dag in dags.values():
        for t in dag.tasks:
            doc = t.doc_md or ""
            expected = next((s for s in STAGES if doc.startswith(f"{s} stage of ")), None)
            ti = SimpleNamespace(task_id=t.task_id, try_number=3, map_index=-1,
                                 dag_id=dag.dag_id)
            _failure_callback("d")({"ti": ti, "run_id": "r", "exception": RuntimeError("x")})
            assert recorded.pop() == expected, (dag.dag_id, t.task_id, doc)
            seen.add(t.task_id)
    assert {"publish", "annotate", "annotate_finish", "annotate_wait_for_people",
            "annotate.wait_for_people", "annotate.finish_plan", "annotate.finish_apply",
            "annotate.finish",
            "collect.fetch", "collect_to_evaluate", "begin", "end"} <= seen
