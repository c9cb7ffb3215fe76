"""Who owns a dataset, under which licence it is published, and where each source's data comes
from and why we may use it (a source's ``licence``: lifecycle/collect/spec.py).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from lifecycle.spec.base import _Model


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
