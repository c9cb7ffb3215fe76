"""Collect's section of the dataset spec: the ``sources`` (files, s3, http, sql, dataset),
how each is read, and the ``collect`` key's limits. Composed into DatasetSpec by
lifecycle/spec/model.py; documented in docs/spec.md.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from lifecycle.formats.delimited import DELIMITERS
from lifecycle.spec.base import NAME_RE, FieldProblem, _Model, _relative
from lifecycle.spec.licence import SourceLicence


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
    file: Literal["parquet", "jsonl", "csv", "data.parquet", "data.jsonl", "data.csv"] = Field(
        default="parquet", description="which format of the release's data files to read: "
        "every part of it (an older version's one file); data.<format> is the same")

    def describe(self) -> str:
        return f"dataset `{self.dataset}` ({self.version})"


Source = Annotated[FilesSource | S3Source | HttpSource | SqlSource | DatasetSource,
                   Field(discriminator="type")]


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
