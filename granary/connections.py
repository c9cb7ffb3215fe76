"""Airflow's connections as the lifecycle's connection lookup (lifecycle/connections.py):
installed when this module is imported, which ``import granary`` does (granary/__init__.py),
so every Granary process (a task, the triggerer, the CLI, the web app) has it."""

from __future__ import annotations

from typing import Any

from lifecycle import connections


def airflow_connection(conn_id: str) -> Any:
    """The Airflow ``Connection`` named ``conn_id`` (AirflowNotFoundException if none)."""
    from airflow.sdk import Connection

    return Connection.get(conn_id)


connections.use(airflow_connection)
