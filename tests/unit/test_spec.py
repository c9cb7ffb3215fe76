"""Spec validation: a good spec loads; each kind of bad spec names file, field and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from lifecycle.spec import SpecError, discover, load_spec, parse_spec

pytestmark = pytest.mark.unit

GOOD = """\
name: demo_set
title: Demo
licence: {id: MIT}
owners: [{name: team}]
sources:
  - name: src
    type: files
    path: demo/*.txt
    format: text
    label: a
    licence: {id: MIT, origin: written for this test, legal_basis: own}
schema:
  fields:
    - {name: text, type: string}
    - {name: label, type: string, values: [a, b]}
"""


def write(tmp_path: Path, text: str, name: str = "demo_set.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_good_spec_loads_with_defaults(tmp_path: Path) -> None:
    loaded = load_spec(write(tmp_path, GOOD))
    spec = loaded.spec
    assert spec.name == "demo_set"
    assert spec.sources[0].label == "a"
    assert spec.label_values == ["a", "b"]
    assert spec.preprocess.dedup.key == ["text"]
    assert spec.quality.gate.expectations == "all"
    assert len(loaded.sha256) == 64


def test_tables_are_also_released_as_csv_unless_formats_are_given() -> None:
    assert parse_spec(GOOD, "t.yaml").publish.formats == ["parquet", "jsonl"]
    table = GOOD.replace("title: Demo", "title: Demo\nmodality: table")
    assert parse_spec(table, "t.yaml").publish.formats == ["parquet", "jsonl", "csv"]
    chosen = table + "publish: {formats: [parquet]}\n"
    assert parse_spec(chosen, "t.yaml").publish.formats == ["parquet"]


def test_sample_spec_in_repo_is_valid(repo: Path) -> None:
    good, bad = discover(repo / "datasets")
    assert bad == []
    assert "zh_shopping_reviews" in {s.spec.name for s in good}


def test_misspelt_key_names_field_line_and_suggestion(tmp_path: Path) -> None:
    text = GOOD.replace("    format: text", "    fromat: text")
    with pytest.raises(SpecError) as exc:
        load_spec(write(tmp_path, text))
    e = exc.value
    assert e.line == 9
    assert e.field == "sources[0].fromat"
    assert "Did you mean 'format'?" in str(e)
    assert str(e).startswith(f"{tmp_path / 'demo_set.yaml'}:9:")


def test_unknown_top_level_key_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as exc:
        load_spec(write(tmp_path, GOOD + "shedule: '@daily'\n"))
    assert exc.value.field == "shedule"
    assert exc.value.line == 16
    assert "schedule" in str(exc.value)


def test_missing_required_key(tmp_path: Path) -> None:
    text = GOOD.replace("title: Demo\n", "")
    with pytest.raises(SpecError) as exc:
        load_spec(write(tmp_path, text))
    assert exc.value.field == "title"
    assert "required" in str(exc.value)


def test_bad_value_names_the_value(tmp_path: Path) -> None:
    text = GOOD.replace("format: text", "format: xml")
    with pytest.raises(SpecError) as exc:
        load_spec(write(tmp_path, text))
    assert exc.value.field == "sources[0].format"
    assert exc.value.line == 9
    assert "'xml'" in str(exc.value)


def test_invalid_yaml_gives_line(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as exc:
        load_spec(write(tmp_path, GOOD + "bad: [unclosed\n"))
    assert "invalid YAML" in str(exc.value)
    assert exc.value.line is not None and exc.value.line >= 15


def test_not_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="must be a YAML mapping"):
        load_spec(write(tmp_path, "- just\n- a list\n"))


def test_name_must_match_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as exc:
        load_spec(write(tmp_path, GOOD, name="other_name.yaml"))
    assert exc.value.field == "name" and exc.value.line == 1


def test_path_escaping_inbox_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="must be relative"):
        parse_spec(GOOD.replace("demo/*.txt", "../etc/passwd"), "x.yaml")


def test_label_field_must_be_a_field() -> None:
    text = GOOD.replace("schema:\n", "schema:\n  label_field: category\n")
    with pytest.raises(SpecError, match="label_field 'category'"):
        parse_spec(text, "x.yaml")


def test_a_name_cannot_be_another_datasets_refresh_dag() -> None:
    with pytest.raises(SpecError, match="names the refresh DAG of dataset 'demo_set'"):
        parse_spec(GOOD.replace("name: demo_set", "name: demo_set_refresh"), "x.yaml")


def test_bad_cron_schedule() -> None:
    with pytest.raises(SpecError, match="cron"):
        parse_spec(GOOD + "schedule: 'every day'\n", "x.yaml")


def test_discover_separates_good_and_bad(tmp_path: Path) -> None:
    write(tmp_path, GOOD)
    write(tmp_path, GOOD.replace("demo_set", "broken_set").replace("title", "titel"),
          "broken_set.yaml")
    good, bad = discover(tmp_path)
    assert [g.spec.name for g in good] == ["demo_set"]
    assert len(bad) == 1 and bad[0].file.endswith("broken_set.yaml")


IMAGES = """\
name: pics
title: Pictures
licence: {id: MIT}
owners: [{name: team}]
modality: image
sources:
  - {name: src, type: files, path: "pics/*.png", format: image,
     licence: {id: MIT, origin: written for this test, legal_basis: own}}
schema: {label_field: null, fields: []}
"""


def test_bounding_boxes_are_an_image_task_with_labels_and_no_synthesis() -> None:
    boxes = IMAGES + "annotate: {task: boxes, labels: [{name: car}]}\n"
    assert parse_spec(boxes, "x.yaml").annotate.task == "boxes"
    with pytest.raises(SpecError, match="needs annotate.labels"):
        parse_spec(IMAGES + "annotate: {task: boxes}\n", "x.yaml")
    with pytest.raises(SpecError, match="turn synthesize off"):
        parse_spec(boxes + "synthesize: {enabled: true, generator: image_augment}\n",
                   "x.yaml")
    with pytest.raises(SpecError, match="is for text"):
        parse_spec(IMAGES + "annotate: {task: spans}\n", "x.yaml")
    with pytest.raises(SpecError, match="needs `modality: image`"):
        parse_spec(GOOD + "annotate: {task: boxes, labels: [{name: a}, {name: b}]}\n", "x.yaml")


def test_near_dedup_key_names_schema_fields() -> None:
    good = parse_spec(GOOD + "preprocess:\n  near_dedup: {enabled: true, key: [text, label]}\n",
                      "x.yaml")
    assert good.preprocess.near_dedup.key == ["text", "label"]
    assert parse_spec(GOOD, "x.yaml").preprocess.near_dedup.key is None  # the text field
    bad = GOOD + "preprocess:\n  near_dedup:\n    enabled: true\n    key: [text, answr]\n"
    with pytest.raises(SpecError) as exc:
        parse_spec(bad, "x.yaml")
    assert exc.value.field == "preprocess.near_dedup.key"
    assert exc.value.line == len(bad.splitlines())
    assert "'answr', not a schema field" in exc.value.problem and "text, label" in \
        exc.value.problem
    for key in ("[]", "[text, text]"):
        with pytest.raises(SpecError) as exc:
            parse_spec(GOOD + f"preprocess: {{near_dedup: {{enabled: true, key: {key}}}}}\n",
                       "x.yaml")
        assert exc.value.field == "preprocess.near_dedup.key"
    no_text = GOOD.replace("schema:\n", "schema:\n  text_field: null\n")
    with pytest.raises(SpecError, match="no text field to compare"):
        parse_spec(no_text + "preprocess: {near_dedup: {enabled: true}}\n", "x.yaml")
