"""The dataset spec as a whole: DatasetSpec composes the shared keys (name, licence, owners,
schema, refresh, ...) and each stage's section (lifecycle/<stage>/spec.py), fills the defaults
that follow from several keys, and checks what spans several keys, each problem at its own key.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from lifecycle.annotate.spec import Annotate, LabelDef
from lifecycle.collect.spec import Collect, DatasetSource, Source
from lifecycle.evaluate.spec import Quality
from lifecycle.preprocess.spec import Filters, Preprocess
from lifecycle.publish.spec import Access, Publish
from lifecycle.records import columns
from lifecycle.spec.base import NAME_RE, _Model
from lifecycle.spec.licence import Licence, Owner
from lifecycle.spec.refresh import Refresh
from lifecycle.spec.schema import Schema, _reserved
from lifecycle.synthesize.spec import Synthesize

Problem = tuple[tuple[Any, ...], str, Any]
"""A problem a check spanning several keys found: the key's location, what to do, its value."""


def _refuse(model: BaseModel, problems: list[Problem]) -> None:
    """Raise ``problems`` as one ValidationError, each at its own key, so that the spec error
    names the key and its line (a model validator's own errors have no location)."""
    if problems:
        raise ValidationError.from_exception_data(type(model).__name__, [
            InitErrorDetails(type=PydanticCustomError("spec", "{message}", {"message": msg}),
                             loc=loc, input=value.model_dump() if isinstance(value, BaseModel)
                             else value) for loc, msg, value in problems])


