"""Every published version's files as plain objects in the releases bucket, on a real S3
server (SeaweedFS) with a real git + DVC registry: the release folder holds exactly the bytes
`dvc get` returns, it is the published dataset's OpenLineage name, a retried publish rewrites
nothing, and `granary verify` and maintenance cover the copies."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from granary.settings import Settings
from lifecycle import maintenance
from lifecycle.annotate import stage as annotate
from lifecycle.collect import stage as collect
from lifecycle.context import StageContext
from lifecycle.evaluate import stage as evaluate
from lifecycle.preprocess import stage as preprocess
from lifecycle.publish import stage as publish
from lifecycle.versions import releases
from lifecycle.versions.verify import verify
from lineage.naming import from_uri
from storage import keys
from tests.stagectx import isolated, stage_context

pytestmark = pytest.mark.integration

DS = "shelf_reviews"
SPEC = f"""\
name: {DS}
title: Shelf reviews
licence: {{id: CC-BY-4.0, legal_basis: test data written for this test}}
owners: [{{name: qa}}]
sources:
  - {{name: notes, type: files, path: shelf/notes.txt, format: text, label: positive,
     licence: {{id: CC-BY-4.0, origin: written for this test, legal_basis: own}}}}
schema:
  fields:
    - {{name: text, type: string}}
    - {{name: label, type: string, values: [positive, negative]}}
quality: {{gate: {{min_rows: 3}}}}
publish: {{formats: [parquet, jsonl]}}
"""


@pytest.fixture
def published(s3: Settings, tmp_path: Path) -> tuple[Settings, StageContext]:
    """Version 1 of a small dataset, published through every stage."""
    s = isolated(s3, tmp_path)
    folder = s.inbox_dir / "shelf"
    folder.mkdir(parents=True)
    notes = ["纸张很好,印刷清楚", "物流太慢了,等了一周", "封面有折痕,不太满意", "内容翔实,值得一读",
             "字太小,看着累", "包装结实,没有破损", "价格实惠,推荐购买", "插图精美,孩子喜欢"]
    (folder / "notes.txt").write_text("\n".join(notes) + "\n", encoding="utf-8")
    ctx = stage_context(s, SPEC, "run-1")
    up = collect.run(ctx)
    for stage in (preprocess, annotate, evaluate):
        up = stage.run(ctx, up)
    pub = publish.run(ctx, up)
    assert pub.release.version == 1
    return s, ctx


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_release_folder_holds_the_version_and_is_its_lineage_name(
        published: tuple[Settings, StageContext]) -> None:
    s, ctx = published
    v = ctx.catalog.get_version(DS, 1)
    assert v is not None
    # the lineage output of publishing names an existing prefix of the releases bucket
    name = from_uri(publish._lineage(ctx, "s3://x/y/manifest.json", {}, v)[-1].uri)
    assert (name.namespace, name.name) == (f"s3://{s.bucket_releases}", f"{DS}/v1")
    listed = {o.key: o for o in ctx.store.list(s.bucket_releases, f"{name.name}/")}
    assert listed, f"nothing under s3://{s.bucket_releases}/{name.name}/"

    # the same files, byte for byte, as `dvc get` of the tag returns (an independent reader)
    got = ctx.registry.fetch(DS, 1, s.home / "dvc-get")
    on_disk = {p.relative_to(got).as_posix(): p.read_bytes() for p in got.rglob("*")
               if p.is_file()}  # the data parts are in data/<format>/
    assert "data/parquet/part-00000.parquet" in on_disk
    assert set(listed) == {f"{name.name}/{n}" for n in on_disk}
    for file, data in on_disk.items():
        assert ctx.store.get_bytes(s.bucket_releases, f"{name.name}/{file}") == data, file
    # and the catalog's hashes (the manifest's, and the manifest's own)
    assert {n: _sha256(d) for n, d in on_disk.items()} == {
        n: meta["sha256"] for n, meta in v.files.items()}


def test_a_retried_publish_rewrites_nothing(
        published: tuple[Settings, StageContext]) -> None:
    s, ctx = published
    v = ctx.catalog.get_version(DS, 1)
    assert v is not None
    prefix = keys.release_prefix(DS, 1)
    before = {o.key: (o.etag, o.version_id) for o in ctx.store.list(s.bucket_releases, prefix)}
    bucket, dvc_prefix = ctx.registry.objects
    # the copy a retried publish makes: every file is already there, by its DVC md5
    assert releases.mirror(ctx.store, bucket, dvc_prefix, DS, 1, v.dvc_md5,
                           s.bucket_releases) == []
    after = {o.key: (o.etag, o.version_id) for o in ctx.store.list(s.bucket_releases, prefix)}
    assert after == before
    # a copy that was changed is put back by the next publish of that version, and an object
    # that is no file of it (a registry started afresh) is removed
    key = keys.release_key(DS, 1, "data/jsonl/part-00000.jsonl")
    ctx.store.put_bytes(s.bucket_releases, key, b"not the release\n")
    ctx.store.put_bytes(s.bucket_releases, keys.release_key(DS, 1, "old.csv"), b"a,b\n")
    assert releases.mirror(ctx.store, bucket, dvc_prefix, DS, 1, v.dvc_md5,
                           s.bucket_releases) == ["data/jsonl/part-00000.jsonl",
                                                  "manifest.json"]
    assert _sha256(ctx.store.get_bytes(s.bucket_releases, key)) == \
        v.files["data/jsonl/part-00000.jsonl"]["sha256"]
    assert {o.key for o in ctx.store.list(s.bucket_releases, prefix)} == set(before)


def test_verify_and_maintenance_cover_the_copies(
        published: tuple[Settings, StageContext]) -> None:
    s, ctx = published
    bucket, prefix = ctx.registry.objects

    def check() -> list[tuple[int, str, str]]:
        found = verify(DS, s.registry, ctx.store, bucket, prefix, ctx.catalog,
                       releases_bucket=s.bucket_releases)
        return [(f.version, f.what, f.problem) for f in found.findings]

    clean = verify(DS, s.registry, ctx.store, bucket, prefix, ctx.catalog,
                   releases_bucket=s.bucket_releases)
    alone = verify(DS, s.registry, ctx.store, bucket, prefix, ctx.catalog)
    assert clean.ok and clean.files == 2 * alone.files  # each file, and its plain copy

    # a changed byte in a copy is named; so is a file the version does not hold
    key = keys.release_key(DS, 1, "data/parquet/part-00000.parquet")
    data = bytearray(ctx.store.get_bytes(s.bucket_releases, key))
    data[len(data) // 2] ^= 0x01
    ctx.store.put_bytes(s.bucket_releases, key, bytes(data))
    ctx.store.put_bytes(s.bucket_releases, keys.release_key(DS, 1, "extra.txt"), b"x")
    found = check()
    assert [(n, what) for n, what, _ in found] == [(1, "extra.txt"),
                                                   (1, "data/parquet/part-00000.parquet")]
    assert "differs from the manifest's" in found[1][2]
    ctx.store.delete(s.bucket_releases, keys.release_key(DS, 1, "extra.txt"))

    # a missing copy (a version published before the releases bucket existed) is named, and
    # maintenance copies it again -- but never replaces a changed one, which verify reports
    ctx.store.delete(s.bucket_releases, keys.release_key(DS, 1, "manifest.json"))
    assert any(what == "manifest.json" and "missing" in problem
               for _, what, problem in check())
    health = maintenance.maintain(ctx, s.registry, bucket, prefix)
    assert health["releases_restored"] == {"v1": ["manifest.json"]}
    assert [what for _, what, _ in check()] == ["data/parquet/part-00000.parquet"]
    assert health["ledger"]["ok"] is False


def test_a_missing_releases_bucket_is_a_finding(
        published: tuple[Settings, StageContext]) -> None:
    s, ctx = published
    bucket, prefix = ctx.registry.objects
    found = verify(DS, s.registry, ctx.store, bucket, prefix, ctx.catalog,
                   releases_bucket="granary-no-such-releases")
    assert [(f.version, f.what) for f in found.findings] == [(1, "release folder")]
    problem = found.findings[0].problem
    assert "s3://granary-no-such-releases/shelf_reviews/v1/" in problem
    assert "NoSuchBucket" in problem and "granary maintain" in problem
    # the registry's own objects were still checked, each once
    assert found.files == verify(DS, s.registry, ctx.store, bucket, prefix, ctx.catalog).files


class _Writes:
    """The real object store, with a list of the writes made through it (in order)."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.writes: list[tuple[str, str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def copy(self, bucket: str, src_key: str, dst_bucket: str, dst_key: str) -> None:
        self.writes.append(("copy", dst_key.split("/", 2)[-1]))  # <dataset>/v<N>/<file>
        self._store.copy(bucket, src_key, dst_bucket, dst_key)

    def delete(self, bucket: str, key: str) -> None:
        self.writes.append(("delete", key.split("/", 2)[-1]))
        self._store.delete(bucket, key)


