"""Tables and reserved names in the spec: a field named like a column Granary adds is refused
at its line, naming it and why; a table needs no text field and gets defaults that do not
assume one; a text dataset without one is refused. Values read back from Parquet become
plain typed Python."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lifecycle.media.images import IMAGE_COLUMNS
from lifecycle.records import columns, shards
from lifecycle.records.columns import PROVENANCE
from lifecycle.spec import SpecError, parse_spec

pytestmark = pytest.mark.unit

SPEC = """\
name: demo_set
title: Demo
licence: {id: MIT}
owners: [{name: team}]
sources:
  - {name: src, type: files, path: demo/rows.csv, format: csv,
     licence: {id: MIT, origin: written for this test, legal_basis: own}}
schema:
  fields:
    - {name: text, type: string}
    - {name: FIELD, type: string}
    - {name: label, type: string, values: [a, b]}
"""
TABLE = """\
name: demo_table
title: Demo table
modality: table
licence: {id: MIT}
owners: [{name: team}]
sources:
  - {name: src, type: files, path: demo/rows.csv, format: csv,
     licence: {id: MIT, origin: written for this test, legal_basis: own}}
schema:
  text_field: null
  label_field: kind
  fields:
    - {name: sku, type: string}
    - {name: price, type: float}
    - {name: kind, type: string, values: [a, b]}
"""


def _refused(text: str) -> SpecError:
    with pytest.raises(SpecError) as e:
        parse_spec(text, "demo.yaml")
    return e.value


@pytest.mark.parametrize("name", sorted(columns.RESERVED))
def test_a_field_named_like_a_column_granary_adds_is_refused_at_its_line(name: str) -> None:
    e = _refused(SPEC.replace("FIELD", name))
    assert (e.field, e.line) == ("schema.fields[1].name", 11)
    assert f"field name {name!r} is reserved" in e.problem
    assert columns.RESERVED[name] in e.problem and "docs/spec.md" in e.problem
    assert str(e).startswith("demo.yaml:11: field 'schema.fields[1].name': ")


def test_id_is_refused_naming_the_field() -> None:
    e = _refused(SPEC.replace("FIELD", "id"))
    assert "'id' is reserved: every record's stable id" in str(e)
    assert "fields: {new_name: id}" in e.problem  # what to do: map the source column


def test_names_a_spec_setting_adds_are_refused_only_with_that_setting() -> None:
    split = SPEC.replace("FIELD", "split")
    parse_spec(split, "demo.yaml")  # a source's own split column: kept, leakage measured
    e = _refused(split + "publish: {splits: {ratios: {train: 0.8, test: 0.2}}}\n")
    assert (e.field, e.line) == ("schema.fields[1].name", 11)
    assert "'split' is reserved here: added by publish.splits.ratios" in e.problem
    language = SPEC.replace("FIELD", "language")
    parse_spec(language, "demo.yaml")
    e = _refused(language + "preprocess: {filters: {language: {allowed: [zh]}}}\n")
    assert e.line == 11 and "preprocess.filters.language" in e.problem
    # image columns are fields like any other in a table
    table = TABLE.replace("{name: sku, type: string}", "{name: width, type: integer}")
    assert parse_spec(table, "demo.yaml").schema_.field("width") is not None


def test_image_columns_are_refused_in_an_image_dataset_at_their_line() -> None:
    image = """\
name: pics
title: Pictures
modality: image
licence: {id: MIT}
owners: [{name: team}]
sources:
  - {name: src, type: files, path: "images/**/*", format: image,
     licence: {id: MIT, origin: written for this test, legal_basis: own}}
schema:
  fields:
    - {name: label, type: string}
    - {name: width, type: integer}
    - {name: phash, type: string}
