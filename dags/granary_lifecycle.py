"""Granary lifecycle DAGs: one Airflow DAG per dataset spec in datasets/.

Thin wiring only; the factory lives in granary.dagfactory and the stages in lifecycle/.
"""

from granary.dagfactory import build_dags

_dags, _errors = build_dags()
globals().update(_dags)
