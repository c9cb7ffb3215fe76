"""The spec's ``schema``: the records' fields, their types and checks, and which field holds the
text and which the label. Field names the pipeline's own columns take are refused
(lifecycle/records/columns.py).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from lifecycle.records import columns
from lifecycle.spec.base import _Model


def _reserved(name: str, why: str, here: bool) -> str:
    return (f"field name {name!r} is reserved{' here' if here else ''}: {why}. Name the field "
            f"otherwise (a source column {name!r} maps to it with the source's "
            f"`fields: {{new_name: {name}}}`); docs/spec.md lists the reserved names")


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
