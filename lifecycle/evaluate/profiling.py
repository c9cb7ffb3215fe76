"""Rules learned from data, offered to the user: from a reference table (a published
version's records, or a file the spec names), propose field rules (type, numeric range, value
set, regex shape, length bounds) and functional dependencies between fields (zip -> city).

Proposals are never applied by themselves: the quality report shows them as a YAML snippet,
and ``granary profile <spec> --reference FILE --accept`` merges them into the spec file
(comments kept). Accepted, they are ordinary schema keys (``values``, ``min``, ``max``,
``pattern``, ``min_length``, ``max_length``) and ``quality.dependencies``. The formulas are in
docs/quality.md ("Profiling").
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lifecycle.errors import PermanentError
from lifecycle.quality import cells
from lifecycle.spec import DatasetSpec

MAX_VALUES = 50          # a value set has at most this many values...
MIN_PER_VALUE = 10       # ...and at least this many records per value on average
MAX_SHAPES = 4           # a pattern is an alternation of at most this many shapes
RANGE_MARGIN = 0.1       # ranges widened by this share of the observed span on each side
LENGTH_SLACK = 2.0       # variable lengths: from the shortest seen / this to the longest x this
FD_MIN_COVER = 0.8       # a dependency needs this share of records in groups of two or more
FD_MIN_GROUP = 3.0       # ...and this many records per determinant value on average
FD_MAX_VIOLATION = 0.01  # ...and at most this share of records off their group's majority
FD_SPREAD_SHARE = 0.1    # ...and of B's records off B's most common value (near-constant B)
UNIQUE_INTEGERS = 0.9    # an integer field with this share of distinct values: no range


@dataclass
class Proposal:
    """Proposed rules: per field the schema keys to set, and dependencies."""

    reference: str
    rows: int
    fields: dict[str, dict[str, Any]] = field(default_factory=dict)
    dependencies: list[dict[str, Any]] = field(default_factory=list)

    def empty(self) -> bool:
        return not self.fields and not self.dependencies

    def to_json(self) -> dict[str, Any]:
        return {"reference": self.reference, "rows": self.rows, "fields": self.fields,
                "dependencies": self.dependencies, "yaml": self.yaml()}

    def yaml(self) -> str:
        """The rules as a snippet to paste into the spec (only the keys proposed)."""
        from ruamel.yaml import YAML

        doc: dict[str, Any] = {}
        if self.fields:
            doc["schema"] = {"fields": [{"name": _quoted(k), **_quoted(v)}
                                        for k, v in self.fields.items()]}
        if self.dependencies:
            doc["quality"] = {"dependencies": _quoted(self.dependencies)}
        if not doc:
            return ""
        out = io.StringIO()
        y = YAML()
        y.default_flow_style = None
        y.width = 100
        y.dump(doc, out)
        return out.getvalue()


def _quoted(value: Any) -> Any:
    """``value`` with every string that YAML 1.1 would read as something else (``yes``,
    ``no``, ``on``, ``12:30``, ``010``, ``~``, a date) single-quoted. ruamel.yaml writes
    YAML 1.2, where those are plain strings, but the spec is read with PyYAML (YAML 1.1):
    ``values: [no, yes]`` would come back as booleans and ``12:30`` as 750."""
    import yaml
    from ruamel.yaml.scalarstring import SingleQuotedScalarString

    if isinstance(value, str):
        tag = _RESOLVER.resolve(yaml.ScalarNode, value, (True, False))
        return value if tag == "tag:yaml.org,2002:str" else SingleQuotedScalarString(value)
    if isinstance(value, dict):
        return {k: _quoted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_quoted(v) for v in value]
    return value


def _resolver() -> Any:
    import yaml

    return yaml.resolver.Resolver()


_RESOLVER = _resolver()


# ---- shapes ----------------------------------------------------------------------------------
def _runs(value: str) -> list[tuple[str, int]]:
    """A value as runs of character classes: upper and lower letters, digits, spaces, and
    any other character as itself."""
    out: list[tuple[str, int]] = []
    for ch in value:
        cls = ("A" if "A" <= ch <= "Z" else "a" if "a" <= ch <= "z" else "9" if ch.isdigit()
               and ch.isascii() else "s" if ch == " " else ch)
        if out and out[-1][0] == cls:
            out[-1] = (cls, out[-1][1] + 1)
        else:
            out.append((cls, 1))
    return out


_CLASS = {"A": "[A-Z]", "a": "[a-z]", "9": "[0-9]", "s": " "}


def _shape_regex(lengths: list[list[int]], classes: tuple[str, ...]) -> str:
    """One shape's regex: each run its class; a run of digits or of one other character
    with its length when every value had the same, letters one or more (``[A-Z][a-z]+``)
    unless always one."""
    parts = []
    for i, cls in enumerate(classes):
        seen = {ls[i] for ls in lengths}
        atom = _CLASS.get(cls) or ("\\" + cls if cls in ".^$*+?{}[]\\|()" else cls)
        if seen == {1}:
            parts.append(atom)
        elif len(seen) == 1 and cls not in "Aa":
            parts.append(f"{atom}{{{seen.pop()}}}")
        else:
            parts.append(atom + "+")
    return "".join(parts)


def pattern_of(values: pd.Series) -> str | None:
    """A regex every value matches, generalised from their shapes (runs of character
    classes, e.g. ``02139`` -> ``[0-9]{5}``, ``ann.lee42@example.com`` ->
    ``[a-z]+\\.[a-z]+[0-9]+@[a-z]+\\.[a-z]+``), anchored; None when the values have more
    than MAX_SHAPES shapes, or any non-ASCII letter (no class here fits them)."""
    shapes: dict[tuple[str, ...], list[list[int]]] = {}
    for v in values.astype(str).unique().tolist():
        if not v or any(ord(ch) > 127 for ch in v):
            return None
        runs = _runs(v)
        shapes.setdefault(tuple(c for c, _ in runs), []).append([n for _, n in runs])
        if len(shapes) > MAX_SHAPES:
            return None
    if not shapes:
        return None
    alts = sorted(_shape_regex(lengths, classes) for classes, lengths in shapes.items())
    return "^" + (alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")") + "$"


# ---- fields ----------------------------------------------------------------------------------
def _numeric_range(values: pd.Series, integer: bool) -> tuple[float, float]:
    lo, hi = float(values.min()), float(values.max())
    margin = RANGE_MARGIN * (hi - lo)
    low, high = lo - margin, hi + margin
    if lo >= 0:  # a non-negative quantity stays non-negative
        low = max(0.0, low)
    if integer:
        low, high = float(math.floor(low)), float(math.ceil(high))
    else:  # two significant digits outward: 179,993.17 + margin -> 200,000
        low, high = _round_out(low, math.floor), _round_out(high, math.ceil)
    return low, high


def _round_out(x: float, how: Any) -> float:
    if x == 0:
        return 0.0
    step = 10 ** (math.floor(math.log10(abs(x))) - 1)
    return float(how(x / step) * step)


def propose_field(name: str, kind: str, values: pd.Series,
                  sample: pd.Series | None = None) -> dict[str, Any]:
    """The rules one field's non-missing reference values support. Value sets, ranges and
    lengths come from every value (``values``, vectorised), so a rare value or extreme is not
    left out; the regex shape from ``sample`` (default: all of them), since it is built
    value by value."""
    if values.empty:
        return {}
    if kind in ("integer", "float"):
        numbers = pd.to_numeric(values, errors="coerce").dropna()
        if numbers.empty:
            return {}
        if kind == "integer" and numbers.nunique() >= UNIQUE_INTEGERS * len(numbers):
            return {}  # an identifier or counter: the next version's grow out of any range
        low, high = _numeric_range(numbers, kind == "integer")
        rules: dict[str, Any] = ({"min": int(low), "max": int(high)} if kind == "integer"
                                 else {"min": low, "max": high})
        steps = numbers.diff().dropna()
        if kind == "integer" and len(steps) and (steps >= 0).all() and (steps > 0).any():
            rules.pop("max")  # grows with the records (a year, a sequence): no upper bound
        return rules
    if kind != "string":
        return {}
    text = values.astype(str)
    counts = text.value_counts()
    # a closed set: few values, each seen more than once (a value seen once says the set
    # is not closed), and on average MIN_PER_VALUE records per value
    if (len(counts) <= MAX_VALUES and counts.min() >= 2
            and len(counts) * MIN_PER_VALUE <= len(text)):
        return {"values": sorted(counts.index.tolist())}
    out: dict[str, Any] = {}
    found = pattern_of(text if sample is None else sample.astype(str))
    if found is not None:
        out["pattern"] = found
    lengths = text.str.len()
    if lengths.min() == lengths.max():
        out["min_length"] = out["max_length"] = int(lengths.min())
    else:
        out["min_length"] = int(lengths.min() // LENGTH_SLACK)
        out["max_length"] = int(math.ceil(lengths.max() * LENGTH_SLACK))
    return out


# ---- dependencies ----------------------------------------------------------------------------
def dependencies(frame: pd.DataFrame, columns: list[str]) -> list[dict[str, Any]]:
    """Single-field functional dependencies A -> B the reference supports: A has on average
    FD_MIN_GROUP records per value and its groups of two or more hold FD_MIN_COVER of the
    records (so unique columns and tiny groups propose nothing), B is not constant, and the
    records that differ from their A group's most common B are at most FD_MAX_VIOLATION of
    the records and at most FD_SPREAD_SHARE of B's own records outside B's most common value
    (a B that is 99.4% one value is off its group's majority for 0.6% of the records under
    any A: that is not a dependency). A dependency implied by two others (A -> B and B -> C
    make A -> C) is still listed: each is checked on its own cells."""
    n = len(frame)
    out = []
    for a in columns:
        col = frame[a].dropna().astype(str)
        if col.empty or col.nunique() * FD_MIN_GROUP > len(col):
            continue
        sizes = col.map(col.value_counts())
        if (sizes >= 2).sum() < FD_MIN_COVER * n:
            continue
        for b in columns:
            if b == a or frame[b].nunique(dropna=True) < 2:
                continue
            both = frame[[a, b]].dropna().astype(str)
            if both.empty:
                continue
            counts = both.groupby([a, b], sort=False).size()
            off = len(both) - counts.groupby(level=0, sort=False).max().sum()
            spread = len(both) - both[b].value_counts().iloc[0]  # off B's most common value
            if off <= FD_MAX_VIOLATION * len(both) and off <= FD_SPREAD_SHARE * spread:
                out.append({"determinant": [a], "dependent": b})
    return out


def propose(spec: DatasetSpec, reference: pd.DataFrame, name: str,
            max_rows: int | None = None, seed: int = 0) -> Proposal:
    """Rules for ``spec``'s fields from ``reference``, leaving out what the spec already
    says (a field key already set, a dependency already listed). The text field and the
    label field are left out (text is free; labels have their own values). Value sets,
    ranges and lengths are taken over the whole reference; regex shapes and dependencies
    over a seeded sample of at most ``max_rows`` (default ``quality.profile.max_rows``)."""
    rows = max_rows or spec.quality.profile.max_rows
    fields = [f for f in spec.schema_.fields
              if f.name in reference and f.name not in (spec.schema_.text_field,
                                                        spec.schema_.label_field)]
    frame = cells.view(spec, reference, [f.name for f in fields])
    sample = frame.sample(rows, random_state=seed) if len(frame) > rows else frame
    proposal = Proposal(reference=name, rows=len(frame))
    for f in fields:
        wanted = propose_field(f.name, f.type, frame[f.name].dropna(),
                               sample[f.name].dropna())
        new = {k: v for k, v in wanted.items() if getattr(f, k) is None}
        if "values" in new and (f.pattern is not None or f.max_length is not None):
            new.pop("values")
        if new:
            proposal.fields[f.name] = new
    listed = {(tuple(d.determinant), d.dependent) for d in spec.quality.dependencies}
    candidates = [f.name for f in fields if f.type in ("string", "integer", "boolean")]
    edges = [(d.determinant, d.dependent) for d in spec.quality.dependencies]
    for d in dependencies(sample, candidates):
        if (tuple(d["determinant"]), d["dependent"]) in listed:
            continue
        if not _acyclic([*edges, (d["determinant"], d["dependent"])]):
            continue  # one-to-one fields (A -> B and B -> A): the first direction only
        edges.append((d["determinant"], d["dependent"]))
        proposal.dependencies.append(d)
    return proposal


def _acyclic(edges: list[tuple[list[str], str]]) -> bool:
    """Whether dependencies (determinant, dependent) leave the fields without a cycle (the
    spec refuses one: no order to check them in)."""
    import graphlib

    graph: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for determinant, dependent in edges:
        graph.add(dependent, *determinant)
    try:
        graph.prepare()
    except graphlib.CycleError:
        return False
    return True


def read_reference(path: Path) -> pd.DataFrame:
    """A reference file: CSV, TSV, JSON Lines or Parquet, strings kept as written. A file
    that is missing, unreadable or not of its format is a PermanentError naming it."""
    suffix = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    if not path.is_file():
        raise PermanentError(f"profile reference {path}: no such file; name a CSV, TSV, JSONL "
                             "or Parquet file")
    readers = {".csv": ("CSV", lambda: pd.read_csv(path, dtype=str, keep_default_na=False)),
               ".tsv": ("TSV", lambda: pd.read_csv(path, sep="\t", dtype=str,
                                                   keep_default_na=False)),
               ".jsonl": ("JSON Lines", lambda: pd.read_json(path, lines=True, dtype=False)),
               ".parquet": ("Parquet", lambda: pd.read_parquet(path))}
    readers[".csv.gz"], readers[".tsv.gz"] = readers[".csv"], readers[".tsv"]
    readers[".jsonl.gz"] = readers[".ndjson"] = readers[".jsonl"]
    if suffix not in readers:
        raise PermanentError(f"profile reference {path}: unknown format {suffix!r}; use .csv, "
                             ".tsv, .jsonl or .parquet")
    kind, read = readers[suffix]
    try:
        return read()
    except Exception as e:  # pandas and pyarrow raise many kinds for a broken file
        raise PermanentError(f"profile reference {path}: cannot read it as {kind} "
                             f"({type(e).__name__}: {str(e)[:200]}); fix or replace the file, "
                             "or give it the suffix of its format") from e


def typed(spec: DatasetSpec, df: pd.DataFrame) -> pd.DataFrame:
    """A reference read as text, its numeric fields as numbers (cells that are not numbers
    become missing, and are not profiled)."""
    out = df.copy()
    for f in spec.schema_.fields:
        if f.name in out and f.type in ("integer", "float"):
            out[f.name] = pd.to_numeric(out[f.name].replace("", np.nan), errors="coerce")
    return out


def accept(spec_path: Path, proposal: Proposal) -> list[str]:
    """Merge the proposal into the spec file, keeping its comments and layout (ruamel.yaml
    round trip). The new text is parsed as the spec loader reads it (PyYAML, YAML 1.1) and
    must give back exactly the proposed rules before the file is written: a SpecError
    otherwise, with the file left as it was. Returns what was set, one line each."""
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap, CommentedSeq
    from ruamel.yaml.util import load_yaml_guess_indent

    from lifecycle.spec.load import SpecError, parse_spec

    original = spec_path.read_text(encoding="utf-8")
    y = YAML()
    y.preserve_quotes = True
    # the file's own layout: its indents as guessed, lines not re-wrapped (a flow mapping
    # the author wrapped comes back on one line), ``null`` written as such, and a one-key
    # mapping in a flow list kept in braces (``[{name: qa}]``, not ``[name: qa]``)
    _, indent, block_seq_indent = load_yaml_guess_indent(original)
    sequence, offset = indent or 2, block_seq_indent or 0  # "  - x": 4 and 2
    y.indent(mapping=max(sequence - offset, 2), sequence=sequence, offset=offset)
    y.width = 4096
    y.brace_single_entry_mapping_in_flow_sequence = True
    y.representer.add_representer(
        type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null"))
    doc = y.load(original)
    changed = []
    listed = {f["name"]: f for f in doc["schema"]["fields"]}
    for name, keys in proposal.fields.items():
        entry = listed.get(name)
        if entry is None:
            continue
        for k, v in keys.items():
            v = _quoted(v)
            if isinstance(v, list):
                seq = CommentedSeq(v)
                seq.fa.set_flow_style()
                v = seq
            entry[k] = v
            changed.append(f"schema.fields[{name}].{k}")
    if proposal.dependencies:
        quality = doc.setdefault("quality", CommentedMap())
        deps = quality.setdefault("dependencies", CommentedSeq())
        for d in proposal.dependencies:
            item = CommentedMap(determinant=CommentedSeq(_quoted(d["determinant"])),
                                dependent=_quoted(d["dependent"]))
            item["determinant"].fa.set_flow_style()
            item.fa.set_flow_style()
            deps.append(item)
            changed.append(f"quality.dependencies: {d['determinant']} -> {d['dependent']}")
    out = io.StringIO()
    y.dump(doc, out)
    text = out.getvalue()
    spec = parse_spec(text, str(spec_path))  # a SpecError: the file is not touched
    for name, keys in proposal.fields.items():
        read = spec.schema_.field(name)
        for k, v in keys.items():
            if read is not None and getattr(read, k) != v:
                raise SpecError(str(spec_path), f"accepting the proposed {k} of {name} would "
                                f"read back as {getattr(read, k)!r}, not {v!r}; the spec file "
                                "was not changed: add the rule by hand, quoted",
                                field=f"schema.fields[{name}].{k}")
    spec_path.write_text(text, encoding="utf-8")
    return changed
