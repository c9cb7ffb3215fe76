"""The DVC registry against a real git repository and a real S3 remote."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from granary.runtime import registry
from granary.settings import Settings
from storage.registry import DvcRegistry

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(s3: Settings, tmp_path: Path) -> Settings:
    return s3.model_copy(update={"registry_url": str(tmp_path / "registry.git"),
                                 "home": tmp_path})


def _bootstrap(s: Settings) -> DvcRegistry:
    from granary.runtime import object_store

    object_store(s).ensure_bucket(s.bucket_registry)
    reg = registry(s)
    reg.ensure()
    return reg


def _files(folder: Path, content: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "data.jsonl").write_text(content, encoding="utf-8")
    (folder / "manifest.json").write_text(f'{{"n": {len(content)}}}', encoding="utf-8")
    return folder


def test_publish_two_versions_and_fetch_v1_back(settings: Settings, tmp_path: Path) -> None:
    reg = _bootstrap(settings)
    v1_dir = _files(tmp_path / "v1", '{"text": "好评"}\n')
    p1 = reg.publish("reviews", v1_dir, "run-1", "first")
    p2 = reg.publish("reviews", _files(tmp_path / "v2", '{"text": "差评"}\n'), "run-2", "second")
    assert (p1.version, p1.tag, p2.version, p2.tag) == (1, "reviews/v1", 2, "reviews/v2")
    assert p1.dvc_md5 and p1.dvc_md5 != p2.dvc_md5
    assert reg.tags("reviews") == {1: "reviews/v1", 2: "reviews/v2"}

    out = reg.fetch("reviews", 1, tmp_path / "got")
    for name in ("data.jsonl", "manifest.json"):
        assert (out / name).read_bytes() == (v1_dir / name).read_bytes()

    # a retried publish of run-1 returns its existing tag instead of making v3
    again = reg.publish("reviews", v1_dir, "run-1", "first")
    assert (again.version, again.reused) == (1, True)
    assert reg.tags("reviews") == {1: "reviews/v1", 2: "reviews/v2"}


def test_plain_dvc_get_works_for_a_consumer(settings: Settings, tmp_path: Path) -> None:
    reg = _bootstrap(settings)
    src = _files(tmp_path / "v1", "line\n")
    reg.publish("plain", src, "run-1", "first")
    env = {**reg.env}
    dest = tmp_path / "consumer"
    subprocess.run([sys.executable, "-m", "dvc", "get", settings.registry, "datasets/plain",
                    "--rev", "plain/v1", "-o", str(dest)], env=env, check=True, cwd=tmp_path,
                   capture_output=True)
    assert (dest / "data.jsonl").read_text() == "line\n"


def _publish_in_another_process(settings_json: str, folder: str, run_id: str) -> int:
    s = Settings.model_validate_json(settings_json)
    return registry(s).publish("race", Path(folder), run_id, run_id).version


def test_concurrent_publishes_both_land_with_distinct_tags(settings: Settings,
                                                           tmp_path: Path) -> None:
    reg = _bootstrap(settings)
    folders = [_files(tmp_path / f"f{i}", f"content {i}\n") for i in range(2)]
    # secrets do not serialise (they dump as ***): the workers read the credentials file
    payload = settings.model_dump_json(exclude={"s3_access_key", "s3_secret_key"})
    from granary.stack import write_secret_file

    write_secret_file(settings.home / "s3-credentials.json", {
        "access_key": settings.s3_access_key.get_secret_value(),
        "secret_key": settings.s3_secret_key.get_secret_value()})
    with ProcessPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(_publish_in_another_process, payload, str(f), f"run-{i}")
                   for i, f in enumerate(folders)]
        versions = sorted(f.result() for f in futures)
    assert versions == [1, 2]
    assert reg.tags("race") == {1: "race/v1", 2: "race/v2"}
    contents = {reg.fetch("race", v, tmp_path / f"out{v}").joinpath("data.jsonl").read_text()
                for v in (1, 2)}
    assert contents == {"content 0\n", "content 1\n"}


def test_publishing_through_the_store_runs_no_dvc_and_matches_dvc_add(
        settings: Settings, tmp_path: Path) -> None:
    """With the object store, a publish writes the objects, the folder's listing and the .dvc
    file itself: the same .dvc as ``dvc add`` + ``dvc push`` of the same folder, and a file
    already in S3 (``stored``) reaches the version without being downloaded."""
    import hashlib

    import yaml

    from granary.runtime import object_store
    from storage.objectstore import bytes_read
    from storage.registry import StoredFile

    reg, store = _bootstrap(settings), object_store(settings)
    src = _files(tmp_path / "src", '{"text": "好评"}\n')
    (src / "images").mkdir()
    (src / "images" / "card.md").write_text("# 卡片\n", encoding="utf-8")
    by_dvc = reg.publish("by_dvc", src, "run-1", "dvc add")
    by_store = reg.publish("by_store", src, "run-1", "placed", store=store)
    assert by_store.dvc_md5 == by_dvc.dvc_md5 and by_store.dvc_md5.endswith(".dir")

    def shown(ref: str) -> str:
        return subprocess.run(["git", "--git-dir", settings.registry, "show", ref],
                              check=True, capture_output=True, text=True).stdout

    def out(dataset: str) -> dict[str, object]:
        outs: dict[str, object] = yaml.safe_load(
            shown(f"{dataset}/v1:datasets/{dataset}.dvc"))["outs"][0]
        assert outs.pop("path") == dataset
        return outs

    assert out("by_store") == out("by_dvc")
    assert shown("by_store/v1:datasets/.gitignore").splitlines() == ["/by_dvc", "/by_store"]
    got = reg.fetch("by_store", 1, tmp_path / "got")  # dvc get
    assert sorted(p.relative_to(got).as_posix() for p in got.rglob("*") if p.is_file()) == [
        "data.jsonl", "images/card.md", "manifest.json"]
    assert (got / "images" / "card.md").read_text(encoding="utf-8") == "# 卡片\n"

    data = '{"text": "已在 S3 中"}\n'.encode()
    store.put_bytes(settings.bucket_work, "run-9/evaluate/release/data.jsonl", data)
    meta = tmp_path / "meta"
    meta.mkdir()
    (meta / "manifest.json").write_text("{}", encoding="utf-8")
    before = bytes_read()
    placed = reg.publish("stored", meta, "run-9", "stored", store=store, stored={
        "data.jsonl": StoredFile(settings.bucket_work, "run-9/evaluate/release/data.jsonl",
                                 hashlib.md5(data).hexdigest(), len(data))})
    assert bytes_read() == before  # nothing came down to publish it
    got = reg.fetch("stored", placed.version, tmp_path / "stored")
    assert (got / "data.jsonl").read_bytes() == data
    assert (got / "manifest.json").read_text(encoding="utf-8") == "{}"

    with pytest.raises(ValueError, match="need the object store"):
        reg.publish("stored", meta, "run-10", "no store", stored={
            "data.jsonl": StoredFile(settings.bucket_work, "x", "0" * 32, 1)})
