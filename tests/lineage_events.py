"""Small, valid OpenLineage events for the lineage tests (built by hand, not captured)."""

from __future__ import annotations

import uuid
from typing import Any

PRODUCER = "https://pypi.org/project/granary/0.1.0"
SCHEMA = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"


def event(job: str, inputs: list[str], outputs: list[str], *, event_type: str = "COMPLETE",
          run_id: str | None = None, parent: str | None = None, rows: int | None = None,
          version: str | None = None, time: str = "2026-11-28T01:00:00+00:00") -> dict[str, Any]:
    def ds(uri: str, out: bool) -> dict[str, Any]:
        bucket, _, key = uri[5:].partition("/")
        d: dict[str, Any] = {"namespace": f"s3://{bucket}", "name": key, "facets": {}}
        if out and version:
            d["facets"]["version"] = {
                "_producer": PRODUCER, "datasetVersion": version,
                "_schemaURL": "https://openlineage.io/spec/facets/1-0-1/"
                              "DatasetVersionDatasetFacet.json#/$defs/DatasetVersionDatasetFacet"}
        if out and rows is not None:
            d["outputFacets"] = {"outputStatistics": {
                "_producer": PRODUCER, "rowCount": rows,
                "_schemaURL": "https://openlineage.io/spec/facets/1-0-2/"
                              "OutputStatisticsOutputDatasetFacet.json#/$defs/"
                              "OutputStatisticsOutputDatasetFacet"}}
        return d

    run: dict[str, Any] = {"runId": run_id or str(uuid.uuid4()), "facets": {}}
    if parent:
        run["facets"]["parent"] = {
            "_producer": PRODUCER,
            "_schemaURL": "https://openlineage.io/spec/facets/1-1-0/ParentRunFacet.json"
                          "#/$defs/ParentRunFacet",
            "run": {"runId": parent}, "job": {"namespace": "granary", "name": "dag"}}
    return {"eventType": event_type, "eventTime": time, "producer": PRODUCER,
            "schemaURL": SCHEMA, "run": run, "job": {"namespace": "granary", "name": job},
            "inputs": [ds(u, False) for u in inputs], "outputs": [ds(u, True) for u in outputs]}
