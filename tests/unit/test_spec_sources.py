"""Spec keys of file sources for CSV and TSV (header, columns, delimiter, quotechar) and
null_values: good values load, bad ones name the field and its line, and the fields a source
must fill are known before anything runs."""

from __future__ import annotations

import pytest

from lifecycle.spec import SpecError, parse_spec

pytestmark = pytest.mark.unit

SPEC = """\
name: demo_set
title: Demo
licence: {{id: MIT}}
owners: [{{name: team}}]
sources:
  - name: src
    type: files
    path: demo/rows.{fmt}
    format: {fmt}
    licence: {{id: MIT, origin: written for this test, legal_basis: own}}
{extra}schema:
  fields:
    - {{name: text, type: string}}
    - {{name: label, type: string}}
{tail}"""


def _spec(fmt: str = "csv", extra: str = "", tail: str = "") -> str:
    lines = "".join(f"    {line}\n" for line in extra.splitlines())
    return SPEC.format(fmt=fmt, extra=lines, tail=tail)


def _error(text: str) -> SpecError:
    with pytest.raises(SpecError) as failed:
        parse_spec(text, "t.yaml")
    return failed.value


def test_csv_and_tsv_keys_load_and_default_by_format() -> None:
    src = parse_spec(_spec("tsv", "header: false\ncolumns: [text, label]\nnull_values: ['', N/A]"),
                     "t.yaml").sources[0]
    assert (src.header, src.columns, src.delimiter) == (False, ["text", "label"], None)
    assert src.effective_quotechar is None and src.null_values == ["", "N/A"]
    assert parse_spec(_spec("csv"), "t.yaml").sources[0].effective_quotechar == '"'
    unquoted = parse_spec(_spec("csv", "quotechar: null\ndelimiter: ';'"), "t.yaml").sources[0]
    assert unquoted.effective_quotechar is None and unquoted.delimiter == ";"
    tab = parse_spec(_spec("csv", 'delimiter: "\\t"'), "t.yaml").sources[0]
    assert tab.delimiter == "\t"


@pytest.mark.parametrize(("fmt", "extra", "field", "line", "says"), [
    ("csv", "header: false", "sources[0].columns", 6, "header: false needs `columns"),
    ("csv", "columns: [text, label]", "sources[0].columns", 11, "set header: false"),
    ("jsonl", "delimiter: ';'", "sources[0].delimiter", 11, "only to csv and tsv sources"),
    ("csv", "delimiter: ';;'", "sources[0].delimiter", 11, "must be one character"),
    ("csv", "quotechar: ','\ndelimiter: ','", "sources[0].quotechar", 11, "also the delimiter"),
    ("tsv", 'quotechar: "\\t"', "sources[0].quotechar", 11, "also the delimiter (a tab"),
    ("csv", "quotechar: ';'", "sources[0].quotechar", 11, "one of the delimiters"),
    ("text", "null_values: ['']", "sources[0].null_values", 11, "a text source has none"),
    ("image", "null_values: [N/A]", "sources[0].null_values", 11, "has no sidecar"),
    ("csv", "header: false\ncolumns: [text, text]", "sources[0].columns", 12, "unique"),
    ("tsv", "header: false\ncolumns: [text, stars]", "sources[0].columns", 12,
     "no column for the field(s) label (column 'label'); its columns are ['text', 'stars']"),
    ("tsv", "header: false\ncolumns: [a, b]\nfields: {text: a, label: c}",
     "sources[0].fields.label", 13, "label (column 'c')"),
])
def test_a_bad_key_names_its_field_and_line(fmt: str, extra: str, field: str, line: int,
                                            says: str) -> None:
    error = _error(_spec(fmt, extra))
    assert (error.field, error.line) == (field, line)
    assert says in error.problem


def test_null_values_load_where_there_are_cells() -> None:
    for fmt in ("csv", "tsv", "jsonl", "json", "parquet", "excel"):
        assert parse_spec(_spec(fmt, "null_values: [N/A]"), "t.yaml").sources[0].null_values \
            == ["N/A"]
    # an image source's sidecar has cells
    sidecar = (_spec("image", "null_values: [N/A]\nsidecar: {path: demo/captions.csv}")
               .replace("title: Demo", "title: Demo\nmodality: image")
               .replace("    - {name: text, type: string}\n", ""))
    assert parse_spec(sidecar, "t.yaml").sources[0].null_values == ["N/A"]
    # a quote character the csv delimiter cannot be, once the delimiter is set
    assert parse_spec(_spec("csv", "quotechar: ';'\ndelimiter: ','"), "t.yaml").sources[0] \
        .quotechar == ";"


def test_the_fields_a_source_must_fill() -> None:
    spec = parse_spec(_spec(), "t.yaml")
    assert spec.needed_columns(spec.sources[0]) == {"text": "text", "label": "label"}
    mapped = parse_spec(_spec(extra="fields: {text: review}"), "t.yaml")
    assert mapped.needed_columns(mapped.sources[0]) == {"text": "review", "label": "label"}
    constant = parse_spec(_spec(extra="label: pos"), "t.yaml")
    assert constant.needed_columns(constant.sources[0]) == {"text": "text"}
    optional = parse_spec(_spec().replace("{name: label, type: string}",
                                          "{name: label, type: string, required: false}"),
                          "t.yaml")
    assert optional.needed_columns(optional.sources[0]) == {"text": "text"}
    # labels that annotation gives (here people's completions) are not needed from a source
    people = parse_spec(_spec(tail="annotate: {people: {completions: [done/*.json]}}\n"),
                        "t.yaml")
    assert people.needed_columns(people.sources[0]) == {"text": "text"}
    # ... unless the source maps the label field to a column by name
    both = parse_spec(_spec(extra="fields: {label: verdict}",
                            tail="annotate: {people: {completions: [done/*.json]}}\n"), "t.yaml")
    assert both.needed_columns(both.sources[0]) == {"text": "text", "label": "verdict"}
