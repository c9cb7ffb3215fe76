"""The sample image dataset's lifecycle DAG through Airflow's dag.test(), against a real S3
server, a real git + DVC registry and a real catalog database: a full build, then a scheduled
(incremental) refresh that adds three scans."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from granary.demo import digit, stage_images
from granary.runtime import catalog, registry
from granary.settings import Settings
from tests.imagedata import digit_labels, png
from tests.outcome import check_golden

pytestmark = pytest.mark.e2e


@pytest.fixture
def image_env(s3: Settings, tmp_path: Path, repo: Path,
              monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The shipped digit_images spec over one scan in six (suite time), its row minimum
    lowered to match; everything else as shipped."""
    specs = tmp_path / "datasets"
    specs.mkdir()
    shipped = (repo / "datasets" / "digit_images.yaml").read_text(encoding="utf-8")
    assert "min_rows: 1000" in shipped
    (specs / "digit_images.yaml").write_text(shipped.replace("min_rows: 1000", "min_rows: 250"),
                                             encoding="utf-8")
    s = s3.model_copy(update={"home": tmp_path, "registry_url": str(tmp_path / "registry.git"),
                              "database_url": f"sqlite:///{tmp_path / 'catalog.db'}",
                              "inbox": tmp_path / "inbox", "datasets_dir": specs})
    for key, value in s.to_env().items():
        monkeypatch.setenv(key, value)
    staged = stage_images(s.inbox_dir)
    for extra in sorted(staged.rglob("digit-*.png")):
        if int(extra.stem.split("-")[1]) % 6:
            extra.unlink()
    return s


def test_the_image_dag_builds_and_refreshes_the_sample(
        airflow_db: Path, image_env: Settings, repo: Path, tmp_path: Path,
        openlineage_events_file: Path) -> None:
    import webdataset as wds
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(repo / "dags"))
    assert bag.import_errors == {}
    dag = bag.dags["granary_digit_images"]
    seen = openlineage_events_file.stat().st_size if openlineage_events_file.exists() else 0
    run = dag.test(run_conf={"mode": "full", "first_stage": "collect",
                             "last_stage": "publish"})
    assert run.state == "success"
    cat = catalog(image_env)
    v1 = cat.get_version("digit_images")
    assert v1 is not None and v1.version == 1 and v1.quality["grade"] in ("A", "B", "C")
    counts = {r.stage: r.counts for r in cat.stage_results("digit_images", run.run_id)}
    assert counts["collect"]["records"] == 300 + 2  # one scan in six, two photographs
    pre = counts["preprocess"]
    assert pre["in"] == pre["kept"] + pre["quarantined"] + pre["merged"]
    assert counts["annotate"]["labelled"] == counts["annotate"]["kept"]
    assert 295 <= v1.row_count <= 302
    assert {"images-00000.tar", "thumbnails.png", "data/parquet/part-00000.parquet"} <= set(
        v1.files)
    tar = registry(image_env).fetch_file("digit_images", 1, "images-00000.tar",
                                         tmp_path / "v1.tar")
    parts = registry(image_env).fetch_file("digit_images", 1, "data/parquet",
                                           tmp_path / "v1-parquet")
    check_golden([p.read_bytes() for p in sorted(parts.glob("part-*.parquet"))],
                 "data.parquet", "digit_images-v1-data.parquet")
    metas = [json.loads(x["json"]) for x in wds.WebDataset(str(tar), shardshuffle=False)]
    assert len(metas) == v1.row_count and {m["split"] for m in metas} == {
        "train", "validation", "test"}
    with open(openlineage_events_file, "rb") as fh:
        fh.seek(seen)
        jobs = {json.loads(line)["job"]["name"] for line in fh.read().decode().splitlines()
                if line}
    assert {f"granary_digit_images.{stage}" for stage in ("collect.merge", "preprocess.merge",
                                                          "evaluate.validate",
                                                          "publish.release")} <= jobs

    # a scheduled refresh: three new scans arrive; only they are processed, v2 = v1 + 3,
    # and the new version is compared with v1 for drift
    labels = digit_labels()
    for i in (1001, 1003, 1007):  # scans the subset left out, as new files in their folders
        folder = image_env.inbox_dir / "digit_images" / str(labels[i])
        folder.joinpath(f"new-{i}.png").write_bytes(png(digit(i)))
    fresh = dag.test(run_conf={"mode": "incremental", "first_stage": "collect",
                               "last_stage": "publish"})
    assert fresh.state == "success"
    counts = {r.stage: r.counts for r in cat.stage_results("digit_images", fresh.run_id)}
    assert counts["collect"]["records_new"] == 3 and counts["preprocess"]["in"] == 3
    v2 = cat.get_version("digit_images", 2)
    assert v2 is not None and v2.row_count == v1.row_count + 3
    assert counts["evaluate"]["refresh"]["added"] == 3
    report = json.loads(Path(registry(image_env).fetch_file(
        "digit_images", 2, "quality.json", tmp_path / "quality.json")).read_text())
    measured = {m["measure"] for m in report["drift"]["measures"]}
    assert {"label distribution (PSI)", "width (KS)", "sharpness (KS)"} <= measured
    assert report["drift"]["drifted"] == []  # three more scans change nothing