class DatasetSpec(_Model):
    name: Annotated[str, Field(pattern=NAME_RE)]
    title: str
    description: str = ""
    domain: str = ""
    modality: Literal["text", "table", "image"] = "text"
    task: str = ""
    language: list[str] = Field(default_factory=list)
    licence: Licence
    access: Access = Field(
        default="public", description="restricted: the catalog shows the dataset, its files "
                                      "and lineage only to admin tokens and tokens granted it")
    owners: list[Owner] = Field(min_length=1)
    sources: list[Source] = Field(min_length=1)
    schema_: Schema = Field(alias="schema")
    collect: Collect = Collect()
    preprocess: Preprocess = Preprocess()
    annotate: Annotate = Annotate()
    synthesize: Synthesize = Synthesize()
    quality: Quality = Quality()
    publish: Publish = Publish()
    refresh: Refresh = Refresh()
    schedule: str | None = Field(default=None, description="cron or @preset; none = manual")
    tags: list[str] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _not_a_refresh_dag(cls, v: str) -> str:
        if v.endswith("_refresh"):
            raise ValueError(f"{v!r} ends with '_refresh', which names the refresh DAG of "
                             f"dataset {v.removesuffix('_refresh')!r} (granary_{v}): choose "
                             "another name")
        return v

    @field_validator("sources")
    @classmethod
    def _unique_sources(cls, v: list[Any]) -> list[Any]:
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

    @model_validator(mode="before")
    @classmethod
    def _image_defaults(cls, data: Any) -> Any:
        # an image dataset has no text field unless it names one (a caption)
        if isinstance(data, dict) and data.get("modality") == "image":
            schema = data.get("schema")
            if isinstance(schema, dict) and "text_field" not in schema:
                data = {**data, "schema": {**schema, "text_field": None}}
        return data

    @model_validator(mode="after")
    def _cross_keys(self) -> DatasetSpec:
        """The defaults that follow from several keys, then every check that spans several
        keys. Each check returns its problems, each at its own key, and they are raised
        together (one check failing must not hide the next one's problems)."""
        self._defaults()
        _refuse(self, [*self._image_problems(), *self._annotation_problems(),
                       *self._text_problems(), *self._near_dedup_key_problems(),
                       *self._refresh_problems(), *self._reserved_problems(),
                       *self._source_column_problems(), *self._quality_problems(),
                       *self._dependency_problems()])
        return self

    def _defaults(self) -> None:
        # tables are also released as CSV unless the spec lists its formats itself
        if self.modality == "table" and "formats" not in self.publish.model_fields_set:
            object.__setattr__(self, "publish", self.publish.model_copy(
                update={"formats": ["parquet", "jsonl", "csv"]}))
        dedup, text = self.preprocess.dedup, self.schema_.text_field
        if "key" not in dedup.model_fields_set and self.modality != "image":
            # the duplicate key: the text field, or every field of a table without text but
            # the label (equal records with different labels are a label conflict)
            fields = [f.name for f in self.schema_.fields]
            key = ([text] if text is not None
                   else [n for n in fields if n != self.schema_.label_field] or fields)
            object.__setattr__(self, "preprocess", self.preprocess.model_copy(
                update={"dedup": dedup.model_copy(update={"key": key})}))

    def _annotation_problems(self) -> list[Problem]:
        found: list[Problem] = []
        a = self.annotate
        values = self.label_values
        listed = [lab.name for lab in a.labels]
        if values and listed and set(values) != set(listed):
            found.append((("annotate", "labels"), f"annotate.labels {sorted(listed)} differ "
                          f"from the label field's values {sorted(values)}: list the same "
                          "labels in both", listed))
        known = set(values or []) | set(listed)
        for i, rule in enumerate(a.rules):
            if known and rule.label not in known:
                found.append((("annotate", "rules", i, "label"), f"rule {rule.name!r} gives "
                              f"the label {rule.label!r}, which is not one of "
                              f"{sorted(known)}: give one of those", rule.label))
        if (a.rules or a.model.enabled) and not self.schema_.label_field:
            where = ("annotate", "rules") if a.rules else ("annotate", "model", "enabled")
            found.append((where, "rules and model-assisted labels need a label field: set "
                          "schema.label_field, or remove them", None))
        return found

    def _image_problems(self) -> list[Problem]:
        a = self.annotate
        formats = [(("sources", i, "format"), s.name, getattr(s, "format", None))
                   for i, s in enumerate(self.sources)]
        if self.modality != "image":
            found: list[Problem] = [
                (loc, f"source {name!r} reads images: set `modality: image`", fmt)
                for loc, name, fmt in formats if fmt == "image"]
            if a.task == "boxes":
                found.append((("annotate", "task"), "boxes (bounding boxes) needs `modality: "
                              "image`", a.task))
            return found
        found = [(loc, f"an image dataset's sources must have `format: image`; source "
                  f"{name!r} does not", fmt) for loc, name, fmt in formats if fmt != "image"]
        # schema fields named like the image columns: _reserved_problems
        if a.task not in ("single_label", "boxes"):
            found.append((("annotate", "task"), f"annotate.task {a.task!r} is for text; an "
                          "image dataset's task is single_label (classification) or boxes",
                          a.task))
        if a.task == "boxes" and not a.labels:
            found.append((("annotate", "task"), "annotate.task boxes needs annotate.labels: "
                          "the classes people draw boxes for", a.task))
        if a.task == "boxes" and self.synthesize.enabled:
            found.append((("synthesize", "enabled"), "synthesize with annotate.task boxes: "
                          "augmented images would not carry their boxes (flips, crops and "
                          "rotations move them); turn synthesize off", True))
        rows = self.publish.part_rows  # a write unit holds whole parts and whole tar shards
        if rows % 1000 and 1000 % rows:  # lifecycle/publish/images.py SHARD_IMAGES
            found.append((("publish", "part_rows"), "an image dataset's publish.part_rows "
                          "must divide 1000 or be a multiple of it (its tar shards hold 1000 "
                          f"images): {rows} is neither; e.g. 500, 1000 or 50000", rows))
        return found

    def _dependency_problems(self) -> list[Problem]:
        """quality.dependencies name schema fields and form no cycle (no order to check
        them in: lifecycle/quality/cells.py)."""
        import graphlib

        names = [f.name for f in self.schema_.fields]
        found: list[Problem] = []
        graph: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
        for dep in self.quality.dependencies:
            graph.add(dep.dependent, *dep.determinant)
        try:
            graph.prepare()
        except graphlib.CycleError as e:
            found.append((("quality", "dependencies"),
                          f"form a cycle ({' -> '.join(reversed(e.args[1]))}): drop one "
                          "dependency of it", [d.model_dump() for d in self.quality.dependencies]))
        for i, dep in enumerate(self.quality.dependencies):
            missing = [c for c in [*dep.determinant, dep.dependent] if c not in names]
            if missing:
                found.append((("quality", "dependencies", i),
                              f"names {', '.join(repr(m) for m in missing)}, not schema "
                              f"fields: list fields of schema.fields ({', '.join(names)})",
                              dep.model_dump()))
        return found

    def _near_dedup_key_problems(self) -> list[Problem]:
        """near_dedup.key names schema fields (a table without text and no key:
        _text_settings)."""
        nd = self.preprocess.near_dedup
        if not nd.enabled or self.modality == "image" or nd.key is None:
            return []
        names = [f.name for f in self.schema_.fields]
        missing = [k for k in nd.key if k not in names]
        if not missing:
            return []
        return [(("preprocess", "near_dedup", "key"),
                 f"names {', '.join(repr(m) for m in missing)}, not "
                 f"{'a schema field' if len(missing) == 1 else 'schema fields'}: list "
                 f"fields of schema.fields ({', '.join(names)})", nd.key)]

    def _refresh_problems(self) -> list[Problem]:
        found: list[Problem] = []
        names = [f.name for f in self.schema_.fields]
        missing = [k for k in self.refresh.key if k not in names]
        if missing:
            found.append((("refresh", "key"), f"names {missing}, which are not schema fields "
                          f"{names}: list fields of schema.fields", self.refresh.key))
        deleted = self.refresh.deleted_field
        if deleted is not None:
            if not self.refresh.key:
                found.append((("refresh", "deleted_field"), "needs refresh.key: a deletion "
                              "names the key of the record it removes", deleted))
            spec = self.schema_.field(deleted)
            if spec is None or spec.type != "boolean":
                found.append((("refresh", "deleted_field"), f"{deleted!r} must be a boolean "
                              "field of the schema (type: boolean)", deleted))
        return found

    def _quality_problems(self) -> list[Problem]:
        """quality.balance needs labels to measure (and a target names the label field's
        values, which it must list); quality.timeliness.field must be a schema field holding
        a time (a string, or an integer of epoch seconds); quality.gating may not name a
        dimension this spec can never measure."""
        found: list[Problem] = []
        q, label, values = self.quality, self.schema_.label_field, self.label_values
        lf = self.schema_.field(label) if label is not None else None
        if not values and lf is not None and lf.type == "boolean":
            # labels are compared as text (lifecycle/quality/dimensions.py)
            values = ["True", "False"]
        if not q.balance.natural and label is None:
            found.append((("quality", "balance"), "a target or min_share needs labels: set "
                          "schema.label_field, or write balance: natural",
                          q.balance.describe()))
        if q.balance.target is not None and label is not None and not values:
            found.append((("quality", "balance", "target"), f"names labels, but the label "
                          f"field {label!r} lists no values: add values: [...] to it so the "
                          "target's labels can be checked", q.balance.target))
        elif q.balance.target is not None and values:
            unknown = sorted(set(q.balance.target) - {str(v) for v in values})
            if unknown:
                found.append((("quality", "balance", "target"), f"names {unknown}, which are "
                              f"not the label field's values {values} (labels are compared "
                              "as text: a boolean's are 'True' and 'False')", q.balance.target))
        name = q.timeliness.field
        f = self.schema_.field(name) if name is not None else None
        if name is not None and f is None:
            found.append((("quality", "timeliness", "field"), f"{name!r} is not a schema "
                          f"field {[f.name for f in self.schema_.fields]}: name the field "
                          "that holds each record's time", name))
        elif f is not None and f.type not in ("string", "integer"):
            found.append((("quality", "timeliness", "field"), f"{name!r} is a {f.type} field; "
                          "a record time is a string (ISO 8601; without an offset it is read "
                          "as UTC) or an integer (Unix epoch seconds)", name))
        never = self._never_measured()
        for dim in q.gating or []:
            if dim in never:
                found.append((("quality", "gating"), f"{dim} can never be measured for this "
                              f"spec ({never[dim]}), so it would gate nothing: remove it or "
                              "configure it", q.gating))
        return found

    def _never_measured(self) -> dict[str, str]:
        """The dimensions this spec can never measure, each with why
        (lifecycle/quality/dimensions.py
        leaves them out of the score and the grade)."""
        q, never = self.quality, {}
        if q.balance.natural:
            never["balance"] = "balance is natural: reported, not scored"
        if q.timeliness.max_age is None and self.schedule is None:
            never["timeliness"] = "no quality.timeliness.max_age and no schedule"
        elif q.timeliness.field is None:
            never["timeliness"] = "no quality.timeliness.field holding each record's time"
        if self.modality != "image":
            never["decodable"] = never["resolution"] = "image datasets only"
        return never

    def _reserved_problems(self) -> list[Problem]:
        """Schema fields named like a column this spec's settings add (columns.conditional;
        the names reserved always are refused on the field itself), each at its field."""
        taken = columns.conditional(self)
        return [(("schema", "fields", i, "name"), _reserved(f.name, taken[f.name], True),
                 f.name) for i, f in enumerate(self.schema_.fields) if f.name in taken]

    def _text_problems(self) -> list[Problem]:
        """What a dataset without a text field can and cannot do (docs/spec.md, "Tables
        without text"), and keys that must name schema fields."""
        text = self.schema_.text_field
        found: list[Problem] = []
        if text is None and self.modality == "text":
            found.append((("schema", "text_field"), "a text dataset needs its text field: "
                          "name the field that holds the text, or set `modality: table` "
                          "for a table without text", None))
        names = [f.name for f in self.schema_.fields]
        strings = [f.name for f in self.schema_.fields if f.type == "string"]
        unknown = [k for k in self.preprocess.dedup.key if k not in names]
        if unknown and self.modality != "image":
            found.append((("preprocess", "dedup", "key"), f"names {unknown}, which are not "
                          f"schema fields {names}", self.preprocess.dedup.key))
        listed = self.preprocess.pii.fields or []
        if [f for f in listed if f not in strings]:
            found.append((("preprocess", "pii", "fields"), f"must be string fields of the "
                          f"schema {strings}", listed))
        if text is None and self.modality == "table":
            found += self._text_settings()
        return found

    def _text_settings(self) -> list[Problem]:
        """The settings of a table without text that work on text, each with its place."""
        why = ("works on text, and this table has no text field (schema.text_field: null): "
               "remove it")
        found: list[Problem] = []
        filters, defaults = self.preprocess.filters, Filters()
        for name in ("min_tokens", "max_tokens", "max_chars", "language", "allow_regex",
                     "deny_regex", "max_digit_ratio", "max_punctuation_ratio",
                     "max_non_cjk_ratio", "max_repeated_line_ratio",
                     "max_repeated_ngram_ratio"):
            if getattr(filters, name) != getattr(defaults, name):
                found.append((("preprocess", "filters", name), f"{why} (a table's field rules "
                              "are preprocess.filters.fields)", getattr(filters, name)))
        near = self.preprocess.near_dedup
        if near.enabled and not near.key:
            found.append((("preprocess", "near_dedup", "enabled"), why, True))
        if self.annotate.rules:
            found.append((("annotate", "rules"), why, len(self.annotate.rules)))
        if self.annotate.model.enabled:
            found.append((("annotate", "model", "enabled"), f"{why} (the label check learns "
                          "from a table's numeric fields without it)", True))
        if self.annotate.topics.enabled is True:
            found.append((("annotate", "topics", "enabled"), why, True))
        if self.synthesize.enabled and self.synthesize.generator in ("text_augment", "llm"):
            found.append((("synthesize", "generator"), f"{why}: a table synthesises with "
                          "tabular_copula or smote", self.synthesize.generator))
        return found

    def _source_column_problems(self) -> list[Problem]:
        found: list[Problem] = []
        for i, source in enumerate(self.sources):
            columns = getattr(source, "columns", None)
            if not columns:
                continue
            names = [c.strip() for c in columns]
            missing = {f: c for f, c in self.needed_columns(source).items() if c not in names}
            if missing:
                field = next(iter(missing))
                where = ("fields", field) if field in source.fields else ("columns",)
                found.append((
                    ("sources", i, *where),
                    f"source {source.name!r} has no column for the field(s) "
                    f"{', '.join(f'{f} (column {c!r})' for f, c in missing.items())}; its "
                    f"columns are {names}. Name them in `columns` or map the fields to "
                    "columns with `fields:`", None))
        return found

    def needed_columns(self, source: Any) -> dict[str, str]:
        """Field -> the column (or key) ``source`` must yield for it: every field mapped in
        the source's ``fields``, and every required field under its own name. The label
        field is not needed from a source with a constant ``label``, nor when annotation
        labels records by other means (rules, a model, people's completions or Label
        Studio, or ``annotate.from_source: false``). Image sources need none."""
        if self.modality == "image":
            return {}
        a = self.annotate
        elsewhere = (not a.from_source or bool(a.rules) or a.model.enabled
                     or bool(a.people.completions) or a.people.label_studio is not None)
        label = self.schema_.label_field
        needed: dict[str, str] = {}
        for f in self.schema_.fields:
            mapped = f.name in source.fields
            if f.name == label and (source.label is not None or (elsewhere and not mapped)):
                continue
            if mapped or f.required:
                needed[f.name] = source.fields.get(f.name, f.name)
        return needed

    @property
    def upstreams(self) -> list[str]:
        """Granary datasets this one is built from (its sources of type dataset)."""
        return [s.dataset for s in self.sources if isinstance(s, DatasetSource)]

    @property
    def guideline(self) -> list[LabelDef]:
        """The labels people see: annotate.labels, or the label field's values."""
        if self.annotate.labels:
            return list(self.annotate.labels)
        return [LabelDef(name=v) for v in self.label_values or []]

    @property
    def label_values(self) -> list[str] | None:
        label = self.schema_.label_field
        spec = self.schema_.field(label) if label else None
        return spec.values if spec else None
