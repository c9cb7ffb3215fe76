"""The annotate stage waits for people through Airflow: dag.test() runs the DAG of a dataset
whose spec names a Label Studio server; the wait_for_people sensor defers, its trigger polls
the project while people (a thread here) label the tasks, and the finished version carries
their labels."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from granary.runtime import catalog, registry
from granary.settings import Settings
from tests.labelstudio_server import label_studio
from tests.outcome import read_release
from tests.tagged import NEUTRAL, SPEC, write_rows

pytestmark = pytest.mark.e2e
LINKED = SPEC.replace("people: {completions: [label-studio/*.json]}",
                      "people: {label_studio: {connection: label_studio, poke_seconds: 1,\n"
                      "                          timeout_minutes: 5}}") + \
    "quality: {gate: {min_rows: 100}}\n"


def _people(fake, stop: threading.Event) -> None:  # type: ignore[no-untyped-def]
    """Label every task as soon as the project holds them (two annotators each)."""
    while not stop.is_set():
        for pid, tasks in fake.tasks.items():
            if tasks and all(not t["annotations"] for t in tasks):
                time.sleep(0.5)  # let the import finish
                for i, t in enumerate(fake.tasks[pid]):
                    for who in (21, 22):
                        fake.annotate(pid, t["data"]["granary_id"], who,
                                      "neg" if i % 2 else "pos")
                return
        time.sleep(0.2)


def test_the_dag_waits_for_people_and_publishes_their_labels(
        airflow_db: Path, s3: Settings, tmp_path: Path, repo: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.dag_processing.dagbag import DagBag

    s = s3.model_copy(update={"home": tmp_path, "registry_url": str(tmp_path / "reg.git"),
                              "database_url": f"sqlite:///{tmp_path / 'catalog.db'}",
                              "inbox": tmp_path / "inbox",
                              "datasets_dir": tmp_path / "datasets"})
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "tagged_reviews.yaml").write_text(LINKED, encoding="utf-8")
    write_rows(tmp_path / "inbox" / "reviews")
    for key, value in s.to_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("GRANARY_DATASETS_DIR", str(tmp_path / "datasets"))
    with label_studio() as (url, fake):
        monkeypatch.setenv("AIRFLOW_CONN_LABEL_STUDIO", json.dumps(
            {"conn_type": "http", "host": url, "password": fake.token}))
        bag = DagBag(str(repo / "dags"))
        assert bag.import_errors == {}
        dag = bag.dags["granary_tagged_reviews"]
        # annotation as parts, then again as parts after the wait (finish_plan ... finish)
        assert {"annotate.merge", "annotate.wait_for_people", "annotate.finish_plan",
                "annotate.finish_label", "annotate.finish"} <= set(dag.task_dict)
        assert dag.task_dict["annotate.wait_for_people"].upstream_task_ids == {
            "annotate.merge"}
        # its refresh DAG waits for people too: a task per stage, not the stages in one
        assert set(bag.dags["granary_tagged_reviews_refresh"].task_dict) == {
            "begin", "collect", "preprocess", "annotate", "annotate_wait_for_people",
            "annotate_finish", "synthesize", "evaluate", "publish", "end"}
        stop = threading.Event()
        people = threading.Thread(target=_people, args=(fake, stop), daemon=True)
        people.start()
        try:
            run = dag.test()
        finally:
            stop.set()
        assert run.state == "success"
        [project] = fake.projects.values()
        sent = {t["data"]["granary_id"]: t for t in fake.tasks[project["id"]]}
        assert len(sent) >= len(NEUTRAL)

    # the sensor deferred to its trigger and resumed with what people had done
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        waited = session.scalar(XComModel.get_many(
            run_id=run.run_id, key="return_value", dag_ids=dag.dag_id,
            task_ids="annotate.wait_for_people"))
        outcome = XComModel.deserialize_value(waited)["people"]
    assert (outcome["status"], outcome["done"]) == ("done", len(sent))

    cat = catalog(s)
    counts = {r.stage: r.counts for r in cat.stage_results("tagged_reviews", run.run_id)}
    assert counts["annotate"]["routed_to_people"] == 0
    assert counts["annotate"]["label_sources"]["people"] == len(sent)
    out = registry(s).fetch("tagged_reviews", 1, tmp_path / "v1")
    published = read_release(out).set_index("id")
    for i, (rid, _) in enumerate(sent.items()):
        assert published.loc[rid, "label_source"] == "people"
        assert published.loc[rid, "label"] == ("neg" if i % 2 else "pos")
    assert set(NEUTRAL) <= set(published["text"])
