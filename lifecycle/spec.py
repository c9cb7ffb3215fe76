"""The dataset spec: one YAML file per dataset in ``datasets/``, validated as a pydantic model.

Unknown keys are errors, never ignored. Every error names the file, the field and the line,
and says what would be accepted. The documentation of every key is in ``docs/spec.md``.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

STAGES = ("collect", "preprocess", "annotate", "synthesize", "evaluate", "publish")
NAME_RE = r"^[a-z][a-z0-9_]{1,63}$"


class SpecError(ValueError):
    """A spec that cannot be used. ``str()`` reads ``file:line: field: problem``."""

    def __init__(self, file: str, problem: str, field: str | None = None,
                 line: int | None = None) -> None:
        self.file, self.field, self.line, self.problem = file, field, line, problem
        where = f"{file}:{line}" if line else file
        what = f"field '{field}': " if field else ""
        super().__init__(f"{where}: {what}{problem}")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Owner(_Model):
    name: str
    email: str | None = None


class Licence(_Model):
    id: str = Field(description="SPDX identifier, e.g. MIT, CC-BY-4.0")
    legal_basis: str = Field(default="", description="Why we may use the data")
    url: str | None = None


class FilesSource(_Model):
    name: Annotated[str, Field(pattern=NAME_RE)]
    type: Literal["files"]
    path: str = Field(description="File or glob, relative to the inbox")
    format: Literal["csv", "tsv", "jsonl", "json", "text", "parquet", "excel"]
    encoding: str = Field(default="auto", description="auto = detect per file")
    fields: dict[str, str] = Field(
        default_factory=dict, description="record field -> column/key in the source")
    label: str | None = Field(default=None, description="constant label for every record")
    licence: Licence | None = None

    @field_validator("path")
    @classmethod
    def _relative(cls, v: str) -> str:
        if v.startswith("/") or ".." in Path(v).parts:
            raise ValueError("must be relative to the inbox and must not contain '..'")
        return v


Source = Annotated[FilesSource, Field(discriminator="type")]


class FieldSpec(_Model):
    name: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
    type: Literal["string", "integer", "float", "boolean"] = "string"
    required: bool = True
    values: list[str] | None = Field(default=None, description="allowed values")
    description: str = ""


class Schema(_Model):
    fields: list[FieldSpec]
    text_field: str = "text"
    label_field: str | None = "label"

    @model_validator(mode="after")
    def _known_fields(self) -> Schema:
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise ValueError(f"field names repeat: {names}")
        for role in ("text_field", "label_field"):
            value = getattr(self, role)
            if value is not None and value not in names:
                raise ValueError(f"{role} {value!r} is not one of the fields {names}")
        return self

    def field(self, name: str) -> FieldSpec | None:
        return next((f for f in self.fields if f.name == name), None)


class Normalise(_Model):
    unicode: Literal["NFKC", "NFC", "none"] = "NFKC"
    fold_whitespace: bool = True
    strip: bool = True


class Dedup(_Model):
    exact: bool = True
    key: list[str] = Field(default_factory=lambda: ["text"])


class Preprocess(_Model):
    normalise: Normalise = Normalise()
    dedup: Dedup = Dedup()
    min_chars: int = Field(default=1, ge=0)


class Collect(_Model):
    max_bad_share: float = Field(default=0.05, ge=0, le=1,
                                 description="fail when a source's quarantined share is above")
    max_unpacked_mb: int = Field(default=1024, ge=1, description="bound on .gz/.zip content")


class Annotate(_Model):
    from_source: bool = True


class Synthesize(_Model):
    enabled: bool = False


class Gate(_Model):
    expectations: Literal["all", "none"] = "all"
    min_rows: int = Field(default=1, ge=0)


class Quality(_Model):
    gate: Gate = Gate()


Format = Literal["parquet", "jsonl", "csv"]


class Publish(_Model):
    formats: list[Format] = Field(default_factory=lambda: list[Format](["parquet", "jsonl"]))


class DatasetSpec(_Model):
    name: Annotated[str, Field(pattern=NAME_RE)]
    title: str
    description: str = ""
    domain: str = ""
    modality: Literal["text", "table"] = "text"
    task: str = ""
    language: list[str] = Field(default_factory=list)
    licence: Licence
    owners: list[Owner] = Field(min_length=1)
    sources: list[Source] = Field(min_length=1)
    schema_: Schema = Field(alias="schema")
    collect: Collect = Collect()
    preprocess: Preprocess = Preprocess()
    annotate: Annotate = Annotate()
    synthesize: Synthesize = Synthesize()
    quality: Quality = Quality()
    publish: Publish = Publish()
    schedule: str | None = Field(default=None, description="cron or @preset; none = manual")
    tags: list[str] = Field(default_factory=list)

    @field_validator("sources")
    @classmethod
    def _unique_sources(cls, v: list[FilesSource]) -> list[FilesSource]:
        names = [s.name for s in v]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be unique, got {names}")
        return v

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, v: str | None) -> str | None:
        if v is None or v.startswith("@"):
            return v
        if len(v.split()) != 5:
            raise ValueError(f"{v!r} is neither a 5-field cron expression nor an @preset")
        return v

    @property
    def label_values(self) -> list[str] | None:
        label = self.schema_.label_field
        spec = self.schema_.field(label) if label else None
        return spec.values if spec else None


class LoadedSpec(_Model):
    spec: DatasetSpec
    path: str
    sha256: str


# ---- loading -------------------------------------------------------------------------------
def _marks(node: yaml.Node, path: tuple[Any, ...], out: dict[tuple[Any, ...], int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key_path = (*path, key_node.value)
            out[key_path] = key_node.start_mark.line + 1
            _marks(value_node, key_path, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[(*path, i)] = item.start_mark.line + 1
            _marks(item, (*path, i), out)


def _field_name(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
    return text


def _clean_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    # discriminated unions add the tag ('files') to the location: drop it
    return tuple(p for p in loc if p not in ("files",))


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or current is None:
            continue
        fields = current.model_fields
        key = "schema_" if part == "schema" and "schema_" in fields else part
        info = fields.get(key)
        if info is None:
            return []
        current = _model_of(info.annotation)
    if current is None:
        return []
    return sorted(f.alias or n for n, f in current.model_fields.items())


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_of(arg)
        if found is not None:
            return found
    meta = getattr(annotation, "__origin__", None)
    return _model_of(meta) if meta is not None and meta is not annotation else None


def parse_spec(text: str, file: str) -> DatasetSpec:
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e)
        raise SpecError(file, f"invalid YAML: {problem}. Fix the syntax at that line.",
                        line=mark.line + 1 if mark else None) from e
    if not isinstance(data, dict):
        raise SpecError(file, "a spec must be a YAML mapping of keys (name:, title:, ...)",
                        line=1)
    marks: dict[tuple[Any, ...], int] = {}
    if root is not None:
        _marks(root, (), marks)
    try:
        spec = DatasetSpec.model_validate(data)
    except ValidationError as e:
        # an unknown key usually explains the "missing" error next to it: report it first
        errors = sorted(e.errors(), key=lambda x: x["type"] != "extra_forbidden")
        err = errors[0]
        loc = _clean_loc(tuple(err["loc"]))
        line = next((marks[loc[:i]] for i in range(len(loc), 0, -1) if loc[:i] in marks), None)
        problem = err["msg"]
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(DatasetSpec, loc)
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            problem = f"unknown key.{hint} Allowed here: {', '.join(allowed)}."
        elif err["type"] == "missing":
            problem = "this key is required but missing."
            if line is None:
                parent = loc[:-1]
                line = marks.get(parent, 1) if parent else 1
        else:
            problem += f" (got {err.get('input')!r})."
        more = len(e.errors()) - 1
        if more:
            problem += f" ({more} more problem{'s' if more > 1 else ''} after this one.)"
        raise SpecError(file, problem, field=_field_name(loc), line=line) from e
    return spec


def load_spec(path: Path | str) -> LoadedSpec:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise SpecError(str(path), f"cannot read the spec: {e.strerror}") from e
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(str(path), "the spec is not UTF-8 text") from e
    spec = parse_spec(text, str(path))
    if spec.name != path.stem:
        line = next((i + 1 for i, ln in enumerate(text.splitlines())
                     if re.match(r"^name\s*:", ln)), None)
        raise SpecError(str(path), f"name {spec.name!r} must match the file name "
                        f"{path.stem!r}: rename one of them.", field="name", line=line)
    return LoadedSpec(spec=spec, path=str(path), sha256=hashlib.sha256(raw).hexdigest())


def discover(folder: Path) -> tuple[list[LoadedSpec], list[SpecError]]:
    """Every ``*.yaml``/``*.yml`` spec in ``folder``: the good ones and the errors of the rest."""
    good: list[LoadedSpec] = []
    bad: list[SpecError] = []
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        try:
            good.append(load_spec(path))
        except SpecError as e:
            bad.append(e)
    return good, bad
