from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def airflow_db(airflow_home: Path) -> Path:
    """Migrate the session's private Airflow database and create the registry pool."""
    airflow = [sys.executable, "-m", "airflow"]
    for cmd in (["db", "migrate"],
                ["pools", "set", "granary_registry", "1", "Granary registry writes"]):
        proc = subprocess.run([*airflow, *cmd], env=os.environ.copy(), capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
    return airflow_home