def test_an_old_manifest_is_removed_before_any_file_of_the_folder_changes(
        published: tuple[Settings, StageContext]) -> None:
    """A folder holding another release's files (a registry started afresh publishes v1
    again): its manifest.json, which says the folder is complete, goes first and comes back
    last, so no reader takes the half-replaced folder for a whole release."""
    s, ctx = published
    v = ctx.catalog.get_version(DS, 1)
    assert v is not None
    bucket, dvc_prefix = ctx.registry.objects
    for name, data in (("manifest.json", b'{"old": true}'),
                       ("data/jsonl/part-00000.jsonl", b"old\n"), ("old.csv", b"a,b\n")):
        ctx.store.put_bytes(s.bucket_releases, keys.release_key(DS, 1, name), data)
    recording = _Writes(ctx.store)
    copied = releases.mirror(recording, bucket, dvc_prefix, DS, 1, v.dvc_md5,
                             s.bucket_releases)
    assert copied == ["data/jsonl/part-00000.jsonl", "manifest.json"]
    assert recording.writes == [("delete", "manifest.json"), ("delete", "old.csv"),
                                ("copy", "data/jsonl/part-00000.jsonl"),
                                ("copy", "manifest.json")]
    for name, meta in v.files.items():  # the folder is the version again
        assert _sha256(ctx.store.get_bytes(s.bucket_releases, keys.release_key(DS, 1, name))) \
            == meta["sha256"], name
    # a folder that needs nothing is not touched, its manifest neither
    again = _Writes(ctx.store)
    assert releases.mirror(again, bucket, dvc_prefix, DS, 1, v.dvc_md5,
                           s.bucket_releases) == [] and again.writes == []
