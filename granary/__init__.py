"""Granary's front doors: the CLI, the local stack, the DAG factory and the runtime wiring."""

__version__ = "0.1.0"

# every Granary process (a task, the triggerer waiting for people, the CLI, the web app) finds
# the connections the stages name through Airflow's (granary/connections.py)
from granary import connections as _connections  # noqa: E402,F401
