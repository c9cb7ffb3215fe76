"""A published version's data is a folder of parts (docs/release.md, "The data files"):
published on the real services (S3, git + DVC registry, catalog), fetched with ``dvc get``
as a consumer does, and read by pandas, pyarrow, DuckDB, Hugging Face ``datasets`` (offline,
from the local files) and mlcroissant; a refresh that keeps the first records keeps their
parts byte for byte, so DVC holds them once."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from granary.settings import Settings
from lifecycle.evaluate import stage as evaluate
from lifecycle.publish import stage as publish
from lifecycle.versions import files as release_files
from tests.graded import SPEC, context, graded_settings, until_evaluate
from tests.integration.test_refresh import _append, _lifecycle
from tests.stagectx import isolated
from tests.textdata import labelled

pytestmark = pytest.mark.integration
DS = "graded_reviews"
# the spec's part size: the 400 generated reviews make four parts (the default, 50,000, needs
# 50,001 records for a second part); the layout and every reader are the same at any size
PART_ROWS = 100
SMALL = SPEC.replace("  formats: [parquet, jsonl]\n",
                     f"  formats: [parquet, jsonl]\n  part_rows: {PART_ROWS}\n")
SPEC_ALL = SMALL.replace("formats: [parquet, jsonl]", "formats: [parquet, jsonl, csv]")
assert f"part_rows: {PART_ROWS}" in SPEC_ALL


@pytest.fixture
def small_parts() -> int:
    return PART_ROWS


def _offline_hf(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Hugging Face datasets with no network and its caches under ``tmp_path``."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))


def test_a_version_in_parts_loads_with_every_consumer_tool(
        s3: Settings, tmp_path: Path, small_parts: int,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import duckdb
    import mlcroissant as mlc
    import pyarrow.dataset as pds

    from granary.runtime import catalog, object_store, registry
    from lifecycle.records import shards
    from lifecycle.versions.verify import verify
    from storage import keys

    _offline_hf(monkeypatch, tmp_path)
    s = graded_settings(s3, tmp_path)
    ctx = context(s, SPEC_ALL, "run-1")
    evaluated = evaluate.run(ctx, until_evaluate(ctx))
    result = publish.run(ctx, evaluated)
    v = catalog(s).get_version(DS, result.counts["version"])
    assert v is not None and v.row_count > 3 * small_parts
    expected = -(-v.row_count // small_parts)  # parts per format
    for fmt in ("parquet", "jsonl", "csv"):
        names = release_files.data_files(v.files, fmt)
        assert names == [f"data/{fmt}/part-{i:05d}.{fmt}" for i in range(expected)]
        # the manifest (the catalog's copy) lists every part with its sha256, size and rows
        assert [v.files[n]["rows"] for n in names] == (
            [small_parts] * (expected - 1) + [v.row_count - small_parts * (expected - 1)])
        assert all(len(v.files[n]["sha256"]) == 64 and v.files[n]["bytes"] > 0 for n in names)
    assert not [n for n in v.files if n.startswith("data.")]  # no single file any more

    # the write parts encoded every part (one write unit per part), staged them in the work
    # bucket and the release dropped them once the registry held them
    assert result.counts["parts"] == {"units": expected, "written": 3 * expected, "reused": 0}
    assert not list(object_store(s).list(s.bucket_work, keys.stage_prefix(DS, "run-1", "publish")))
    manifest = shards.read_manifest(object_store(s), evaluated.manifest_uri)
    records = shards.read_table(object_store(s), manifest)
    order = list(records["id"])

    out = registry(s).fetch(DS, v.version, tmp_path / "v1")  # dvc get, as a consumer
    release = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert release["layout"] == {"part_rows": small_parts, "parts": {
        fmt: release_files.data_files(v.files, fmt) for fmt in ("parquet", "jsonl", "csv")}}
    parquet = out / "data" / "parquet"
    # the card and Croissant say the version's part size (the spec's)
    assert f"at most {small_parts:,}\nrecords each" in (out / "README.md").read_text("utf-8")

    # the load code the catalog shows runs as written: pandas over dvc.api, every part
    from lifecycle.versions import releases

    for key, value in s.s3_env().items():  # what a consumer's dvc needs: S3 credentials
        monkeypatch.setenv(key, value)
    scope: dict[str, object] = {}
    exec(releases.load_code(v, s.registry)["pandas (dvc.api)"], scope)  # noqa: S102
    assert list(scope["df"]["id"]) == order  # type: ignore[index]

    # pandas and pyarrow read the folder; the rows come in the published order
    df = pd.read_parquet(parquet)
    assert list(df["id"]) == order and len(df) == v.row_count
    table = pds.dataset(parquet, format="parquet").to_table()
    assert table.column("id").to_pylist() == order
    jsonl = pd.concat([pd.read_json(p, lines=True, dtype=False)
                       for p in sorted((out / "data" / "jsonl").glob("*.jsonl"))],
                      ignore_index=True)
    assert list(jsonl["id"]) == order
    csv = pd.concat([pd.read_csv(p) for p in sorted((out / "data" / "csv").glob("*.csv"))],
                    ignore_index=True)
    assert list(csv["id"]) == order

    # DuckDB by glob, each format
    for fmt, reader in (("parquet", "read_parquet"), ("jsonl", "read_json"),
                        ("csv", "read_csv")):
        counted = duckdb.sql(f"SELECT count(*), count(DISTINCT id) FROM "
                             f"{reader}('{out}/data/{fmt}/*.{fmt}')").fetchall()
        assert counted == [(v.row_count, v.row_count)], fmt
    splits = dict(duckdb.sql(f"SELECT split, count(*) FROM read_parquet('{parquet}/*.parquet') "
                             "GROUP BY split").fetchall())
    assert splits == v.quality["splits"]

    # Hugging Face datasets: by glob, by folder, and by the card's own configs
    from datasets import load_dataset

    cache = str(tmp_path / "hf-cache")
    by_glob = load_dataset("parquet", data_files=str(parquet / "*.parquet"), split="train",
                           cache_dir=cache)
    assert by_glob["id"] == order
    by_folder = load_dataset("parquet", data_dir=str(parquet), split="train", cache_dir=cache)
    assert by_folder.num_rows == v.row_count
    by_card = load_dataset(str(out), split="train", cache_dir=cache)
    assert by_card["id"] == order and set(by_card.column_names) == set(df.columns)

    # Croissant: valid, one FileObject per part with its sha256, the records read from the
    # parts' FileSet in order
    croissant = json.loads((out / "croissant.json").read_text(encoding="utf-8"))
    objects = {d["name"]: d for d in croissant["distribution"]}
    assert objects["parquet-parts"]["includes"] == "data/parquet/*.parquet"
    assert f"parts of at most {small_parts:,} records" in objects["parquet-parts"]["description"]
    for name in release_files.data_files(v.files, "parquet"):
        assert objects[name]["sha256"] == v.files[name]["sha256"]
    dataset = mlc.Dataset(jsonld=out / "croissant.json")
    assert not dataset.metadata.ctx.issues.errors
    loaded = [r["records/id"] for r in dataset.records("records")]
    assert [x.decode() if isinstance(x, bytes) else x for x in loaded] == order

    # verified, mirrored part by part, accessible
    bucket, prefix = registry(s).objects
    checked = verify(DS, s.registry, object_store(s), bucket, prefix, catalog(s),
                     releases_bucket=s.bucket_releases)
    assert checked.ok, checked.findings
    mirrored = {o.key for o in object_store(s).list(s.bucket_releases, f"{DS}/v1/data/")}
    assert mirrored == {f"{DS}/v1/{n}" for n in v.files if n.startswith("data/")}
    assert v.quality["dimensions"]["accessibility"] == 1.0


def test_a_refresh_that_keeps_the_first_records_keeps_their_parts(
        s3: Settings, tmp_path: Path, small_parts: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A refresh adds 20 records to 300: the base's records come first in the same order,
    so every full part before the last is the same bytes (the same DVC object, stored once).
    The refresh's write parts encode and upload only the new part (per format), and reference
    the base's objects for the others; the version still loads whole with every tool."""
    from granary.runtime import catalog
    from storage import keys
    from storage.objectstore import ObjectStore

    s = isolated(s3, tmp_path)
    pool = labelled(320)[["text", "label"]]
    rows = tmp_path / "inbox" / "reviews" / "rows.csv"
    rows.parent.mkdir(parents=True)
    pool.iloc[:300].to_csv(rows, index=False)
    first = _lifecycle(s, SMALL, "run-1", "full")
    assert first["publish"]["parts"] == {"units": 3, "written": 6, "reused": 0}
    _append(rows, pool.iloc[300:320])
    # every object the refresh uploads or copies, and every part it encodes
    sent: list[tuple[str, str, int]] = []
    encoded: list[str] = []
    put_file, copy = ObjectStore.put_file, ObjectStore.copy

    def counted_put(store: ObjectStore, bucket: str, key: str, path: Path,
                    *a: object, **k: object) -> object:
        sent.append((bucket, key, path.stat().st_size))
        return put_file(store, bucket, key, path, *a, **k)

    def counted_copy(store: ObjectStore, bucket: str, src: str, dst_bucket: str,
                     dst: str) -> None:
        sent.append((dst_bucket, dst, store.stat(bucket, src).size))
        copy(store, bucket, src, dst_bucket, dst)

    write_part = release_files.write_part
    monkeypatch.setattr(ObjectStore, "put_file", counted_put)
    monkeypatch.setattr(ObjectStore, "copy", counted_copy)
    monkeypatch.setattr(release_files, "write_part", lambda df, path, fmt, table=None: (
        encoded.append(path.as_posix().split("/data/", 1)[1]),
        write_part(df, path, fmt, table))[1])
    refreshed = _lifecycle(s, SMALL, "run-2", "incremental")
    monkeypatch.undo()
    assert refreshed["publish"]["version"] == 2
    assert refreshed["publish"]["parts"] == {"units": 4, "written": 2, "reused": 6}
    assert sorted(encoded) == ["jsonl/part-00003.jsonl", "parquet/part-00003.parquet"]
    v1, v2 = (catalog(s).get_version(DS, n) for n in (1, 2))
    assert v1 is not None and v2 is not None
    new_parts = {f"data/{f}/part-00003.{f}" for f in ("parquet", "jsonl")}
    # staged: the new parts only, their bytes; into the registry: their two objects only
    staged = [(k, n) for b, k, n in sent if b == s.bucket_work and "/data/" in k]
    assert sorted(k.split("/release/")[1] for k, _ in staged) == sorted(new_parts)
    assert sum(n for _, n in staged) == sum(v2.files[p]["bytes"] for p in new_parts)
    from granary.runtime import object_store, registry
    from lifecycle.versions import releases

    bucket, prefix = registry(s).objects
    listed = releases.listing(object_store(s), bucket, prefix, v2.dvc_md5)
    data_objects = {keys.dvc_object_key(prefix, md5): n for n, md5 in listed.items()
                    if n.startswith("data/")}
    assert sorted(data_objects[k] for b, k, _ in sent if k in data_objects) == \
        sorted(new_parts)
    _loads_whole(registry(s).fetch(DS, 2, tmp_path / "v2"), v2.row_count, tmp_path,
                 monkeypatch)
    assert v2.row_count > v1.row_count
    for fmt in ("parquet", "jsonl"):
        old, new = (release_files.data_files(v.files, fmt) for v in (v1, v2))
        full = v1.row_count // small_parts  # the base's full parts
        assert full >= 2 and len(new) >= len(old)
        for name in old[:full]:
            assert v2.files[name]["sha256"] == v1.files[name]["sha256"], name
        changed = [n for n in new if v2.files[n]["sha256"] != v1.files.get(n, {}).get("sha256")]
        assert changed == new[full:], fmt
    # the registry's DVC listings of both versions name the same objects for those parts
    from granary.runtime import object_store, registry
    from lifecycle.versions import releases

    bucket, prefix = registry(s).objects
    held = [releases.listing(object_store(s), bucket, prefix, v.dvc_md5) for v in (v1, v2)]
    shared = [n for n in held[0] if n.startswith("data/") and held[1].get(n) == held[0][n]]
    assert len(shared) == 2 * (v1.row_count // small_parts)

    # a record is traced to the part that holds it, and its row there
    from lifecycle.versions.trace import Tracer

    tracer = Tracer(catalog(s), object_store(s), DS, 2)
    position = 2 * small_parts + 7
    trace = tracer.trace(tracer.ids[position])
    [published] = [step for step in trace["path"] if step["stage"] == "publish"]
    assert (published["row"], published["file"], published["file_row"]) == (
        position, "data/parquet/part-00002.parquet", 7)


def _loads_whole(out: Path, rows: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The release fetched to ``out`` reads whole, ``rows`` distinct records, with pandas,
    DuckDB and Hugging Face datasets, and its Croissant file validates and reads them."""
    import duckdb
    import mlcroissant as mlc

    from datasets import load_dataset

    _offline_hf(monkeypatch, tmp_path)
    parquet = out / "data" / "parquet"
    assert f"at most {PART_ROWS:,}\nrecords each" in (out / "README.md").read_text("utf-8")
    order = list(pd.read_parquet(parquet)["id"])
    assert len(order) == len(set(order)) == rows
    assert duckdb.sql(f"SELECT count(DISTINCT id) FROM read_parquet('{parquet}/*.parquet')"
                      ).fetchall() == [(rows,)]
    ds = load_dataset("parquet", data_files=str(parquet / "*.parquet"), split="train",
                      cache_dir=str(tmp_path / "hf-cache"))
    assert ds["id"] == order
    dataset = mlc.Dataset(jsonld=out / "croissant.json")
    assert not dataset.metadata.ctx.issues.errors
    loaded = [r["records/id"] for r in dataset.records("records")]
    assert [x.decode() if isinstance(x, bytes) else x for x in loaded] == order


def test_a_version_published_as_one_file_still_reads(s3: Settings, tmp_path: Path) -> None:
    """A registry holding a version of the layout before the parts (``data.parquet``,
    ``data.jsonl``): the next version is compared with its records (the changelog), both
    verify with their ledger link, and its file downloads, loads and is fetched by name as
    before; the new version is in parts."""
    import hashlib
    from datetime import UTC, datetime

    import pyarrow as pa
    import pyarrow.parquet as pq

    from granary.runtime import catalog, object_store, registry
    from lifecycle.publish.release import content_hash_of
    from lifecycle.records import shards
    from lifecycle.versions import releases
    from lifecycle.versions.records import version_records
    from lifecycle.versions.verify import verify
    from storage.catalog import Version
    from storage.objectstore import sha256_file
    from tests.graded import change_source, publish_run

    s = graded_settings(s3, tmp_path)
    store, reg = object_store(s), registry(s)
    ctx = context(s, SPEC, "run-0")
    records = evaluate.run(ctx, until_evaluate(ctx))
    df = shards.read_table(store, shards.read_manifest(store, records.manifest_uri))
    # v1 as the publisher before the parts wrote it: one file per format, and its manifest
    old = tmp_path / "old"
    old.mkdir()
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), old / "data.parquet")
    df.to_json(old / "data.jsonl", orient="records", lines=True, force_ascii=False)
    files = {n: {"sha256": sha256_file(old / n), "bytes": (old / n).stat().st_size}
             for n in ("data.parquet", "data.jsonl")}
    content = content_hash_of(files)
    ledger = {"previous_version": None, "previous_manifest_sha256": None,
              "previous_chain": None, "chain": hashlib.sha256(f":{content}".encode()).hexdigest()}
    (old / "manifest.json").write_text(json.dumps(
        {"dataset": DS, "row_count": len(df), "content_hash": content, "files": files,
         "ledger": ledger}), encoding="utf-8")
    published = reg.publish(DS, old, "run-0", "v1, one file per format", store=store)
    bucket, prefix = reg.objects
    releases.mirror(store, bucket, prefix, DS, 1, published.dvc_md5, s.bucket_releases)
    catalog(s).add_version(Version(
        dataset=DS, version=1, tag=published.tag, git_rev=published.git_rev,
        dvc_md5=published.dvc_md5, content_hash=content, row_count=len(df), run_id="run-0",
        files={**files, "manifest.json": {"sha256": sha256_file(old / "manifest.json"),
                                          "bytes": (old / "manifest.json").stat().st_size,
                                          "chain": ledger["chain"]}},
        quality={"passed": True, "grade": "A", "score": 0.97, "dimensions": {}},
        created_at=datetime.now(UTC)))
    v1 = catalog(s).get_version(DS, 1)
    assert v1 is not None

    # its records read as before, by the readers that now also read parts
    assert list(version_records(v1, store, bucket, prefix)["id"]) == list(df["id"])
    assert "data_files=\"graded_reviews/data.parquet\"" in \
        releases.load_code(v1, s.registry)["Hugging Face datasets"]
    assert set(releases.download_links(v1, store, bucket, prefix)) == {
        "data.parquet", "data.jsonl", "manifest.json"}
    got = reg.fetch_file(DS, 1, "data.parquet", tmp_path / "v1.parquet")
    assert sha256_file(got) == files["data.parquet"]["sha256"]

    # the next version is compared with v1's records and published in parts
    change_source(s)
    assert publish_run(s, "run-1").counts["version"] == 2
    v2 = catalog(s).get_version(DS, 2)
    assert v2 is not None and "data/parquet/part-00000.parquet" in v2.files
    change = json.loads(releases.read_file(v2, store, bucket, prefix, "changelog.json"))
    assert (change["added"], change["removed"], change["relabelled"]) == (3, 5, 1)
    checked = verify(DS, s.registry, store, bucket, prefix, catalog(s),
                     releases_bucket=s.bucket_releases)
    assert checked.ok and checked.versions == [1, 2], checked.findings
