"""The Airflow Asset a dataset's publishing updates: the lifecycle and refresh DAGs' outlet, and
what consumers' DAGs are scheduled on (one event per new version)."""

from __future__ import annotations

from typing import Any

from lineage.naming import release_asset_uri


def release_asset(dataset: str) -> Any:
    """The Asset object (``airflow.sdk`` imported only when asked)."""
    from airflow.sdk import Asset

    return Asset(uri=release_asset_uri(dataset), name=f"granary_{dataset}", group="granary")
