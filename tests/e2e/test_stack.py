"""The real local stack: `granary up`, a run triggered through the REST API, `granary down`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from granary.airflow_client import AirflowClient
from granary.demo import stage_sample
from granary.runtime import catalog
from granary.settings import Settings
from granary.stack import S3_PORT_BLOCK, free_port_block
from tests.browser import ARTIFACTS, browser_page, chromium_installed, skip_unless_browsed
from tests.e2e.sample import both_files, expected_reviews

pytestmark = [pytest.mark.e2e, pytest.mark.reliability]


def _granary(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "granary", *args], env=env, text=True,
                          capture_output=True, timeout=timeout)


def _processes_of(home: Path) -> list[psutil.Process]:
    """Every process started for this Granary home (they all carry it in their environment)."""
    found = []
    for p in psutil.process_iter():
        try:
            if p.environ().get("GRANARY_HOME") == str(home) or \
                    str(home) in " ".join(p.cmdline()):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return [p for p in found if p.pid != os.getpid()]


def _through_the_airflow_ui(s: Settings, records: int, token: str) -> None:
    """An operator signs into the Airflow UI, opens Granary from its navigation, signs into
    it with a read token and walks from the catalog to the published version, all inside
    Airflow's page."""
    assert s.airflow_password is not None
    with browser_page() as (page, errors):
        # the machine may be running another Airflow stack for the suite's other worker:
        # pages can take longer than Playwright's 30 s default to arrive
        page.set_default_timeout(120_000)
        page.goto(f"{s.api_url}/")
        page.fill("input[name=username]", s.airflow_user)
        page.fill("input[name=password]", s.airflow_password.get_secret_value())
        page.click("button[type=submit]")
        page.wait_for_url(f"{s.api_url}/")
        errors.clear()  # Airflow's own 401 before signing in is not ours
        page.click("a[aria-label=Granary]")
        page.wait_for_url(f"{s.api_url}/plugin/granary")
        view = page.frame_locator("iframe")
        view.locator("input[name=token]").fill(token)  # Granary asks for its own token
        view.locator("button[type=submit]").click()
        view.locator("a", has_text="zh_shopping_reviews").first.click()
        view.locator("#versions").wait_for()
        view.locator("#versions a", has_text="v1").first.click()
        view.locator("#files").wait_for()
        assert str(records) in view.locator("main").inner_text()
        assert view.locator("#files a.download").count() >= 8
        page.screenshot(path=str(ARTIFACTS / "airflow-granary-view.png"))
        assert errors == []


def _no_secret_in_any_log(s: Settings, home: Path, token: str, report: Any) -> None:
    """Every log the run wrote (the stack's processes, every task's log) is free of the
    secrets it used: the S3 secret key, the Airflow password, the lineage API key and the
    Granary token the operator signed in with."""
    assert s.airflow_password is not None and s.lineage_api_key is not None
    # (the S3 access key id is not secret: every presigned link carries it)
    secrets = {"S3 secret key": s.s3_secret_key, "Airflow password": s.airflow_password,
               "lineage API key": s.lineage_api_key}
    values = {name: v.get_secret_value() for name, v in secrets.items() if v is not None}
    values["Granary token"] = token
    assert len(values) == 4 and all(len(v) >= 8 for v in values.values())
    logs = [p for p in home.rglob("*") if p.is_file() and (
        p.suffix == ".log" or "logs" in p.relative_to(home).parts)]
    assert len(logs) > 20, logs  # the stack's own logs and one per task try
    found = [(name, str(p.relative_to(home))) for p in logs
             for name, value in values.items()
             if value.encode() in p.read_bytes()]
    assert found == [], found
    report("secrets in every log of a sample run", f"none of {len(values)} secrets in "
           f"{len(logs)} logs", 0)


