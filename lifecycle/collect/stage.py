"""Collection: land every fetched payload unchanged in the raw bucket, then parse it into records.

Three steps, which the DAG runs as separate tasks (the middle one mapped, one task per unit):

- :func:`plan` splits every source into units of work (a group of files or objects, an API,
  a query);
- :func:`fetch_unit` fetches a unit's payloads, lands each one in the raw bucket
  (content-addressed: identical bytes are stored once), parses it and writes Parquet shards
  of records and of quarantined rows; memory is bounded by a shard, not by the source;
- :func:`merge` checks the bad share, schema drift and conservation per source, writes the
  stage manifest, and stages the sources' incremental state, which the catalog makes current
  only when the run succeeds.

:func:`run` does all three in one process (the CLI and tests).
"""

from __future__ import annotations

from lifecycle.collect.fetch import PLAIN_EXTENSIONS, _appended, _located, _read_sidecar, fetch_unit
from lifecycle.collect.merge import merge
from lifecycle.collect.plan import plan
from lifecycle.collect.rows import QUARANTINE_SCHEMA, _to_row, record_id, record_schema, row_key
from lifecycle.collect.state import DATASET_STATE, MAX_SEEN_PARTS, STAGE, load_seen
from lifecycle.context import StageContext, StageResult

__all__ = ["DATASET_STATE", "MAX_SEEN_PARTS", "PLAIN_EXTENSIONS", "QUARANTINE_SCHEMA", "STAGE",
           "_appended", "_located", "_read_sidecar", "_to_row", "fetch_unit", "load_seen",
           "merge", "plan", "record_id", "record_schema", "row_key", "run"]


def run(ctx: StageContext) -> StageResult:
    """Plan, fetch every unit and merge, in this process (lifecycle.contract's parts)."""
    from lifecycle.contract import STAGE_DEFS, run_in_process

    result: StageResult = run_in_process(STAGE_DEFS[STAGE], ctx)
    return result

