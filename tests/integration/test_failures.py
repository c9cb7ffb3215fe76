"""A failed run records its cause and every front door shows it: a stage raises through the
runtime's path (begin, run_stage, the failure record the DAG's error wrapper writes, end)
against a real S3 server, registry and catalog; then the catalog, the CLI (`granary runs`,
`granary versions`) and the dataset page of the web app served over HTTP are read."""

from __future__ import annotations

import html
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from granary import runtime
from granary.settings import Settings
from lifecycle.errors import SourceError
from storage.models import RunFailureRow
from tests.stagectx import isolated
from tests.webapp import serve

pytestmark = pytest.mark.integration
DATASET = "failing_reviews"
DAG = f"granary_{DATASET}"
RUN = "manual__2026-01-02T03:04:05+00:00"
SPEC = f"""\
name: {DATASET}
title: Reviews whose files never arrived
licence: {{id: MIT}}
owners: [{{name: team}}]
sources:
  - name: shop
    type: files
    path: reviews/*.txt
    format: text
    label: positive
    licence: {{id: MIT, origin: written for this test, legal_basis: own}}
schema:
  fields:
    - {{name: text, type: string}}
    - {{name: label, type: string, values: [positive, negative]}}
"""


@pytest.fixture
def s(s3: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / f"{DATASET}.yaml").write_text(SPEC, encoding="utf-8")
    out = isolated(s3, tmp_path, datasets_dir=specs)
    out.inbox_dir.mkdir(parents=True)
    for key, value in out.to_env().items():  # the runtime reads its settings as a task does
        monkeypatch.setenv(key, value)
    return out


def _granary(s: Settings, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "COLUMNS": "400", **s.to_env()}
    return subprocess.run([sys.executable, "-m", "granary", *args], env=env, text=True,
                          capture_output=True, timeout=120, cwd=cwd)


def _fail_a_run(s: Settings) -> SourceError:
    """What the lifecycle DAG does when collection cannot find its files, on its last try."""
    params = {"mode": "full"}
    runtime.begin_run(DATASET, RUN, params)
    with pytest.raises(SourceError) as raised:
        runtime.run_stage(DATASET, "collect", RUN, params)
    # the DAG's error wrapper (dagfactory._as_airflow) records it before Airflow hears of it
    runtime.record_failure(DATASET, RUN, "collect.merge", raised.value, try_number=3,
                           dag_id=DAG)
    runtime.end_run(DATASET, RUN, params)
    return raised.value


def test_a_failed_runs_cause_is_recorded_printed_and_shown(s: Settings, tmp_path: Path) -> None:
    error = _fail_a_run(s)
    cat = runtime.catalog(s)
    [f] = cat.failures(DATASET, RUN)
    assert (f.stage, f.task_id, f.map_index, f.try_number, f.will_retry) == (
        "collect", "collect.merge", -1, 3, False)
    assert f.error_type == "SourceError" and f.message == str(error)
    assert "no file matches 'reviews/*.txt'" in f.message
    assert f.details["source"] == "shop" and f.details["dag_id"] == DAG
    assert f.file == str(s.inbox_dir / "reviews" / "*.txt")
    run = cat.run(DATASET, RUN)
    assert run is not None and run.status == "failed"
    assert run.message == f"collect task collect.merge failed: SourceError: {error} (source " \
        f"shop, file {s.inbox_dir / 'reviews' / '*.txt'})"
    [stage] = cat.stage_results(DATASET, RUN)
    assert (stage.stage, stage.status) == ("collect", "failed")
    assert stage.counts["error"] == f"SourceError: {error}"

    # the CLI, from a folder outside any checkout: the listing and the one run
    listed = _granary(s, tmp_path, "runs", DATASET)
    assert listed.returncode == 0, listed.stderr
    flat = " ".join(listed.stdout.split())
    assert RUN in flat and "failed" in flat and "SourceError" in flat
    one = _granary(s, tmp_path, "runs", DATASET, RUN)
    assert one.returncode == 0, one.stderr
    said = " ".join((one.stdout + one.stderr).split())
    assert f"collect: task collect.merge failed (try 3): SourceError: {error}" in said
    assert f"where: source shop, file {s.inbox_dir / 'reviews' / '*.txt'}" in said
    assert (f"log: {s.api_url}/dags/{DAG}/runs/manual__2026-01-02T03%3A04%3A05%2B00%3A00/"
            "tasks/collect.merge?try_number=3") in said
    assert "see its log in the Airflow UI" not in said
    versions = _granary(s, tmp_path, "versions", DATASET)
    assert versions.returncode == 1
    assert (f"its last run {RUN} ended failed: collect task collect.merge failed: "
            "SourceError") in " ".join(versions.stderr.split())

    # the dataset page of the web app
    with serve(s, scope="read") as site:
        page = site.get(f"/datasets/{DATASET}")
    assert page.status_code == 200
    runs = page.text[page.text.index("<table id='runs'>"):]
    runs = runs[:runs.index("</table>")]
    assert html.escape(RUN) in runs and "<code>collect.merge</code>" in runs
    assert f"<strong>SourceError</strong>: {html.escape(str(error))}" in runs
    assert f"where: source shop, file {html.escape(str(s.inbox_dir))}" in runs


