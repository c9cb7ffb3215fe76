"""The dataset spec: one YAML file per dataset in ``datasets/``, validated as a pydantic model.

Unknown keys are errors, never ignored. Every error names the file, the field and the line,
and says what would be accepted. The documentation of every key is in ``docs/spec.md``.
Loading a spec and reporting its problems is lifecycle/spec/load.py; its public names
(``load_spec``, ``parse_spec``, ``discover``, ``check_spec``, ``SpecError``, ...) are
importable from here too.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from lifecycle.formats.delimited import DELIMITERS
from lifecycle.records import columns

STAGES = ("collect", "preprocess", "annotate", "synthesize", "evaluate", "publish")
NAME_RE = r"^[a-z][a-z0-9_]{1,63}$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldProblem(ValueError):
    """A validator's problem with a key below the model it validates: ``loc`` names that key
    (``("sources", 0, "columns")``), so the error shows it and its line."""

    def __init__(self, loc: tuple[str | int, ...], problem: str) -> None:
        super().__init__(problem)
        self.loc = loc


class Owner(_Model):
    name: str
    email: str | None = None


class Licence(_Model):
    id: str = Field(description="SPDX identifier, e.g. MIT, CC-BY-4.0")
    legal_basis: str = Field(default="", description="Why we may use the data")
    url: str | None = None


LegalBasis = Literal["public", "licence", "contract", "consent", "legitimate_interest",
                     "public_task", "research", "own"]
NO_LICENCE = {"", "unknown", "noassertion", "none"}


class SourceLicence(_Model):
    """Where a source's data comes from and why we may use it (合法合规)."""

    id: str = Field(description="SPDX identifier or 'proprietary'")
    origin: str = Field(description="who publishes the data, or where it was obtained")
    legal_basis: LegalBasis = Field(description="why Granary may process it")
    url: str | None = None
    terms: str = Field(default="", description="anything else the terms require")

    @field_validator("id")
    @classmethod
    def _known(cls, v: str) -> str:
        if v.strip().lower() in NO_LICENCE:
            raise ValueError(f"{v!r} is not a licence: name the licence (SPDX id or "
                             "'proprietary'), or drop `licence` and set `accept_unlicensed`")
        return v


class _SourceBase(_Model):
    name: Annotated[str, Field(pattern=NAME_RE)]
    type: str
    fields: dict[str, str] = Field(
        default_factory=dict, description="record field -> column/key in the source")
    label: str | None = Field(default=None, description="constant label for every record")
    licence: SourceLicence | None = None
    accept_unlicensed: bool = Field(
        default=False, description="take this source although it declares no licence")

    @model_validator(mode="after")
    def _licensed(self) -> _SourceBase:
        if self.licence is None and not self.accept_unlicensed:
            raise ValueError(
                f"source {self.name!r} declares no licence: add `licence: {{id, origin, "
                "legal_basis}}` to it, or set `accept_unlicensed: true` to take it anyway "
                "(its records are then marked NOASSERTION)")
        return self

    @property
    def licence_id(self) -> str:
        return self.licence.id if self.licence else "NOASSERTION"

    @property
    def legal_basis(self) -> str:
        return self.licence.legal_basis if self.licence else "unknown"

    def provenance(self) -> dict[str, Any]:
        """What the published card says about this source."""
        lic = self.licence.model_dump() if self.licence else {
            "id": "NOASSERTION", "origin": "", "legal_basis": "unknown", "url": None,
            "terms": "accepted without a licence (accept_unlicensed)"}
        return {"name": self.name, "type": self.type, **lic}

    def describe(self) -> str:
        return self.type


def _relative(v: str) -> str:
    if v.startswith("/") or ".." in Path(v).parts:
        raise ValueError("must be relative to the inbox and must not contain '..'")
    return v


FileFormat = Literal["csv", "tsv", "jsonl", "json", "text", "parquet", "excel", "image"]


class Sidecar(_Model):
    """Metadata for image files (captions, labels) in a CSV or JSON file, joined by name."""

    path: str = Field(description="CSV or JSON (a list of objects) file, relative to the inbox "
                      "(files sources) or to the prefix (s3 sources: an object in the bucket)")
    key: str = Field(default="file_name", description="the column holding the image's file "
                                                      "name (its base name, or its path)")

    _check_path = field_validator("path")(_relative)


DELIMITED_KEYS = ("header", "columns", "delimiter", "quotechar")


