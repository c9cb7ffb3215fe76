"""The catalog repository: datasets, runs, stage results and versions in one SQL database.

SQLite under the Granary home by default, PostgreSQL in production and CI. Every write is an
upsert keyed by natural keys (dataset, run id, stage, version), so a retried task leaves one row.

:class:`Catalog` is made of parts: storage/catalog/database.py (engines, sessions, migrations,
the write transaction), runs.py (runs, their failures, stage results and source state) and
versions.py (datasets, versions, release history and evaluations). Their public names are
importable from here.
"""

from __future__ import annotations

from storage.catalog.database import MIGRATIONS as MIGRATIONS
from storage.catalog.database import CatalogError as CatalogError
from storage.catalog.database import CatalogMissing as CatalogMissing
from storage.catalog.database import sqlite_file as sqlite_file
from storage.catalog.runs import Failure as Failure
from storage.catalog.runs import Runs
from storage.catalog.versions import ReleaseError as ReleaseError
from storage.catalog.versions import ReleaseEvent as ReleaseEvent
from storage.catalog.versions import Version as Version
from storage.catalog.versions import Versions
from storage.catalog.versions import pick_latest as pick_latest


class Catalog(Runs, Versions):
    """The catalog: one object for every part, on one database (:class:`Database`)."""
