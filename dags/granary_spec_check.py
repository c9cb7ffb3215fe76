"""Reports dataset specs that fail to load as an Airflow import error naming each file.

Kept apart from granary_lifecycle.py on purpose: Airflow records import errors per DAG file, so
a broken spec fails this file (visible under "DAG Import Errors" in the UI) while every valid
dataset's DAG still loads from the other one. This file defines no DAG.
"""

from granary.dagfactory import spec_errors_message
from granary.settings import Settings
from lifecycle.spec import discover

_good, _bad = discover(Settings().datasets_dir)
if _bad:
    raise ImportError(spec_errors_message(_bad))
