"""Spec validation: a good spec loads; each kind of bad spec names file, field and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from lifecycle.spec import SHOWN_PROBLEMS, SpecError, discover, load_spec, parse_spec

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


def test_release_part_size_is_a_positive_spec_key(tmp_path: Path) -> None:
    from lifecycle.versions import files as datafiles

    # the default is the writer's (the spec does not import it)
    assert parse_spec(GOOD, "t.yaml").publish.part_rows == datafiles.PART_ROWS == 50_000
    assert parse_spec(GOOD + "publish: {part_rows: 7}\n", "t.yaml").publish.part_rows == 7
    for bad in ("0", "-5", "lots"):
        text = GOOD + f"publish:\n  part_rows: {bad}\n"
        with pytest.raises(SpecError) as exc:
            load_spec(write(tmp_path, text))
        [problem] = exc.value.problems
        assert (problem.field, problem.line) == ("publish.part_rows", text.count("\n"))
        if bad != "lots":
            assert "greater than or equal to 1" in str(exc.value)


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


def test_an_image_datasets_part_size_fits_its_tar_shards() -> None:
    """A write unit holds whole parts and whole tar shards of 1000 images: a part size that
    neither divides 1000 nor is a multiple of it would make units of their lcm."""
    for fits in (1, 500, 1000, 3000, 50_000):
        spec = parse_spec(IMAGES + f"publish: {{part_rows: {fits}}}\n", "x.yaml")
        assert spec.publish.part_rows == fits
    with pytest.raises(SpecError, match="must divide 1000 or be a multiple of it"):
        parse_spec(IMAGES + "publish: {part_rows: 300}\n", "x.yaml")
    assert parse_spec(GOOD + "publish: {part_rows: 300}\n", "x.yaml").publish.part_rows == 300


# ---- every problem at once (granary check) ----------------------------------------------------
def _line_of(text: str, fragment: str) -> int:
    """The 1-based line of ``fragment`` in ``text``, found independently of the validator."""
    return next(i for i, line in enumerate(text.splitlines(), 1) if fragment in line)


def test_two_problems_in_one_spec_are_both_reported_with_their_lines(tmp_path: Path) -> None:
    text = GOOD.replace("    format: text", "    fromat: text").replace(
        "{name: label, type: string, values: [a, b]}", "{name: label, type: strng}")
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as exc:
        load_spec(path)
    found = [(p.line, p.field) for p in exc.value.problems]
    assert found == [(_line_of(text, "fromat:"), "sources[0].fromat"),
                     (_line_of(text, "type: strng"), "schema.fields[1].type")]
    message = str(exc.value)
    assert message.startswith(f"{path}: 2 problems:")
    assert f"{path}:{_line_of(text, 'fromat:')}: field 'sources[0].fromat'" in message
    assert "Did you mean 'format'?" in message and "'strng'" in message


def test_a_type_error_and_a_typo_are_reported_together(tmp_path: Path) -> None:
    # the typo makes `title` missing too: that is the same problem, reported once
    text = GOOD.replace("title: Demo", "titel: Demo").replace(
        "owners: [{name: team}]", "owners: [{name: team}]\nquality: {gate: {min_rows: many}}")
    with pytest.raises(SpecError) as exc:
        load_spec(write(tmp_path, text))
    problems = {p.field: p for p in exc.value.problems}
    assert set(problems) == {"titel", "quality.gate.min_rows"}
    assert problems["titel"].line == _line_of(text, "titel:")
    assert "Did you mean 'title'?" in problems["titel"].problem
    assert problems["quality.gate.min_rows"].line == _line_of(text, "min_rows: many")
    assert "valid integer" in problems["quality.gate.min_rows"].problem
    assert exc.value.field == "titel"  # the first problem: an unknown key explains the rest


def test_a_wrong_name_is_reported_beside_the_other_problems(tmp_path: Path) -> None:
    text = GOOD.replace("    format: text", "    format: xml")
    with pytest.raises(SpecError) as exc:
        load_spec(write(tmp_path, text, name="other_name.yaml"))
    assert {p.field for p in exc.value.problems} == {"sources[0].format", "name"}


def test_a_long_list_of_problems_is_cut_in_the_message_but_kept_whole(tmp_path: Path) -> None:
    extra = "".join(f"unknown_{i:02d}: 1\n" for i in range(SHOWN_PROBLEMS + 7))
    with pytest.raises(SpecError) as exc:
        load_spec(write(tmp_path, GOOD + extra))
    assert len(exc.value.problems) == SHOWN_PROBLEMS + 7
    message = str(exc.value)
    assert len(message.splitlines()) == 1 + SHOWN_PROBLEMS + 1
    assert message.endswith("... and 7 more (`granary check "
                            f"{tmp_path / 'demo_set.yaml'}` lists every one)")


def test_granary_check_lists_every_problem_of_every_spec(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from granary.cli import app

    specs = tmp_path / "specs"
    specs.mkdir()
    write(specs, GOOD)
    broken = GOOD.replace("demo_set", "broken_set").replace("title: Demo", "titel: Demo") \
        .replace("values: [a, b]", "values: 7")
    write(specs, broken, "broken_set.yaml")
    monkeypatch.setenv("GRANARY_DATASETS_DIR", str(specs))
    runner = CliRunner()
    everything = runner.invoke(app, ["check"])
    assert everything.exit_code == 1
    out = everything.stdout
    assert f"ok {specs / 'demo_set.yaml'}" in out
    assert f"{specs / 'broken_set.yaml'}:{_line_of(broken, 'titel')}: field 'titel'" in out
    assert f"{specs / 'broken_set.yaml'}:{_line_of(broken, 'values: 7')}: field " \
        "'schema.fields[1].values'" in out
    assert "2 problems in 1 of 2 specs" in everything.stderr
    one = runner.invoke(app, ["check", "demo_set"])  # a dataset name: its spec in the folder
    assert one.exit_code == 0 and "1 spec checked: no problem" in one.stdout
    missing = runner.invoke(app, ["check", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 1 and "cannot read the spec" in missing.stdout


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
    table = GOOD.replace("schema:\n", "modality: table\nschema:\n  text_field: null\n")
    with pytest.raises(SpecError, match="this table has no text field") as exc:
        parse_spec(table + "preprocess: {near_dedup: {enabled: true}}\n", "x.yaml")
    assert exc.value.field == "preprocess.near_dedup.enabled"
    keyed = parse_spec(table + "preprocess: {near_dedup: {enabled: true, key: [label]}}\n",
                       "x.yaml")
    assert keyed.preprocess.near_dedup.key == ["label"]


def test_cross_key_problems_and_a_typo_are_all_reported_at_their_lines(tmp_path: Path) -> None:
    """A reserved field name, a refresh key naming no field and a misspelt key: checks that
    span several keys run although a key is misspelt, and none hides another."""
    text = GOOD.replace("title: Demo", "title: Demo\ndescripton: typo") \
        .replace("values: [a, b]}", "values: [a, b]}\n    - {name: split, type: string}") \
        + "publish: {splits: {ratios: {train: 0.8, test: 0.2}}}\nrefresh: {key: [nope]}\n"
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as exc:
        load_spec(path)
    found = {p.field: p for p in exc.value.problems}
    assert set(found) == {"descripton", "schema.fields[2].name", "refresh.key"}
    assert found["descripton"].line == _line_of(text, "descripton:")
    assert found["schema.fields[2].name"].line == _line_of(text, "name: split")
    assert "'split' is reserved here" in found["schema.fields[2].name"].problem
    assert found["refresh.key"].line == _line_of(text, "refresh:")
    assert "['nope']" in found["refresh.key"].problem
    # no problem repeats the whole spec back (`got {...}`)
    assert all("got {" not in p.problem and len(p.problem) < 400 for p in found.values())


def test_a_wrong_value_under_a_misspelt_key_is_reported_with_the_typo(tmp_path: Path) -> None:
    text = GOOD + "preprocess:\n  near_dedupe: {enabled: true, threshold: high}\n"
    with pytest.raises(SpecError) as exc:
        load_spec(write(tmp_path, text))
    found = {p.field: p for p in exc.value.problems}
    assert set(found) == {"preprocess.near_dedupe", "preprocess.near_dedup.threshold"}
    assert found["preprocess.near_dedup.threshold"].line == _line_of(text, "threshold: high")
    assert "`near_dedupe` read as `near_dedup`" in found["preprocess.near_dedup.threshold"].problem
    assert "'high'" in found["preprocess.near_dedup.threshold"].problem


@pytest.mark.parametrize(("extra", "field", "fragment", "says"), [
    ("annotate: {rules: [{name: r, label: c, keywords: [x]}]}\n", "annotate.rules[0].label",
     "label: c", "rule 'r' gives the label 'c'"),
    ("annotate: {labels: [{name: a}, {name: z}]}\n", "annotate.labels", "labels:",
     "differ from the label field's values"),
    ("refresh: {key: [text], deleted_field: label}\n", "refresh.deleted_field", "refresh:",
     "must be a boolean field"),
    ("annotate: {task: boxes, labels: [{name: a}, {name: b}]}\n", "annotate.task", "task:",
     "needs `modality: image`"),
])
def test_each_cross_key_problem_names_its_key_and_line(extra: str, field: str, fragment: str,
                                                        says: str) -> None:
    text = GOOD + extra
    with pytest.raises(SpecError) as exc:
        parse_spec(text, "x.yaml")
    assert [p.field for p in exc.value.problems] == [field]
    assert exc.value.line == _line_of(text, fragment) and says in exc.value.problem


def test_an_image_source_in_a_text_dataset_is_refused_at_its_format() -> None:
    text = GOOD.replace("    format: text", "    format: image")
    with pytest.raises(SpecError) as exc:
        parse_spec(text, "x.yaml")
    assert (exc.value.field, exc.value.line) == ("sources[0].format", 9)
    assert "set `modality: image`" in exc.value.problem


def test_a_union_value_is_one_problem_at_its_key() -> None:
    text = GOOD.replace("sources:\n", "sources:\n  - {name: up, type: dataset, dataset: other, "
                        "version: foo, accept_unlicensed: true}\n")
    with pytest.raises(SpecError) as exc:
        parse_spec(text, "x.yaml")
    assert [(p.field, p.line) for p in exc.value.problems] == [("sources[0].version", 6)]
    assert "valid integer" in exc.value.problem and "'latest'" in exc.value.problem