def _specs_with_a_broken_one(repo: Path, specs: Path) -> Path:
    """The repository's specs, and one with two problems (a misspelt key, a wrong value)."""
    specs.mkdir()
    for spec in (repo / "datasets").glob("*.yaml"):
        (specs / spec.name).write_text(spec.read_text(encoding="utf-8"), encoding="utf-8")
    good = (repo / "datasets" / "zh_shopping_reviews.yaml").read_text(encoding="utf-8")
    (specs / "broken_reviews.yaml").write_text(
        good.replace("name: zh_shopping_reviews", "name: broken_reviews")
        .replace("title:", "titel:", 1).replace("modality: text", "modality: txt", 1),
        encoding="utf-8")
    return specs


def _run_on_a_broken_spec(env: dict[str, str], client: AirflowClient, report: Any) -> None:
    """`granary run` on a spec Airflow cannot load fails at once, with Airflow's whole import
    error (both problems, each with its line), not after a silent wait."""
    deadline = time.monotonic() + 120  # the DAG processor reads both DAG files together
    while not any("broken_reviews.yaml" in str(e.get("stack_trace"))
                  for e in client.import_errors()):
        assert time.monotonic() < deadline, client.import_errors()
        time.sleep(2)
    started = time.monotonic()
    broken = _granary(env, "run", "broken_reviews", timeout=120)
    took = time.monotonic() - started
    said = " ".join(broken.stderr.split())
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "Airflow cannot import granary_spec_check.py, so granary_broken_reviews cannot " \
        "run" in said
    assert "ImportError: 1 dataset spec(s) could not be loaded" in said  # Airflow's words
    assert "broken_reviews.yaml: 2 problems:" in said
    lines = (Path(env["GRANARY_DATASETS_DIR"]) / "broken_reviews.yaml").read_text(
        encoding="utf-8").splitlines()
    for fragment, field in (("titel:", "titel"), ("modality: txt", "modality")):
        line = next(i for i, text in enumerate(lines, 1) if text.startswith(fragment))
        assert f"broken_reviews.yaml:{line}: field '{field}'" in said, said
    assert took < 30, took
    report("`granary run` on a spec with two problems", f"exit 1 in {took:.1f} s with "
           "Airflow's whole import error (both problems, each with its line)", 0)
    # the rest of the test runs on the repository's specs alone, as before
    (Path(env["GRANARY_DATASETS_DIR"]) / "broken_reviews.yaml").unlink()