class _FileSource(_SourceBase):
    """Keys of the sources that read files (files, s3): how CSV/TSV is split, and which
    cell values are null."""

    format: FileFormat
    header: bool = Field(default=True, description="csv/tsv: the first row names the columns")
    columns: list[str] | None = Field(
        default=None, description="csv/tsv with header: false: the columns' names, in order")
    delimiter: str | None = Field(
        default=None, description="csv/tsv: the field separator; unset: a tab for tsv, for "
                                  "csv the first of , ; tab | that splits the file's start "
                                  "into one number of fields")
    quotechar: str | None = Field(
        default=None, description='csv/tsv: the quote character; unset: " for csv (RFC 4180), '
                                  "no quoting for tsv; null: no quoting")
    null_values: list[str] | None = Field(
        default=None, description="cell strings read as null (missing) for every field, e.g. "
                                  "['', 'N/A']; unset: an empty cell is null for non-string "
                                  "fields and an empty string for string fields")

    @model_validator(mode="after")
    def _delimited(self) -> _FileSource:
        given = [k for k in DELIMITED_KEYS if k in self.model_fields_set]
        if given and self.format not in ("csv", "tsv"):
            raise FieldProblem((given[0],), "header, columns, delimiter and quotechar apply "
                               f"only to csv and tsv sources, and this one's format is "
                               f"{self.format}: remove {', '.join(given)}")
        for key in ("delimiter", "quotechar"):
            value = getattr(self, key)
            if value is not None and (len(value) != 1 or value in "\r\n"):
                raise FieldProblem((key,), f"{key} must be one character other than a line "
                                   f"break, got {value!r} (for a tab write \"\\t\" in double "
                                   "quotes)")
        quote = self.effective_quotechar
        delimiter = self.delimiter or ("\t" if self.format == "tsv" else None)
        if quote is not None and quote == delimiter:
            default = "" if self.delimiter else " (a tab, tsv's default)"
            raise FieldProblem(("quotechar",), f"the quote character {quote!r} is also the "
                               f"delimiter{default}; set another one, or quotechar: null for "
                               "none")
        if self.format == "csv" and delimiter is None and quote in DELIMITERS:
            raise FieldProblem(("quotechar",), f"the quote character {quote!r} is one of the "
                               "delimiters a csv file's is chosen from (, ; tab |); set "
                               "`delimiter` to another one, or another quotechar")
        if self.null_values is not None and self.format == "text":
            raise FieldProblem(("null_values",), "null_values turns cells into nulls, and a "
                               "text source has none (each line is a record's text; an empty "
                               "one is quarantined as empty_text): remove null_values")
        if (self.null_values is not None and self.format == "image"
                and getattr(self, "sidecar", None) is None):
            raise FieldProblem(("null_values",), "an image source's null_values apply to its "
                               "sidecar's cells, and this source has no sidecar: remove "
                               "null_values, or add the sidecar")
        if not self.header and not self.columns:
            raise FieldProblem(("columns",), "header: false needs `columns: [...]`, the "
                               "names of the file's columns in order (map them to the "
                               "schema's fields with `fields:` or name them after the fields)")
        if self.header and self.columns is not None:
            raise FieldProblem(("columns",), "columns names the columns of a file without a "
                               "header row: set header: false, or drop columns and map the "
                               "header's names with `fields:`")
        if self.columns is not None:
            names = [c.strip() for c in self.columns]
            repeated = sorted({c for c in names if names.count(c) > 1})
            if repeated or "" in names:
                raise FieldProblem(("columns",), f"column names must be unique and not empty; "
                                   f"{repeated or ['']} repeat or are empty")
        return self

    @property
    def effective_quotechar(self) -> str | None:
        """The quote character collection reads with when the dialect is not sniffed."""
        if "quotechar" in self.model_fields_set:
            return self.quotechar
        return '"' if self.format == "csv" else None


class FilesSource(_FileSource):
    type: Literal["files"]
    path: str = Field(description="File or glob, relative to the inbox")
    format: FileFormat
    encoding: str = Field(default="auto", description="auto = detect per file")
    sidecar: Sidecar | None = Field(default=None, description="images: captions and labels")
    label_from_folder: bool = Field(default=False,
                                    description="images: the label is the parent folder's name")

    _check_path = field_validator("path")(_relative)

    def describe(self) -> str:
        return f"files `{self.path}` ({self.format})"


class S3Source(_FileSource):
    """Objects under a prefix of a bucket on any S3 endpoint (a partner's drop zone)."""

    type: Literal["s3"]
    bucket: str
    prefix: str = ""
    pattern: str = Field(default="*", description="glob on the key below the prefix")
    format: FileFormat
    encoding: str = "auto"
    endpoint: str | None = Field(
        default=None, description="host:port; none = Granary's own object store")
    secure: bool = True
    conn_id: str | None = Field(
        default=None, description="Airflow connection with the access key (login) and "
                                  "secret (password); none = Granary's own credentials")
    sidecar: Sidecar | None = Field(default=None, description="images: captions and labels")
    label_from_folder: bool = Field(default=False,
                                    description="images: the label is the parent folder's name")


class Pagination(_Model):
    type: Literal["none", "page", "offset", "cursor", "link"] = "none"
    param: str = Field(default="", description="query parameter: page number, offset or cursor")
    size_param: str = Field(default="", description="query parameter for the page size")
    size: int = Field(default=100, ge=1, le=10_000)
    start: int = Field(default=1, ge=0, description="first page number (page pagination)")
    cursor_path: str = Field(default="", description="where the next cursor is in the body")
    max_pages: int = Field(default=10_000, ge=1)

    @model_validator(mode="after")
    def _complete(self) -> Pagination:
        if self.type in ("page", "offset", "cursor") and not self.param:
            raise ValueError(f"{self.type} pagination needs `param` (the query parameter)")
        if self.type == "cursor" and not self.cursor_path:
            raise ValueError("cursor pagination needs `cursor_path` (where the body says the "
                             "next cursor, e.g. meta.next)")
        return self


