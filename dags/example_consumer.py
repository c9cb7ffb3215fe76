"""Example consumer: a DAG scheduled on new versions of a Granary dataset.

Publishing emits an Airflow Asset event on ``granary://datasets/<name>`` with the version,
tag, row count and grade in its extra. This DAG runs whenever zh_shopping_reviews gets a new
version, reads that version straight from the registry and reports what it received; copy it
and replace the task body with your own training or export step.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import DAG, task

from granary.assets import release_asset

DATASET = "zh_shopping_reviews"
release = release_asset(DATASET)

with DAG(
    dag_id=f"example_consume_{DATASET}",
    description=f"Runs on every new version of {DATASET} (an example consumer)",
    schedule=[release],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["granary", "example", DATASET],
):

    @task(inlets=[release])
    def load_new_version(*, inlet_events: Any = None) -> dict[str, Any]:
        import tempfile
        from pathlib import Path

        import pandas as pd

        from granary.runtime import registry
        from granary.settings import load_settings

        latest = inlet_events[release][-1]  # the newest "new version" event
        version = int(latest.extra["version"])
        with tempfile.TemporaryDirectory() as tmp:
            # the version's Parquet parts, one folder (docs/release.md)
            path = registry(load_settings()).fetch_file(DATASET, version, "data/parquet",
                                                        Path(tmp) / "parquet")
            rows = len(pd.read_parquet(path))
        print(f"received {DATASET} v{version} ({latest.extra.get('tag')}): {rows} records, "
              f"grade {latest.extra.get('grade')}")
        return {"version": version, "rows": rows}

    load_new_version()
