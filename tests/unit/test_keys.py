from __future__ import annotations

from datetime import date

import pytest

from storage import keys

pytestmark = pytest.mark.unit
SHA = "a" * 64


def test_raw_key_layout() -> None:
    assert keys.raw_key("reviews", "pos", date(2026, 3, 4), SHA, ".TXT") == \
        f"reviews/pos/2026-03-04/{SHA}.txt"


def test_stage_keys_fold_airflow_run_ids() -> None:
    run = "manual__2026-11-27T23:37:46.105075+00:00"
    key = keys.shard_key("reviews", run, "collect", 3)
    assert key == "reviews/manual__2026-11-27T23_37_46.105075_00_00/collect/part-00003.parquet"
    assert keys.manifest_key("reviews", run, "collect").endswith("/collect/manifest.json")
    assert "/quarantine/part-00000.parquet" in keys.shard_key("r", run, "preprocess", 0,
                                                               "quarantine")


@pytest.mark.parametrize("bad", ["../x", "a/b", ".hidden", "", "x" * 300, "a\x00b", "a..b"])
def test_unsafe_segments_are_refused(bad: str) -> None:
    with pytest.raises(keys.KeyError_):
        keys.raw_key(bad, "src", date(2026, 1, 1), SHA, "txt")


def test_raw_key_requires_hex_digest() -> None:
    with pytest.raises(keys.KeyError_, match="hex digest"):
        keys.raw_key("d", "s", date(2026, 1, 1), "not-a-hash", "txt")


def test_tmp_key_wraps_final_key() -> None:
    assert keys.tmp_key("abc123", "d/r/s/manifest.json") == "_tmp/abc123/d/r/s/manifest.json"


def test_registry_names() -> None:
    assert keys.registry_path("reviews") == "datasets/reviews"
    assert keys.registry_tag("reviews", 2) == "reviews/v2"
    with pytest.raises(keys.KeyError_):
        keys.registry_tag("reviews", 0)


def test_release_names() -> None:
    assert keys.release_prefix("reviews", 3) == "reviews/v3"
    assert keys.release_key("reviews", 3, "data.parquet") == "reviews/v3/data.parquet"
    with pytest.raises(keys.KeyError_):
        keys.release_prefix("reviews", 0)
    # a data part is in a folder of the release; nothing climbs out of it
    assert keys.release_key("reviews", 3, "data/parquet/part-00000.parquet") == \
        "reviews/v3/data/parquet/part-00000.parquet"
    for bad in ("../x", "a/../b", ".hidden", "data/.x", "/abs", "a//b", "a/", ""):
        with pytest.raises(keys.KeyError_):
            keys.release_key("reviews", 1, bad)