class HttpSource(_SourceBase):
    """A JSON API, fetched page by page."""

    type: Literal["http"]
    url: str
    params: dict[str, str | int | float | bool] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    records_path: str = Field(default="", description="dotted path to the list of records; "
                                                      "empty = the body is the list")
    pagination: Pagination = Pagination()
    allow_hosts: list[str] = Field(min_length=1, description="the only hosts contacted")
    allow_private: bool = Field(default=False,
                                description="allow private, loopback and link-local addresses")
    conn_id: str | None = Field(default=None, description="Airflow connection for credentials")
    rate_limit: float = Field(default=5.0, gt=0, description="requests per second at most")
    retries: int = Field(default=5, ge=0, le=20)
    timeout_s: float = Field(default=30.0, gt=0)

    def describe(self) -> str:
        return f"http `{self.url}` ({self.pagination.type} pagination)"

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v


class SqlSource(_SourceBase):
    """Rows of a table or a parameterised query from any SQLAlchemy database."""

    type: Literal["sql"]
    conn_id: str = Field(description="Airflow connection of the database")
    table: str | None = None
    query: str | None = Field(default=None, description="SELECT with :named parameters")
    params: dict[str, str | int | float | bool | None] = Field(default_factory=dict)
    watermark: str | None = Field(default=None, description="column that only grows "
                                                            "(updated_at, id) for incremental runs")
    chunk_rows: int = Field(default=50_000, ge=100, le=1_000_000)

    def describe(self) -> str:
        what = f"table `{self.table}`" if self.table else "a query"
        return f"sql {what} on connection `{self.conn_id}`"

    @model_validator(mode="after")
    def _one_of(self) -> SqlSource:
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of `table` or `query`")
        if self.table is not None and not re.match(r"^[A-Za-z_][A-Za-z0-9_.]*$", self.table):
            raise ValueError(f"table {self.table!r} is not a plain (schema.)table name")
        return self


class DatasetSource(_SourceBase):
    """A published version of another Granary dataset (a derived dataset)."""

    type: Literal["dataset"]
    dataset: Annotated[str, Field(pattern=NAME_RE)]
    version: int | Literal["latest"] = Field(default="latest",
                                             description="a version number, or latest")
    file: str = Field(default="data.parquet", description="which file of the release")

    def describe(self) -> str:
        return f"dataset `{self.dataset}` ({self.version})"


Source = Annotated[FilesSource | S3Source | HttpSource | SqlSource | DatasetSource,
                   Field(discriminator="type")]


def _reserved(name: str, why: str, here: bool) -> str:
    return (f"field name {name!r} is reserved{' here' if here else ''}: {why}. Name the field "
            f"otherwise (a source column {name!r} maps to it with the source's "
            f"`fields: {{new_name: {name}}}`); docs/spec.md lists the reserved names")


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


class FieldSpec(_Model):
    name: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
    type: Literal["string", "integer", "float", "boolean"] = "string"
    required: bool = True
    values: list[str] | None = Field(default=None, description="allowed values")
    min: float | None = Field(default=None, description="smallest allowed value (numbers)")
    max: float | None = Field(default=None, description="largest allowed value (numbers)")
    pattern: str | None = Field(default=None, description="regex every value must match")
    min_length: int | None = Field(default=None, ge=0, description="shortest string")
    max_length: int | None = Field(default=None, ge=0, description="longest string")
    unique: bool = Field(default=False, description="no two records share a value")
    description: str = ""

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, v: str) -> str:
        if v in columns.RESERVED:
            raise PydanticCustomError("reserved_name", "{message}", {
                "message": _reserved(v, columns.RESERVED[v], False)})
        return v

    @model_validator(mode="after")
    def _checks_fit_type(self) -> FieldSpec:
        numeric = self.type in ("integer", "float")
        if (self.min is not None or self.max is not None) and not numeric:
            raise ValueError(f"field {self.name}: min/max apply to integer and float fields, "
                             f"not {self.type}; use min_length/max_length for strings")
        if (self.pattern or self.min_length is not None or self.max_length is not None) \
                and self.type != "string":
            raise ValueError(f"field {self.name}: pattern/min_length/max_length apply to "
                             "string fields")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as e:
                raise ValueError(f"field {self.name}: pattern {self.pattern!r} is not a valid "
                                 f"regex: {e}") from e
        return self


class Schema(_Model):
    fields: list[FieldSpec]
    text_field: str | None = "text"
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
    html: bool = Field(default=True, description="strip HTML tags, unescape entities")
    fix_mojibake: bool = Field(default=True, description="repair mis-decoded text (ftfy)")
    simplify: bool = Field(default=False,
                           description="Traditional to Simplified Chinese (OpenCC t2s)")


class LanguageFilter(_Model):
    allowed: list[str] = Field(min_length=1, description="ISO 639-1 codes, e.g. [zh, en]")
    min_confidence: float = Field(default=0.5, ge=0, le=1)
    candidates: list[str] = Field(
        default_factory=list,
        description="languages the detector chooses among; default: allowed + en, zh, ja, ko")


class FieldRule(_Model):
    min: float | None = None
    max: float | None = None
    values: list[str | int | float | bool] | None = None
    regex: str | None = None
    not_null: bool = False