def test_a_recorded_cause_is_bounded_and_never_holds_a_secret(
        s: Settings, catalog_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    s = s.model_copy(update={"database_url": catalog_url})  # SQLite and PostgreSQL
    monkeypatch.setenv("GRANARY_DATABASE_URL", catalog_url)
    runtime.begin_run(DATASET, RUN, {"mode": "full"})
    secret = s.s3_secret_key.get_secret_value() if s.s3_secret_key else ""
    assert len(secret) >= 8
    noise = "x" * 20_000
    error: Any = RuntimeError(f"push to https://bot:tok-{secret}@git.example/r.git refused; "
                              f"the S3 key {secret} was wrong {noise} (at the end)")
    runtime.record_failure(DATASET, RUN, "publish.release", error, stage="publish",
                           try_number=1, will_retry=True)
    runtime.record_failure(DATASET, RUN, "publish.release", error, stage="publish",
                           try_number=2, will_retry=True)  # a retry replaces its row
    cat = runtime.catalog(s)
    with cat.session() as session:
        rows = list(session.scalars(select(RunFailureRow)))
    stored = " ".join(str(v) for r in rows for v in vars(r).values())
    assert secret not in stored and "tok-" not in stored
    [f] = cat.failures(DATASET, RUN)
    assert f.message.startswith("push to https://***@git.example/r.git refused; the S3 "
                                "key *** was wrong")
    assert f.message.endswith("(at the end)") and len(f.message) < 2100
    assert f.will_retry and f.stage == "publish" and f.try_number == 2


def test_a_failure_a_retry_recovered_from_is_no_cause(s: Settings) -> None:
    """A try that failed and was retried, then a try that succeeded: the failure is
    forgotten, so a run that fails later for a reason no task recorded does not give it as
    its cause. A task's row keeps the time its first try failed, and failures() lists the
    tasks in that order."""
    from types import SimpleNamespace

    from granary.dagfactory import _as_airflow

    params = {"mode": "full"}
    runtime.begin_run(DATASET, RUN, params)
    flaky = "preprocess.merge"
    runtime.record_failure(DATASET, RUN, flaky, RuntimeError("S3 read timed out"),
                           stage="preprocess", try_number=1, will_retry=True, dag_id=DAG)
    cat = runtime.catalog(s)
    [first] = cat.failures(DATASET, RUN)
    assert first.will_retry
    # another task fails for good, then the flaky one's second try fails again: the flaky
    # one failed first, and stays first
    runtime.record_failure(DATASET, RUN, "annotate.label", RuntimeError("no labels"),
                           stage="annotate", try_number=1, dag_id=DAG)
    runtime.record_failure(DATASET, RUN, flaky, RuntimeError("S3 read timed out again"),
                           stage="preprocess", try_number=2, will_retry=True, dag_id=DAG)
    listed = cat.failures(DATASET, RUN)
    assert [(f.task_id, f.try_number) for f in listed] == [(flaky, 2), ("annotate.label", 1)]
    assert listed[0].created_at == first.created_at
    # its third try succeeds through the DAG's error wrapper: the failure is forgotten
    ti = SimpleNamespace(task_id=flaky, try_number=3, max_tries=2, map_index=-1, dag_id=DAG)
    assert _as_airflow(lambda: {"done": True}, DATASET, {"ti": ti, "run_id": RUN},
                       "preprocess") == {"done": True}
    assert [f.task_id for f in cat.failures(DATASET, RUN)] == ["annotate.label"]
    with cat.session() as session:  # and no row of it is left behind
        assert {r.task_id for r in session.scalars(select(RunFailureRow))} == {"annotate.label"}


def test_a_run_whose_only_recorded_failure_was_recovered_says_no_cause_was_recorded(
        s: Settings) -> None:
    from types import SimpleNamespace

    from granary.dagfactory import _as_airflow

    params = {"mode": "full"}
    runtime.begin_run(DATASET, RUN, params)
    runtime.record_failure(DATASET, RUN, "collect.plan", RuntimeError("S3 read timed out"),
                           stage="collect", try_number=1, will_retry=True, dag_id=DAG)
    ti = SimpleNamespace(task_id="collect.plan", try_number=2, max_tries=2, map_index=-1,
                         dag_id=DAG)
    _as_airflow(lambda: [], DATASET, {"ti": ti, "run_id": RUN}, "collect")
    runtime.end_run(DATASET, RUN, params)  # collect never completed, and nothing said why
    run = runtime.catalog(s).run(DATASET, RUN)
    assert run is not None and run.status == "failed"
    assert "no task recorded a cause" in (run.message or "")
    assert "S3 read" not in (run.message or "")
