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

from lifecycle import cells
from lifecycle.errors import PermanentError
from lifecycle.spec import DatasetSpec

MAX_VALUES = 50          # a value set has at most this many values...
MIN_PER_VALUE = 10       # ...and at least this many records per value on average
MAX_SHAPES = 4           # a pattern is an alternation of at most this many shapes
RANGE_MARGIN = 0.1       # ranges widened by this share of the observed span on each side
LENGTH_SLACK = 2.0       # variable lengths: from the shortest seen / this to the longest x this
FD_MIN_COVER = 0.8       # a dependency needs this share of records in groups of two or more
FD_MIN_GROUP = 3.0       # ...and this many records per determinant value on average
FD_MAX_VIOLATION = 0.01  # ...and at most this share of records off their group's majority


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
            doc["schema"] = {"fields": [{"name": k, **v} for k, v in self.fields.items()]}
        if self.dependencies:
            doc["quality"] = {"dependencies": self.dependencies}
        if not doc:
            return ""
        out = io.StringIO()
        y = YAML()
        y.default_flow_style = None
        y.width = 100
        y.dump(doc, out)
        return out.getvalue()


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


def propose_field(name: str, kind: str, values: pd.Series, n: int) -> dict[str, Any]:
    """The rules one field's non-missing reference values support."""
    if values.empty:
        return {}
    if kind in ("integer", "float"):
        numbers = pd.to_numeric(values, errors="coerce").dropna()
        if numbers.empty:
            return {}
        low, high = _numeric_range(numbers, kind == "integer")
        if kind == "integer":
            return {"min": int(low), "max": int(high)}
        return {"min": low, "max": high}
    if kind != "string":
        return {}
    text = values.astype(str)
    distinct = text.nunique()
    if distinct <= MAX_VALUES and distinct * MIN_PER_VALUE <= n:
        return {"values": sorted(text.unique().tolist())}
    out: dict[str, Any] = {}
    found = pattern_of(text)
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
    records (so unique columns and tiny groups propose nothing), B is not constant, and at
    most FD_MAX_VIOLATION of the records differ from their A group's most common B. A
    dependency implied by two others (A -> B and B -> C make A -> C) is still listed: each
    is checked on its own cells."""
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
            counts = both.groupby([a, b], sort=False).size()
            agree = counts.groupby(level=0, sort=False).max().sum()
            if len(both) and (len(both) - agree) <= FD_MAX_VIOLATION * len(both):
                # B must vary across A's groups: else it is constant, caught above
                out.append({"determinant": [a], "dependent": b})
    return out


def propose(spec: DatasetSpec, reference: pd.DataFrame, name: str,
            max_rows: int | None = None, seed: int = 0) -> Proposal:
    """Rules for ``spec``'s fields from ``reference``, leaving out what the spec already
    says (a field key already set, a dependency already listed). The text field and the
    label field are left out (text is free; labels have their own values)."""
    rows = max_rows or spec.quality.profile.max_rows
    ref = reference.sample(rows, random_state=seed) if len(reference) > rows else reference
    fields = [f for f in spec.schema_.fields
              if f.name in ref and f.name not in (spec.schema_.text_field,
                                                  spec.schema_.label_field)]
    frame = cells.view(spec, ref, [f.name for f in fields])
    proposal = Proposal(reference=name, rows=len(ref))
    for f in fields:
        wanted = propose_field(f.name, f.type, frame[f.name].dropna(), len(frame))
        new = {k: v for k, v in wanted.items() if getattr(f, k) is None}
        if "values" in new and (f.pattern is not None or f.max_length is not None):
            new.pop("values")
        if new:
            proposal.fields[f.name] = new
    listed = {(tuple(d.determinant), d.dependent) for d in spec.quality.dependencies}
    candidates = [f.name for f in fields if f.type in ("string", "integer", "boolean")]
    proposal.dependencies = [d for d in dependencies(frame, candidates)
                             if (tuple(d["determinant"]), d["dependent"]) not in listed]
    return proposal


def read_reference(path: Path) -> pd.DataFrame:
    """A reference file: CSV, TSV, JSON Lines or Parquet, strings kept as written."""
    suffix = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    if not path.is_file():
        raise PermanentError(f"profile reference {path}: no such file; name a CSV, TSV, JSONL "
                             "or Parquet file")
    if suffix in (".csv", ".csv.gz"):
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    if suffix in (".tsv", ".tsv.gz"):
        return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    if suffix in (".jsonl", ".jsonl.gz", ".ndjson"):
        return pd.read_json(path, lines=True, dtype=False)
    if suffix == ".parquet":
        return pd.read_parquet(path)
    raise PermanentError(f"profile reference {path}: unknown format {suffix!r}; use .csv, "
                         ".tsv, .jsonl or .parquet")


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
    round trip). Returns what was set, one line each."""
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    y = YAML()
    y.preserve_quotes = True
    y.width = 100
    doc = y.load(spec_path.read_text(encoding="utf-8"))
    changed = []
    listed = {f["name"]: f for f in doc["schema"]["fields"]}
    for name, keys in proposal.fields.items():
        entry = listed.get(name)
        if entry is None:
            continue
        for k, v in keys.items():
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
            item = CommentedMap(determinant=CommentedSeq(d["determinant"]),
                                dependent=d["dependent"])
            item["determinant"].fa.set_flow_style()
            item.fa.set_flow_style()
            deps.append(item)
            changed.append(f"quality.dependencies: {d['determinant']} -> {d['dependent']}")
    out = io.StringIO()
    y.dump(doc, out)
    spec_path.write_text(out.getvalue(), encoding="utf-8")
    return changed
