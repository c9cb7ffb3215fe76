"""Collection's plan: every source split into units of work, one mapped fetch task each."""

from __future__ import annotations

import logging

from lifecycle.collect.sources import connector
from lifecycle.collect.state import _state
from lifecycle.collect.units import FetchUnit
from lifecycle.context import StageContext

log = logging.getLogger(__name__)


def plan(ctx: StageContext) -> list[FetchUnit]:
    """Units of work, one mapped task each: ``{index, source, items, label}``."""
    units: list[FetchUnit] = []
    for source in ctx.spec.sources:
        state = _state(ctx, source.name)
        mode = "incremental" if ctx.refresh.incremental else "full"
        conn = connector(source, inbox=ctx.inbox, store=ctx.store, state=state, mode=mode,
                         files_per_task=ctx.spec.collect.files_per_task,
                         catalog=ctx.catalog, registry=ctx.registry,
                         releases_bucket=ctx.releases_bucket)
        groups = conn.plan(state, mode)
        for i, items in enumerate(groups):
            label = source.name if len(groups) == 1 else f"{source.name} {i + 1}/{len(groups)}"
            units.append({"index": len(units), "source": source.name, "items": items,
                          "label": label})
    log.info("collect %s: %d unit(s) of work over %d source(s)", ctx.dataset, len(units),
             len(ctx.spec.sources))
    return units