class Filters(_Model):
    min_chars: int = Field(default=1, ge=0)
    max_chars: int | None = Field(default=None, ge=1)
    min_tokens: int | None = Field(default=None, ge=0)
    max_tokens: int | None = Field(default=None, ge=1)
    language: LanguageFilter | None = None
    allow_regex: list[str] = Field(default_factory=list,
                                   description="keep only texts matching one of these")
    deny_regex: list[str] = Field(default_factory=list,
                                  description="drop texts matching any of these")
    max_digit_ratio: float | None = Field(default=None, ge=0, le=1)
    max_punctuation_ratio: float | None = Field(default=None, ge=0, le=1)
    max_non_cjk_ratio: float | None = Field(default=None, ge=0, le=1)
    max_repeated_line_ratio: float | None = Field(default=None, ge=0, le=1)
    max_repeated_ngram_ratio: float | None = Field(default=None, ge=0, le=1)
    repeated_ngram: int = Field(default=5, ge=2, le=50, description="characters per n-gram")
    fields: dict[str, FieldRule] = Field(default_factory=dict,
                                         description="rules for tabular fields")

    @field_validator("allow_regex", "deny_regex")
    @classmethod
    def _compiles(cls, v: list[str]) -> list[str]:
        for pattern in v:
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"{pattern!r} is not a valid regular expression: {e}") from e
        return v


class Dedup(_Model):
    exact: bool = True
    key: list[str] = Field(default_factory=lambda: ["text"])