def test_up_trigger_over_rest_and_down(tmp_path: Path, repo: Path, report: Any) -> None:
    home = tmp_path / "home"
    specs = _specs_with_a_broken_one(repo, tmp_path / "datasets")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "GRANARY_"))}
    env.update({"GRANARY_HOME": str(home), "COLUMNS": "160", "GRANARY_DATASETS_DIR": str(specs),
                "GRANARY_S3_PORT": str(free_port_block(S3_PORT_BLOCK, start=25000)),
                "GRANARY_AIRFLOW_PORT": str(free_port_block(1, start=27000))})
    stage_sample(home / "inbox")
    try:
        up = _granary(env, "up")
        assert up.returncode == 0, up.stdout + up.stderr
        again = _granary(env, "up")  # running it twice is harmless
        assert again.returncode == 0 and "already running" in again.stdout
        status = _granary(env, "status")
        assert status.stdout.count("running") == 2

        s = Settings(home=home, s3_port=int(env["GRANARY_S3_PORT"]),
                     airflow_port=int(env["GRANARY_AIRFLOW_PORT"]))
        assert s.airflow_password is not None
        assert (home / "s3-credentials.json").stat().st_mode & 0o777 == 0o600
        assert s.s3_secret_key.get_secret_value() not in up.stdout + up.stderr

        client = AirflowClient(s.api_url, s.airflow_user, s.airflow_password.get_secret_value())
        dag_id = "granary_zh_shopping_reviews"
        client.wait_for_dag(dag_id, timeout=240)
        _run_on_a_broken_spec(env, client, report)
        client.unpause(dag_id)
        run_id = client.trigger(dag_id, {"mode": "full"})
        deadline = time.monotonic() + 900
        state = ""
        while time.monotonic() < deadline and state not in ("success", "failed"):
            time.sleep(3)
            state = client.dag_run(dag_id, run_id)["state"]
        assert state == "success", [(t["task_id"], t["state"])
                                    for t in client.task_instances(dag_id, run_id)]

        v = catalog(s).version_for_run("zh_shopping_reviews", run_id)
        assert v is not None and v.version == 1
        runs = {r.stage: r.counts for r in catalog(s).stage_results("zh_shopping_reviews",
                                                                       run_id)}
        near = runs["preprocess"]["merge_reasons"]["near_duplicate"]
        ties = runs["annotate"]["quarantine_reasons"]["label_conflict"]  # tied labels left
        assert v.row_count == len(expected_reviews()) - near - ties
        listed = _granary(env, "versions", "zh_shopping_reviews")
        assert listed.returncode == 0
        assert "v1" in listed.stdout and str(v.row_count) in listed.stdout

        # the web app inside Airflow's API server: health open, everything else with a token
        made = _granary(env, "token", "create", "--name", "operator", "--scope", "read")
        assert made.returncode == 0, made.stderr
        token = made.stdout.strip()
        assert token.startswith("gra_") and token not in made.stderr
        assert httpx.get(f"{s.public_url}/health").status_code == 200
        assert httpx.get(f"{s.public_url}/api/v1/datasets").status_code == 401
        auth = {"Authorization": f"Bearer {token}"}
        # lineage reached the web app inside Airflow's API server over OpenLineage HTTP
        node = f"dataset:s3://{s.bucket_releases}:zh_shopping_reviews/v1"
        graph = httpx.get(f"{s.public_url}/api/v1/lineage", params={"nodeId": node},
                          headers=auth).json()
        ids = {n["id"] for n in graph["graph"]}
        assert len([i for i in ids if i.startswith(f"dataset:s3://{s.bucket_raw}:")]) == 2
        assert len([i for i in ids if i.startswith("job:")]) == 6

        # trace a kept review that absorbed its twin from the other file
        got = _granary(env, "get", "zh_shopping_reviews@v1", "--to", str(tmp_path / "v1"))
        assert got.returncode == 0, got.stderr
        rows = [json.loads(x) for p in sorted((tmp_path / "v1" / "data" / "jsonl").glob("*.jsonl"))
                for x in p.read_text().splitlines()]
        twins = both_files()
        twin = next(r for r in rows if r["text"] in twins)
        traced = _granary(env, "trace", "zh_shopping_reviews@v1", twin["id"], "--json")
        assert traced.returncode == 0, traced.stderr
        origins = json.loads(traced.stdout)["raw_origins"]
        assert {o["source_path"] for o in origins} >= {"zh_shopping_reviews/pos.txt",
                                                       "zh_shopping_reviews/neg.txt"}
        verified = _granary(env, "verify", "zh_shopping_reviews")
        assert verified.returncode == 0, verified.stderr
        assert "ledger chain intact" in verified.stdout
        missing = _granary(env, "verify", "zh_shopping_reviews@v9")
        assert missing.returncode == 1 and "has no version 9" in missing.stderr
        # the refresh DAG through the scheduler, as the spec's schedule would run it: the
        # sources are unchanged, so it stops after collect and says so
        refreshed = _granary(env, "refresh", "zh_shopping_reviews")
        assert refreshed.returncode == 0, refreshed.stdout + refreshed.stderr
        assert "triggered granary_zh_shopping_reviews_refresh run" in refreshed.stdout
        assert "no new version: nothing new in the sources since zh_shopping_reviews@v1" in \
            " ".join(refreshed.stdout.split())
        if chromium_installed():
            _through_the_airflow_ui(s, v.row_count, token)
        _no_secret_in_any_log(s, home, token, report)
    finally:
        started = _processes_of(home)
        down = _granary(env, "down", timeout=120)
    assert down.returncode == 0, down.stderr
    assert started, "no stack process was found to stop"
    gone, alive = psutil.wait_procs(started, timeout=5)
    assert alive == [] and _processes_of(home) == []
    assert (home / "catalog.db").exists() and (home / "s3").is_dir()  # data left intact
    skip_unless_browsed()