"""
    with pytest.raises(SpecError) as e:
        parse_spec(image, "pics.yaml")
    assert (e.value.field, e.value.line) == ("schema.fields[1].name", 12)
    assert "'width' is reserved here: an image column" in e.value.problem
    assert [p.field for p in e.value.problems] == ["schema.fields[1].name",
                                                    "schema.fields[2].name"]  # phash too
    assert "'phash' is reserved here" in str(e.value)


def test_every_column_collection_adds_is_reserved() -> None:
    assert set(PROVENANCE) | {"id"} <= set(columns.RESERVED)
    assert set(IMAGE_COLUMNS) <= set(columns.IMAGE)
    assert not set(columns.RESERVED) & set(columns.IMAGE)


def test_a_table_needs_no_text_field_and_gets_defaults_that_do_not_assume_one() -> None:
    from lifecycle.preprocess.stage import pii_fields

    spec = parse_spec(TABLE, "demo.yaml")
    assert spec.schema_.text_field is None
    assert spec.preprocess.dedup.key == ["sku", "price"]  # every field but the label
    assert pii_fields(spec) == []  # typed values, not prose: scanned only when listed
    listed = parse_spec(TABLE + "preprocess: {pii: {fields: [sku]}}\n", "demo.yaml")
    assert pii_fields(listed) == ["sku"] and "fields" not in listed.preprocess.pii.actions()
    keyed = parse_spec(TABLE + "preprocess: {dedup: {key: [sku]}}\n", "demo.yaml")
    assert keyed.preprocess.dedup.key == ["sku"]
    # a text dataset's default key is its text field, whatever its name
    review = SPEC.replace("FIELD", "stars").replace(
        "schema:\n", "schema:\n  text_field: stars\n")
    assert parse_spec(review, "demo.yaml").preprocess.dedup.key == ["stars"]
    assert pii_fields(parse_spec(review, "demo.yaml")) == ["text", "stars"]


@pytest.mark.parametrize(("extra", "named", "line"), [
    ("preprocess: {filters: {language: {allowed: [zh]}}}", "preprocess.filters.language", 16),
    ("preprocess:\n  filters: {max_digit_ratio: 0.5}", "preprocess.filters.max_digit_ratio",
     17),
    ("preprocess: {near_dedup: {enabled: true}}", "preprocess.near_dedup.enabled", 16),
    ("synthesize: {enabled: true}", "synthesize.generator", 16),
    ("annotate:\n  model: {enabled: true}", "annotate.model.enabled", 17),
])
def test_text_operations_on_a_table_without_text_are_refused_at_their_key(
        extra: str, named: str, line: int) -> None:
    e = _refused(TABLE + extra + "\n")
    assert (e.field, e.line) == (named, line)
    assert "works on text, and this table has no text field" in e.problem


def test_a_text_dataset_without_a_text_field_is_refused() -> None:
    e = _refused(SPEC.replace("FIELD", "notes").replace("schema:\n",
                                                       "schema:\n  text_field: null\n"))
    assert (e.field, e.line) == ("schema.text_field", 9)
    assert "a text dataset needs its text field" in e.problem
    assert "modality: table" in e.problem


def test_a_dedup_key_must_name_schema_fields() -> None:
    e = _refused(TABLE + "preprocess: {dedup: {key: [skuu]}}\n")
    assert e.field == "preprocess.dedup.key" and "names ['skuu'], which are not" in e.problem


# ---- plain values ---------------------------------------------------------------------------
def test_values_read_back_from_parquet_are_plain_python() -> None:
    df = pd.DataFrame({"ops": [["nfkc", "fold_whitespace"], [], ["a"]],
                       "n": pd.array([1, None, 3], dtype="Int64"),
                       "x": [1.5, float("nan"), 2.0], "flag": [True, False, None],
                       "when": pd.to_datetime(["2026-01-02", None, "2026-01-03"], utc=True)})
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), buf)
    back = pq.read_table(io.BytesIO(buf.getvalue())).to_pandas()
    assert isinstance(back["ops"].iloc[0], np.ndarray)  # what pandas hands back
    rows = shards.plain_records(back)
    assert rows[0] == {"ops": ["nfkc", "fold_whitespace"], "n": 1, "x": 1.5, "flag": True,
                       "when": "2026-01-02T00:00:00+00:00"}
    assert rows[1] == {"ops": [], "n": None, "x": None, "flag": False, "when": None}
    assert json.loads(json.dumps(rows)) == rows
    assert type(rows[2]["n"]) is int and type(rows[0]["flag"]) is bool
    assert shards.to_python(np.array([[1, 2], [3, 4]])) == [[1, 2], [3, 4]]
    assert shards.to_python({"a": np.float32(0.5), "b": b"\x01"}) == {"a": 0.5, "b": "01"}
    assert shards.to_python(np.datetime64("NaT")) is None and shards.to_python(pd.NA) is None


def _generated(rng: np.random.Generator, depth: int = 0) -> object:
    """A random plain value: None, bool, int, float, text, or lists and dicts of them."""
    kind = int(rng.integers(0, 7 if depth < 3 else 5))
    if kind == 0:
        return None
    if kind == 1:
        return bool(rng.integers(0, 2))
    if kind == 2:
        return int(rng.integers(-2**62, 2**62))
    if kind == 3:
        return float(rng.normal(0, 1e6))
    if kind == 4:
        return "".join(rng.choice(list("ab'[] 中文"), int(rng.integers(0, 6))))
    if kind == 5:
        return [_generated(rng, depth + 1) for _ in range(int(rng.integers(0, 4)))]
    return {f"k{i}": _generated(rng, depth + 1) for i in range(int(rng.integers(0, 4)))}


def test_lists_and_numbers_survive_a_parquet_round_trip_as_typed_json() -> None:
    rng = np.random.default_rng(7)
    for _ in range(40):
        n = int(rng.integers(1, 9))
        lists = [[str(x) for x in rng.choice(["a", "b'", "[c]", "中"], int(rng.integers(0, 5)))]
                 for _ in range(n)]
        numbers = [None if rng.random() < 0.2 else float("nan") if rng.random() < 0.2
                   else float(rng.normal()) for _ in range(n)]
        df = pd.DataFrame({"items": lists, "number": pd.Series(numbers, dtype="float64")})
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), buf)
        rows = shards.plain_records(pq.read_table(io.BytesIO(buf.getvalue())).to_pandas())
        assert [r["items"] for r in rows] == lists
        for r, v in zip(rows, numbers, strict=True):
            assert r["number"] == (None if v is None or math.isnan(v) else v)
        assert json.loads(json.dumps(rows)) == rows


def test_plain_values_pass_through_unchanged() -> None:
    rng = np.random.default_rng(11)
    for _ in range(300):
        value = _generated(rng)
        assert shards.to_python(value) == value


def test_the_table_example_in_the_docs_loads(repo: Path) -> None:
    doc = (repo / "docs" / "spec.md").read_text(encoding="utf-8")
    section = doc[doc.index("### Tables without text"):]
    example = section[section.index("```yaml\n") + 8:section.index("```\n", 8)]
    spec = parse_spec(example, "shop_items.yaml")
    assert spec.schema_.text_field is None and spec.preprocess.dedup.key == [
        "item_id", "price", "weight_g", "in_stock"]
    assert spec.sources[0].fields == {"item_id": "id"}


def test_people_see_a_table_records_fields_as_its_text() -> None:
    """Label Studio tasks for a table without text: the fields, one "name: value" a line,
    in the labelling config's text object."""
    from datetime import UTC, datetime

    from lifecycle.annotate.stage import _export_tasks
    from lifecycle.context import StageContext

    class Store:  # an in-memory double of the object store's one write used here
        def __init__(self) -> None:
            self.objects: dict[str, bytes] = {}

        def write_atomic(self, bucket: str, key: str, data: bytes, kind: str) -> None:
            self.objects[key] = data

    store = Store()
    ctx = StageContext(spec=parse_spec(TABLE, "demo.yaml"), run_id="r", store=store,  # type: ignore[arg-type]
                       catalog=None, registry=None, raw_bucket="", work_bucket="w",  # type: ignore[arg-type]
                       inbox=None, releases_bucket="",  # type: ignore[arg-type]
                       now=datetime(2026, 11, 28, tzinfo=UTC))
    df = pd.DataFrame({"id": ["r1", "r2"], "sku": ["SKU-1", "SKU-2"], "price": [2.5, np.nan],
                       "kind": ["a", "b"]})
    out = _export_tasks(ctx, df, {"r2"}, {"r2": ("a", 0.8)})
    assert out["count"] == 1
    [tasks] = [json.loads(v) for k, v in store.objects.items() if k.endswith(".json")]
    assert tasks[0]["data"] == {"text": "sku: SKU-2\nprice: None", "granary_id": "r2"}
    assert tasks[0]["predictions"][0]["result"][0]["value"] == {"choices": ["a"]}