class NearDedup(_Model):
    enabled: bool = False
    char_ngram: int = Field(default=3, ge=1, le=20, description="shingle size for CJK text")
    word_ngram: int = Field(default=3, ge=1, le=10, description="shingle size for other text")
    permutations: int = Field(default=128, ge=16, le=1024)
    bands: int = Field(default=32, ge=1)
    threshold: float = Field(default=0.8, gt=0, lt=1, description="Jaccard similarity")
    keep: Literal["earliest", "longest", "most_complete"] = "earliest"
    seed: int = 1
    key: list[Annotated[str, Field(min_length=1)]] | None = Field(
        default=None, min_length=1,
        description="fields compared (default: the text field); a pair is a near duplicate "
                    "only if every key field is at least threshold similar")

    @field_validator("key")
    @classmethod
    def _distinct(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and len(set(v)) != len(v):
            raise ValueError(f"near_dedup.key lists a field twice: {v}")
        return v

    @model_validator(mode="after")
    def _bands_divide(self) -> NearDedup:
        if self.permutations % self.bands:
            raise ValueError(f"bands ({self.bands}) must divide permutations "
                             f"({self.permutations})")
        return self


PiiAction = Literal["mask", "placeholder", "hash", "drop", "keep"]


class Pii(_Model):
    """What to do with each kind of personal data found in the text."""

    id_card: PiiAction = "mask"
    iban: PiiAction = "mask"
    ssn: PiiAction = "mask"
    bank_card: PiiAction = "mask"
    mobile: PiiAction = "mask"
    landline: PiiAction = "mask"
    intl_phone: PiiAction = "mask"
    email: PiiAction = "mask"
    ipv4: PiiAction = "keep"
    ipv6: PiiAction = "keep"
    url: PiiAction = "keep"
    passport: PiiAction = "mask"
    plate: PiiAction = "keep"
    person_name: PiiAction = "keep"
    fields: list[str] | None = Field(
        default=None, description="the string fields scanned; default: every string field "
        "but the label's, none for a table without a text field")
    regions: list[str] | None = Field(
        default=None, description="phone regions whose national formats are searched (ISO "
        "3166-1 alpha-2, e.g. [GB, US]); default: from the spec's language (docs/spec.md); "
        "numbers in international format (+44 ...) are found whatever the regions")

    @field_validator("regions")
    @classmethod
    def _known_regions(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        from lifecycle.text import pii

        unknown = [r for r in v if not pii.known_region(r)]
        if unknown:
            raise ValueError(f"unknown phone regions {unknown}: use ISO 3166-1 alpha-2 codes "
                             "such as GB, US, CN, HK")
        return [r.upper() for r in v]

    def actions(self) -> dict[str, str]:
        return dict(self.model_dump(exclude={"fields", "regions"}))


Step = Literal["normalise", "filter", "pii", "exact_dedup", "near_dedup"]


class ImageOps(_Model):
    """Image preprocessing: normalisation, quality filters and near-duplicates."""

    format: Literal["png", "jpeg", "webp"] = Field(default="png",
                                                   description="re-encoded format")
    quality: int = Field(default=90, ge=1, le=100, description="jpeg and webp quality")
    max_side: int | None = Field(default=1024, ge=8, description="longer side at most")
    min_width: int = Field(default=8, ge=1)
    min_height: int = Field(default=8, ge=1)
    max_aspect_ratio: float = Field(default=10.0, ge=1, description="longer / shorter side")
    min_sharpness: float | None = Field(
        default=None, ge=0, description="variance of the Laplacian of the grey image; below "
                                        "it an image is blurry (none: not checked)")
    min_contrast: float = Field(default=2.0, ge=0, description="standard deviation of the "
                                "grey image (0-255); below it an image is near-blank")
    hash: Literal["phash", "dhash"] = "phash"
    max_distance: int = Field(default=2, ge=0, le=20,
                              description="Hamming distance at most: near-duplicates")


class Preprocess(_Model):
    image: ImageOps = ImageOps()
    steps: list[Step] = Field(
        default_factory=lambda: list[Step](
            ["normalise", "filter", "pii", "exact_dedup", "near_dedup"]),
        description="operators, in the order they run")
    normalise: Normalise = Normalise()
    filters: Filters = Filters()
    pii: Pii = Pii()
    dedup: Dedup = Dedup()
    near_dedup: NearDedup = NearDedup()

    @field_validator("steps")
    @classmethod
    def _once(cls, v: list[str]) -> list[str]:
        repeated = sorted({s for s in v if v.count(s) > 1})
        if repeated:
            raise ValueError(f"each step may appear once; repeated: {repeated}")
        return v


class Collect(_Model):
    max_bad_share: float = Field(default=0.05, ge=0, le=1,
                                 description="fail when a source's quarantined share is above")
    max_unpacked_mb: int = Field(default=1024, ge=1, description="bound on .gz/.zip content")
    max_record_mb: int = Field(default=16, ge=1, le=1024, description="a line (text, JSONL, "
                               "CSV) longer than this is quarantined as line_too_long, read "
                               "past in chunks and never held whole")
    schema_drift: Literal["fail", "accept"] = Field(
        default="fail", description="a new, missing or retyped source column: fail the run, "
                                    "or accept it and record it in the manifest")
    files_per_task: int = Field(default=200, ge=1, le=100_000,
                                description="files (or objects) fetched by one mapped task")


class LabelDef(_Model):
    """One label of the annotation guideline."""

    name: Annotated[str, Field(min_length=1, max_length=200)]
    description: str = Field(default="", description="what the label means; shown to people")


class Rule(_Model):
    """A weak-supervision rule: records matching any keyword or the regex get ``label``."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")]
    label: str
    keywords: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    regex: str | None = None

    @model_validator(mode="after")
    def _matches_something(self) -> Rule:
        if not self.keywords and not self.regex:
            raise ValueError(f"rule {self.name!r} needs keywords or a regex")
        if self.regex:
            try:
                re.compile(self.regex)
            except re.error as e:
                raise ValueError(f"rule {self.name!r}: regex {self.regex!r} does not compile: "
                                 f"{e}") from None
        return self


class ModelLabelling(_Model):
    enabled: bool = Field(default=False, description="label the unlabelled records with a "
                          "classifier trained on the labelled ones")
    min_confidence: float = Field(default=0.9, gt=0, le=1, description="below it the record "
                                  "is routed to people instead")
    min_train: int = Field(default=50, ge=10, description="labelled records needed to train")


class LabelStudioLink(_Model):
    """A Label Studio server the DAG sends tasks to and waits on."""

    connection: str = Field(description="Airflow connection id: host = the Label Studio URL, "
                            "password = its API token")
    project: str | None = Field(default=None, min_length=3, max_length=50,
                                description="project title, 3 to 50 characters (Label Studio's "
                                "limits); 'Granary: <dataset>' when unset")
    min_share: float = Field(default=1.0, gt=0, le=1, description="share of the sent tasks "
                             "that must be labelled before the run goes on")
    timeout_minutes: float = Field(default=1440, gt=0, description="how long the DAG waits")
    poke_seconds: float = Field(default=60, ge=1, description="how often it looks")
    on_timeout: Literal["continue", "fail"] = Field(
        default="continue", description="after the timeout: go on with what people labelled, "
        "or fail the run")


class People(_Model):
    export: bool = Field(default=True, description="write Label Studio tasks (with the model's "
                         "pre-annotations) for every record routed to people")
    completions: list[str] = Field(
        default_factory=list, description="Label Studio JSON exports to import, as paths "
        "under the inbox (glob patterns allowed)")
    label_studio: LabelStudioLink | None = None
    image_links: Literal["presigned", "s3"] = Field(
        default="presigned", description="images in Label Studio tasks: presigned https links "
        "to the processed image (valid link_days), or s3:// keys for a Label Studio project "
        "with the work bucket connected as source storage")
    link_days: int = Field(default=7, ge=1, le=7, description="presigned links' lifetime "
                           "(S3 allows at most 7 days)")


class Conflicts(_Model):
    resolve: Literal["majority", "drop", "people"] = Field(
        default="majority", description="identical normalised texts with different labels")
    tie: Literal["drop", "people", "first"] = Field(
        default="drop", description="when the majority is a tie")


class LabelErrorAction(_Model):
    action: Literal["flag", "relabel", "drop", "people", "ignore"] = Field(
        default="flag", description="what to do with likely label errors (confident learning, "
        "configured by quality.label_errors)")
    min_confidence: float = Field(default=0.0, ge=0, le=1, description="act only where the "
                                  "model's probability for its suggested label reaches this")


class Topics(_Model):
    enabled: bool | Literal["auto"] = Field(
        default="auto", description="cluster records by topic; auto: when there is no label")
    k: int = Field(default=8, ge=1, le=200)
    seed: int = 0


class Annotate(_Model):
    task: Literal["single_label", "multi_label", "spans", "qa", "boxes"] = "single_label"
    box_iou: float = Field(default=0.5, gt=0, le=1, description="boxes: two annotators' boxes "
                           "of the same label match when their intersection over union "
                           "reaches this")
    labels: list[LabelDef] = Field(default_factory=list,
                                   description="the guideline; the label field's values when "
                                               "empty")
    from_source: bool = True
    rules: list[Rule] = Field(default_factory=list)
    model: ModelLabelling = ModelLabelling()
    people: People = People()
    conflicts: Conflicts = Conflicts()
    label_errors: LabelErrorAction = LabelErrorAction()
    topics: Topics = Topics()

    @model_validator(mode="after")
    def _single_label_machinery(self) -> Annotate:
        if self.task != "single_label" and (self.rules or self.model.enabled):
            raise ValueError(f"rules and model-assisted labels work on single_label tasks; "
                             f"this one is {self.task} (label it from the source or by people)")
        names = [lab.name for lab in self.labels]
        if len(set(names)) != len(names):
            raise ValueError(f"label names must be unique, got {names}")
        return self


class SynthTarget(_Model):
    balance: float | None = Field(default=1.0, gt=0, le=1, description="raise every label to "
                                  "this share of the largest label's count")
    per_label: dict[str, int] = Field(default_factory=dict, description="or add this many "
                                      "records to each label named")

    @model_validator(mode="after")
    def _one_way(self) -> SynthTarget:
        if self.per_label and "balance" in self.model_fields_set:
            raise ValueError("give target.balance or target.per_label, not both")
        if any(n < 0 for n in self.per_label.values()):
            raise ValueError(f"target.per_label counts must be >= 0, got {self.per_label}")
        return self


class Accept(_Model):
    keep_label: float = Field(default=0.5, ge=0, le=1, description="the annotation model's "
                              "probability for the record's label must reach this")
    min_distance: float = Field(default=0.25, ge=0, le=1, description="text: 1 - Jaccard "
                                "similarity to the closest real record must exceed this")
    min_distance_quantile: float = Field(
        default=0.01, ge=0, le=0.5, description="tables: the distance to the closest real "
        "record must exceed this quantile of real records' distances to their nearest other")


EditOp = Literal["synonym", "insert", "delete", "swap"]


class TextAugmentCfg(_Model):
    operations: list[EditOp] = Field(
        default_factory=lambda: list[EditOp](["synonym", "insert", "delete", "swap"]),
        min_length=1)
    edit_share: float = Field(default=0.25, gt=0, le=1, description="share of the words "
                              "edited in each variant")


class LLMCfg(_Model):
    connection: str = Field(description="Airflow connection: host = base URL (…/v1), "
                            "password = API key, extra.model = the model")
    model: str | None = None
    per_request: int = Field(default=10, ge=1, le=100)
    max_requests: int = Field(default=50, ge=1)
    max_tokens: int = Field(default=100_000, ge=100)
    requests_per_minute: float = Field(default=30, gt=0)
    price_per_1k_input: float = Field(default=0.0, ge=0)
    price_per_1k_output: float = Field(default=0.0, ge=0)
    temperature: float = Field(default=0.8, ge=0, le=2)
    seed_examples: int = Field(default=5, ge=0, le=50)


class ImageAugmentCfg(_Model):
    operations: list[Literal["flip", "crop", "rotate", "colour"]] = Field(
        default_factory=lambda: ["flip", "crop", "rotate", "colour"],  # type: ignore[arg-type]
        min_length=1,
        description="label-preserving edits; each candidate gets one or two of them")
    max_rotation: float = Field(default=15, ge=0, le=45, description="degrees either way")
    min_crop: float = Field(default=0.8, gt=0.3, le=1, description="kept share of each side")
    jitter: float = Field(default=0.2, ge=0, le=0.8, description="brightness, contrast and "
                          "saturation factors within 1 +- this")


class Synthesize(_Model):
    enabled: bool = False
    generator: Literal["text_augment", "tabular_copula", "smote", "llm",
                       "image_augment"] = "text_augment"
    target: SynthTarget = SynthTarget()
    max_share: float = Field(default=0.3, gt=0, lt=1, description="the synthetic share of "
                             "the published dataset never exceeds this")
    seed: int = 0
    oversample: float = Field(default=3.0, ge=1, le=20, description="candidates made per "
                              "record needed, so rejections can be replaced")
    columns: list[str] = Field(default_factory=list, description="tables: the numeric "
                               "columns to generate (all numeric columns when empty)")
    accept: Accept = Accept()
    text_augment: TextAugmentCfg = TextAugmentCfg()
    image_augment: ImageAugmentCfg = ImageAugmentCfg()
    llm: LLMCfg | None = None

    @model_validator(mode="after")
    def _llm_needs_connection(self) -> Synthesize:
        if self.generator == "llm" and self.llm is None:
            raise ValueError("generator llm needs synthesize.llm with a connection")
        return self


class Gate(_Model):
    expectations: Literal["all", "none"] | list[str] = Field(
        default="all", description="which expectations must pass: all, none, or a list of "
        "expectation types (e.g. [expect_column_values_to_be_unique])")
    min_rows: int = Field(default=1, ge=0)
    max_rows: int | None = Field(default=None, ge=0)
    min_grade: Literal["A", "B", "C", "D"] = Field(
        default="D", description="the lowest grade that may be published")


Dimension = Literal["conformity", "completeness", "accuracy", "consistency", "timeliness",
                    "accessibility", "balance", "safety", "diversity", "leakage",
                    "decodable", "resolution"]


class Expectation(_Model):
    """Any Great Expectations expectation, by its snake_case type, with its arguments."""

    type: Annotated[str, Field(pattern=r"^expect_[a-z0-9_]+$")]
    kwargs: dict[str, Any] = Field(default_factory=dict)


class LabelErrors(_Model):
    enabled: bool = Field(default=True, description="estimate label errors when the dataset "
                          "has labels (confident learning)")
    folds: int = Field(default=5, ge=2, le=20)
    max_records: int = Field(default=100_000, ge=100, description="a seeded sample above this")
    refresh_train_records: int = Field(
        default=10_000, ge=100, description="a refresh scores its new records with a model "
        "trained on at most this many published records (a seeded sample above it)")
    seed: int = 0


class Drift(_Model):
    """Compare each candidate with the previous published version (lifecycle/evaluate/drift.py)."""

    enabled: bool = True
    max_psi: float = Field(default=0.25, gt=0, description="population stability index of "
                           "the label, length, numeric and language distributions")
    max_ks: float = Field(default=0.2, gt=0, le=1, description="Kolmogorov-Smirnov statistic "
                          "of the length and numeric distributions")
    max_new_vocabulary: float = Field(default=0.3, gt=0, le=1, description="share of tokens "
                                      "the previous version never had")
    action: Literal["warn", "block"] = Field(
        default="warn", description="drift beyond a threshold: warn in the report, or block "
        "publication (the run stays a candidate)")


_DURATION_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(value: Any) -> timedelta:
    """A duration written ``<number><unit>``: ``45m``, ``12h``, ``30d``, ``2w``."""
    if isinstance(value, timedelta):
        return value
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([mhdw])\s*", str(value))
    if m is None or float(m.group(1)) <= 0:
        raise ValueError(f"{value!r} is not a duration: write a positive number and a unit, "
                         "m (minutes), h (hours), d (days) or w (weeks), e.g. 30d or 12h")
    return timedelta(**{_DURATION_UNITS[m.group(2)]: float(m.group(1))})


class Balance(_Model):
    """What balanced means for the task: ``natural`` (neither key: the labels' distribution is
    the data's truth), a ``target`` distribution, or a ``min_share`` per label."""

    target: dict[str, float] | None = Field(default=None, description="label -> share, "
                                            "adding up to 1")
    min_share: float | None = Field(default=None, gt=0, le=1, description="every label "
                                    "holds at least this share of the records")

    @field_validator("target")
    @classmethod
    def _shares(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v is not None and (not v or any(s < 0 for s in v.values())
                              or abs(sum(v.values()) - 1) > 1e-6):
            raise ValueError(f"target shares must be >= 0 and add up to 1, got {v} "
                             f"(sum {sum(v.values()):g})")
        return v

    @model_validator(mode="after")
    def _one_rule(self) -> Balance:
        if self.target is not None and self.min_share is not None:
            raise ValueError("give target or min_share, not both")
        return self

    @property
    def natural(self) -> bool:
        return self.target is None and self.min_share is None

    def describe(self) -> str | dict[str, Any]:
        """As the spec writes it: natural, {target: ...} or {min_share: ...}."""
        return "natural" if self.natural else self.model_dump(exclude_none=True)


class Timeliness(_Model):
    """How fresh the records should be (docs/quality.md, timeliness)."""

    field: str | None = Field(default=None, description="the schema field holding each "
                              "record's own time (when it was made at the source)")
    max_age: timedelta | None = Field(default=None, description="the newest record may be "
                                      "at most this old, e.g. 30d or 12h; default: the "
                                      "schedule's period")

    @field_validator("max_age", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        return None if v is None else parse_duration(v)


class Dependency(_Model):
    """A functional dependency: records that agree on ``determinant`` agree on ``dependent``
    (zip -> city). Within each determinant group the majority dependent value is taken as
    right and the other records' dependent cells fail (lifecycle/quality/cells.py)."""

    determinant: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)
    dependent: str

    @model_validator(mode="after")
    def _distinct(self) -> Dependency:
        if self.dependent in self.determinant:
            raise ValueError(f"dependency {self.determinant} -> {self.dependent}: the "
                             "dependent must not be one of the determinant's fields")
        return self


class Profile(_Model):
    """Rules proposed from a reference (lifecycle/evaluate/profiling.py): shown in the quality
    report
    and by `granary profile`, never applied until accepted into the spec."""

    enabled: bool = Field(default=True, description="propose rules in the quality report")
    reference: str | None = Field(
        default=None, description="a CSV, TSV, JSONL or Parquet file under the inbox to "
        "profile; unset: the newest published version")
    max_rows: int = Field(default=20_000, ge=100, description="regex shapes and dependencies "
                          "from a seeded sample of this many records (value sets, ranges and "
                          "lengths from all)")

    _check_reference = field_validator("reference")(
        lambda v: None if v is None else _relative(v))


class Quality(_Model):
    gate: Gate = Gate()
    drift: Drift = Drift()
    expectations: list[Expectation] = Field(
        default_factory=list, description="extra GX expectations, run with the built-in suite")
    label_errors: LabelErrors = LabelErrors()
    weights: dict[Dimension, float] = Field(
        default_factory=dict, description="weight of each dimension in the score (default 1)")
    min_image_side: int = Field(default=32, ge=1, description="images: the resolution "
                                "dimension is the share whose shorter side reaches this")
    balance: Balance = Field(
        default=Balance(), description="what balanced means for this task: natural (the "
        "labels' distribution is the data's truth: reported, not scored), {target: {label: "
        "share}} or {min_share: x}")
    gating: list[Dimension] | None = Field(
        default=None, description="the dimensions the weakest-dimension rule applies to "
        "(default: every scored dimension); a dimension the spec sets a requirement for "
        "(balance target or min_share, timeliness max_age) always gates")
    timeliness: Timeliness = Timeliness()

    @field_validator("balance", mode="before")
    @classmethod
    def _natural(cls, v: Any) -> Any:
        if isinstance(v, str):
            if v.strip() != "natural":
                raise ValueError(f"{v!r}: write natural, {{target: {{label: share, ...}}}} or "
                                 "{min_share: x}")
            return {}
        return v
    null_values: list[str] = Field(
        default_factory=lambda: [""], description="cell strings evaluation counts as missing "
        "(compared stripped), besides the sources' null_values; the records keep them")
    dependencies: list[Dependency] = Field(
        default_factory=list, description="functional dependencies between fields, e.g. "
        "{determinant: [zip], dependent: city}; violations are counted per cell")
    profile: Profile = Field(default_factory=lambda: Profile(),
                             description="rules evaluation proposes from a reference")


Format = Literal["parquet", "jsonl", "csv"]


class Splits(_Model):
    ratios: dict[str, float] = Field(
        default_factory=dict, description="split name -> share, e.g. {train: 0.8, "
        "validation: 0.1, test: 0.1}; empty = no splits")
    seed: int = 0
    threshold: float = Field(default=0.7, gt=0, lt=1, description="records at least this "
                             "similar (Jaccard) stay in one split")

    @field_validator("ratios")
    @classmethod
    def _ratios(cls, v: dict[str, float]) -> dict[str, float]:
        if not v:
            return v
        bad = [k for k in v if not re.fullmatch(r"[a-z][a-z0-9_]*", k)]
        if bad:
            raise ValueError(f"split names must be lower-case identifiers, got {bad}")
        if any(r <= 0 for r in v.values()) or abs(sum(v.values()) - 1) > 1e-6:
            raise ValueError(f"split ratios must be positive and add up to 1, got {v} "
                             f"(sum {sum(v.values()):g})")
        return v


class Publish(_Model):
    formats: list[Format] = Field(default_factory=lambda: list[Format](["parquet", "jsonl"]))
    splits: Splits = Splits()


class Retention(_Model):
    work_days: float = Field(default=30, gt=0, description="work outputs (stage shards, "
                             "manifests, reports) of runs older than this are pruned")
    keep_runs: int = Field(default=3, ge=1, description="the newest runs whose work outputs are "
                           "always kept, however old")
    raw_days: float | None = Field(default=None, gt=0, description="raw objects older than this "
                                   "are pruned; none = raw data is kept forever")
    versions: int | None = Field(default=None, ge=1, description="keep only the newest N "
                                 "published versions' files; none = every version is kept")


class Refresh(_Model):
    key: list[str] = Field(
        default_factory=list, description="fields that identify a record across versions; a "
                                          "new record with a known key replaces the old one")
    deleted_field: str | None = Field(
        default=None, description="boolean field a source sets on a record to delete the "
                                  "record with the same key from the next version")
    stale_after_days: float | None = Field(
        default=None, gt=0, description="report the dataset stale when no version is newer; "
                                        "default: twice the schedule's period")
    on_upstream: bool = Field(default=True, description="run when an upstream dataset (a "
                                                        "source of type dataset) publishes")
    retention: Retention = Retention()


class DatasetSpec(_Model):
    name: Annotated[str, Field(pattern=NAME_RE)]
    title: str
    description: str = ""
    domain: str = ""
    modality: Literal["text", "table", "image"] = "text"
    task: str = ""
    language: list[str] = Field(default_factory=list)
    licence: Licence
    access: Literal["public", "restricted"] = Field(
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


# ---- loading: lifecycle/spec/load.py, its public names importable from here -----------------
_LOADING = ("SHOWN_PROBLEMS", "LoadedSpec", "SpecError", "SpecProblem", "check_spec",
            "discover", "load_spec", "parse_spec")

if TYPE_CHECKING:
    from lifecycle.spec.load import SHOWN_PROBLEMS as SHOWN_PROBLEMS
    from lifecycle.spec.load import LoadedSpec as LoadedSpec
    from lifecycle.spec.load import SpecError as SpecError
    from lifecycle.spec.load import SpecProblem as SpecProblem
    from lifecycle.spec.load import check_spec as check_spec
    from lifecycle.spec.load import discover as discover
    from lifecycle.spec.load import load_spec as load_spec
    from lifecycle.spec.load import parse_spec as parse_spec


def __getattr__(name: str) -> Any:
    # imported on first use: lifecycle.spec.load imports this module's models
    if name in _LOADING:
        from lifecycle.spec import load as specload

        return getattr(specload, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
