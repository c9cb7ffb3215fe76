"""Static security scan (bandit) of Granary's own code: no finding of medium or high severity
is left. One that is not a risk is explained beside it in the code (`# nosec Bxxx` and why)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.unit, pytest.mark.reliability]
CODE = ["granary", "lifecycle", "lineage", "storage", "dags", "plugins"]


def test_bandit_finds_nothing_of_medium_or_high_severity(repo: Path, report: Any) -> None:
    proc = subprocess.run([sys.executable, "-m", "bandit", "-q", "-r", *CODE, "-ll", "-f",
                           "json"], cwd=repo, capture_output=True, text=True, timeout=600)
    scan = json.loads(proc.stdout)
    loc = scan["metrics"]["_totals"]["loc"]
    assert loc > 10_000  # it really scanned the code
    found = [f"{r['filename']}:{r['line_number']} {r['test_id']} {r['issue_severity']}: "
             f"{r['issue_text']}" for r in scan["results"]]
    assert found == [], "\n".join(found)
    report("bandit over Granary's code", f"no medium or high finding in {loc} lines", 0)