def test_records_read_from_arrow_keep_their_types_and_every_value_becomes_json() -> None:
    """An integer column with a missing value stays integer (pandas would make 3 -> 3.0);
    decimals, times, durations and other types a JSON encoder refuses become text."""
    from datetime import date, time, timedelta
    from decimal import Decimal
    from uuid import UUID

    table = pa.table({
        "n": pa.array([3, None], pa.int64()),
        "price": pa.array([Decimal("1.50"), None], pa.decimal128(6, 2)),
        "at": pa.array([time(1, 2, 3), None]),
        "took": pa.array([timedelta(seconds=5), None]),
        "day": pa.array([date(2026, 1, 2), None]),
        "xs": pa.array([[1.5, float("nan")], []]),
        "blob": pa.array([b"\x01\xff", None]),
    })
    rows = shards.plain_records(table)
    assert rows == [{"n": 3, "price": "1.50", "at": "01:02:03", "took": "P0DT0H0M5S",
                     "day": "2026-01-02", "xs": [1.5, None], "blob": "01ff"},
                    {"n": None, "price": None, "at": None, "took": None, "day": None, "xs": [],
                     "blob": None}]
    assert type(rows[0]["n"]) is int
    assert json.loads(json.dumps(rows)) == rows  # no default= needed
    assert shards.plain_records(table.to_pandas())[0]["n"] == 3.0  # what pandas would give
    uid = UUID(int=7)
    assert shards.to_python(uid) == str(uid) and shards.to_python(Decimal("2.0")) == "2.0"
    assert shards.to_python(np.timedelta64(5, "s")) == "P0DT0H0M5S"


def test_published_json_lines_take_every_column_type(tmp_path: Path) -> None:
    """The release's JSON Lines file is written by the same conversion: timestamps, decimals,
    bytes, times and nullable integers are written, not refused."""
    from datetime import time
    from decimal import Decimal

    from lifecycle.versions.files import write_format

    df = pd.DataFrame({"when": pd.to_datetime(["2026-01-02", None], utc=True),
                       "price": [Decimal("1.50"), None], "blob": [b"\x01", None],
                       "at": [time(1, 2), None], "n": pd.array([3, None], dtype="Int64"),
                       "ops": [np.array(["a", "b"], dtype=object), np.array([], dtype=object)]})
    [(path, rows)] = write_format(df, tmp_path, "jsonl")  # one part
    assert rows == 2
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert lines == [{"when": "2026-01-02T00:00:00+00:00", "price": "1.50", "blob": "01",
                      "at": "01:02:00", "n": 3, "ops": ["a", "b"]},
                     {"when": None, "price": None, "blob": None, "at": None, "n": None,
                      "ops": []}]
