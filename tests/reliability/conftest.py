"""The reliability suite (marker ``reliability``): each test reports its rows (fault or input,
outcome, records lost) through the ``report`` fixture of tests/conftest.py, which prints them
as one table at the end of the session, from every worker. Tests elsewhere that prove an item
of the suite (access control, secrets in logs, bandit, scale-out) carry the marker and report
rows too."""

from __future__ import annotations

import time

import pytest

from granary.settings import Settings


@pytest.fixture(scope="session")
def fault_baseline(s3: Settings, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The fault harness's uninterrupted run (tests/reliability/faultharness.py), once per
    test process: every fault case is compared with it."""
    from tests.reliability.faultharness import make_baseline

    started = time.monotonic()
    base = make_baseline(s3, tmp_path_factory.mktemp("fault-baseline"))
    print(f"fault baseline in {time.monotonic() - started:.1f} s: {base.seconds}")
    return base
