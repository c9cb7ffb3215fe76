"""Which specs annotation's parts label (lifecycle.contract's ``STAGE_DEFS["annotate"]``), and
why not the others: those run the single task over the whole table
(``contract.SINGLE_ANNOTATE``, lifecycle/annotate/stage.py). Light: the DAG factory asks it
while parsing."""

from __future__ import annotations

from typing import Any


def refusal(spec: Any) -> str | None:
    """Why the parts cannot annotate ``spec`` yet (docs/design/partitioned-annotate.md), or
    None when they can."""
    if spec.modality == "image":
        return "annotation as parts does not label images yet"
    return None
