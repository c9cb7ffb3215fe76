"""The sample dataset's lifecycle DAG through Airflow's dag.test(), against a real S3 server,
a real git + DVC registry and a real catalog database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from granary.demo import stage_sample
from granary.runtime import catalog, registry
from granary.settings import Settings
from tests.e2e.sample import expected_reviews

pytestmark = pytest.mark.e2e


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
        airflow_db: Path, granary_env: Settings, repo: Path, tmp_path: Path) -> None:
    dag = _dag(repo, "granary_zh_shopping_reviews")
    run = dag.test()
    assert run.state == "success"

    cat = catalog(granary_env)
    v = cat.get_version("zh_shopping_reviews")
    assert v is not None and (v.version, v.tag) == (1, "zh_shopping_reviews/v1")
    assert cat.run("zh_shopping_reviews", run.run_id).status == "success"
    counts = {r.stage: r.counts for r in cat.stage_results("zh_shopping_reviews", run.run_id)}
    assert counts["collect"]["records"] == 35124  # every line of pos.txt and neg.txt
    pre = counts["preprocess"]
    assert pre["in"] == pre["kept"] + pre["quarantined"] + pre["merged"]

    assert registry(granary_env).tags("zh_shopping_reviews") == {1: "zh_shopping_reviews/v1"}
    out = registry(granary_env).fetch("zh_shopping_reviews", 1, tmp_path / "v1")
    lines = (out / "data.jsonl").read_text(encoding="utf-8").splitlines()
    texts = [json.loads(line)["text"] for line in lines]
    expected = expected_reviews()
    assert len(texts) == len(set(texts)) == v.row_count
    assert set(texts) == expected
    assert json.loads((out / "manifest.json").read_text())["row_count"] == len(expected)


def test_run_from_a_later_stage_reuses_earlier_outputs(
        airflow_db: Path, granary_env: Settings, repo: Path) -> None:
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
    stages = {r.stage for r in cat.stage_results("zh_shopping_reviews", second.run_id)}
    assert stages == {"annotate", "synthesize", "evaluate", "publish"}
    assert cat.get_version("zh_shopping_reviews").run_id == second.run_id


def test_inverted_stage_range_fails_fast_and_is_recorded(
        airflow_db: Path, granary_env: Settings, repo: Path) -> None:
    dag = _dag(repo, "granary_zh_shopping_reviews")
    run = dag.test(run_conf={"first_stage": "publish", "last_stage": "collect"})
    assert run.state == "failed"
    recorded = catalog(granary_env).run("zh_shopping_reviews", run.run_id)
    assert recorded.status == "failed" and "comes after last_stage" in recorded.message
    assert catalog(granary_env).stage_results("zh_shopping_reviews", run.run_id) == []
