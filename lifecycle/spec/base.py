"""What every section of the dataset spec is made of: the frozen model that refuses unknown
keys, the error a validator raises for a key below its model, the stages' names and the
pattern of a name. The sections are in each stage's package (lifecycle/<stage>/spec.py) and
compose into lifecycle/spec/model.py's DatasetSpec; they import only this package's shared
modules, never each other.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

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


def _relative(v: str) -> str:
    if v.startswith("/") or ".." in Path(v).parts:
        raise ValueError("must be relative to the inbox and must not contain '..'")
    return v
