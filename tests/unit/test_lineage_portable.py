"""Events name nothing of this machine: the transformer every Airflow transport goes through
rewrites the folders it knows; the DAGs give the provider Granary's description and owners
(and no spec path); the registry is named without credentials or a local path."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from lineage.naming import registry_name, stage_description
from lineage.transform import CHECKOUT, RelativePathTransformer, relativiser, transport
from lineage.validate import validate_event

pytestmark = pytest.mark.unit

HOME = str(Path.home())


@pytest.mark.parametrize("rel", ["x.py", "dags/granary_lifecycle.py", ".venv/lib/a-b/c_d.py",
                                 "a/b/c/d/e.tar.gz", "-/_/."])
@pytest.mark.parametrize(("before", "after"), [('File "', '", line 3'), ("at ", ""),
                                               ("", " failed"), ("x=", ":12")])
def test_paths_under_a_root_become_relative(rel: str, before: str, after: str) -> None:
    fix = relativiser({"/srv/co": "", "/srv/co/.venv/lib/site-packages": "site-packages",
                       "/home/ana": "~"})
    assert fix(f"{before}/srv/co/{rel}{after}") == f"{before}{rel}{after}"
    assert fix(f"{before}/srv/co/.venv/lib/site-packages/{rel}{after}") == \
        f"{before}site-packages/{rel}{after}"
    assert fix(f"{before}/home/ana/{rel}{after}") == f"{before}~/{rel}{after}"
    # a folder that only starts like a root is someone else's, and stays
    assert fix(f"/srv/cow/{rel}") == f"/srv/cow/{rel}"
    assert fix(f"/home/anatole/{rel}") == f"/home/anatole/{rel}"


def _provider_event() -> object:
    """A run event as the Airflow provider builds one for a failed task: the DAG file's
    location in its ``airflow`` facet, a stack trace with frames in the checkout, the
    virtual environment and the home directory, and a job documentation naming a spec."""
    from airflow.providers.openlineage.plugins.facets import AirflowRunFacet
    from openlineage.client.event_v2 import Job, Run, RunEvent, RunState
    from openlineage.client.facet_v2 import documentation_job, error_message_run

    trace = (f'Traceback (most recent call last):\n  File "{CHECKOUT}/granary/runtime.py", '
             f'line 5, in run_stage\n  File "{HOME}/.local/lib/x.py", line 2\nValueError: bad')
    facets = {
        "airflow": AirflowRunFacet(
            dag={"dag_id": "granary_d", "fileloc": f"{CHECKOUT}/dags/granary_lifecycle.py"},
            dagRun={"run_id": "r"}, taskInstance={"try_number": 1}, task={"task_id": "t"},
            taskUuid=str(uuid.uuid4())),
        "errorMessage": error_message_run.ErrorMessageRunFacet(
            message="bad", programmingLanguage="python", stackTrace=trace)}
    job = Job(namespace="granary", name="granary_d.collect.merge", facets={
        "documentation": documentation_job.DocumentationJobFacet(
            description=f"- spec: `{CHECKOUT}/datasets/d.yaml`")})
    return RunEvent(eventType=RunState.FAIL, eventTime="2026-11-28T00:00:00+00:00",
                    run=Run(runId=str(uuid.uuid4()), facets=facets), job=job,
                    producer="https://github.com/apache/airflow/tree/providers-openlineage")


def test_a_provider_event_loses_the_machine_paths_and_stays_valid(tmp_path: Path) -> None:
    """Through the transport configuration the stack and the tests give Airflow: the
    OpenLineage client's own ``transform`` transport around a file transport."""
    from openlineage.client.serde import Serde
    from openlineage.client.transport import get_default_factory

    out = tmp_path / "events.jsonl"
    sender = get_default_factory().create(transport(
        {"type": "file", "log_file_path": str(out), "append": True},
        {str(tmp_path): "GRANARY_HOME"}))
    event = _provider_event()
    original = Serde.to_json(event)
    sender.emit(event)
    sent = json.loads(out.read_text())
    text = json.dumps(sent)
    assert str(CHECKOUT) not in text and f"{HOME}/" not in text
    assert sent["run"]["facets"]["airflow"]["dag"]["fileloc"] == "dags/granary_lifecycle.py"
    trace = sent["run"]["facets"]["errorMessage"]["stackTrace"]
    assert 'File "granary/runtime.py", line 5' in trace and 'File "~/.local/lib/x.py"' in trace
    assert sent["job"]["facets"]["documentation"]["description"] == "- spec: `datasets/d.yaml`"
    validate_event(sent)
    assert Serde.to_json(event) == original  # the caller's event is left as it was


def test_extra_roots_are_labelled(tmp_path: Path) -> None:
    fix = RelativePathTransformer({"roots": {str(tmp_path): "GRANARY_HOME"}})
    from openlineage.client.event_v2 import Job, Run, RunEvent, RunState
    from openlineage.client.facet_v2 import documentation_job

    event = RunEvent(eventType=RunState.START, eventTime="2026-11-28T00:00:00+00:00",
                     run=Run(runId=str(uuid.uuid4())),
                     job=Job(namespace="granary", name="j", facets={
                         "documentation": documentation_job.DocumentationJobFacet(
                             description=f"{tmp_path}/registry.git")}),
                     producer="https://x")
    fixed = fix.transform(event)
    assert fixed.job.facets["documentation"].description == "GRANARY_HOME/registry.git"


def test_registry_names_carry_no_credentials_or_local_path() -> None:
    assert registry_name("/home/ana/granary/.granary/registry.git") == "registry.git"
    assert registry_name("file:///srv/granary/registry.git/") == "registry.git"
    assert registry_name("https://ana:s3cret@git.example.org/data/registry.git") == \
        "https://git.example.org/data/registry.git"
    assert registry_name("git@git.example.org:data/registry.git") == \
        "git@git.example.org:data/registry.git"


def test_stage_tasks_give_the_provider_granarys_job_facets(repo: Path) -> None:
    """The provider builds a task event's ``documentation`` and ``ownership`` facets from the
    task's doc_md and owner (over any facet given to it): they are Granary's."""
    from airflow.providers.openlineage.utils.utils import build_task_event_job_facets

    from granary.dagfactory import build_dags
    from granary.settings import Settings

    dags, errors = build_dags(Settings(datasets_dir=repo / "datasets"))
    assert errors == []
    dag = dags["granary_zh_shopping_reviews"]
    title = "Chinese shopping reviews (sentiment)"
    assert str(repo) not in dag.doc_md and "`zh_shopping_reviews.yaml`" in dag.doc_md
    for task_id, stage in (("collect.merge", "collect"), ("preprocess.merge", "preprocess"),
                           ("annotate.merge", "annotate"), ("synthesize.merge", "synthesize"),
                           ("evaluate.grade", "evaluate"), ("publish.release", "publish")):
        facets = build_task_event_job_facets(task=dag.get_task(task_id), dag=dag)
        assert facets["documentation"].description == stage_description(title, stage)
        assert [o.name for o in facets["ownership"].owners] == ["granary-data"]
    # every task documents itself, so none falls back to the DAG's documentation
    assert all(t.doc_md for t in dag.tasks)
    refresh = dags["granary_zh_shopping_reviews_refresh"]
    assert str(repo) not in refresh.doc_md and all(t.doc_md for t in refresh.tasks)


def test_url_credentials_in_an_event_are_hidden() -> None:
    """A failed push names its remote with the token in it; the event carries the stack
    trace: the transformer hides the URL's user-info, and leaves object names alone."""
    from openlineage.client.event_v2 import Job, Run, RunEvent, RunState
    from openlineage.client.facet_v2 import error_message_run

    trace = ("git.exc.GitCommandError: Cmd('git') failed\n  stderr: 'fatal: unable to access "
             "'https://ghp_SeCrEt123@github.com/o/registry.git/': 403'")
    event = RunEvent(eventType=RunState.FAIL, eventTime="2026-11-28T00:00:00+00:00",
                     run=Run(runId=str(uuid.uuid4()), facets={
                         "errorMessage": error_message_run.ErrorMessageRunFacet(
                             message="push failed for https://oauth2:tok-42@git.example.org/r",
                             programmingLanguage="python", stackTrace=trace)}),
                     job=Job(namespace="granary", name="j"), producer="https://x")
    fixed = RelativePathTransformer({}).transform(event)
    facet = fixed.run.facets["errorMessage"]
    assert "ghp_SeCrEt123" not in facet.stackTrace and "tok-42" not in facet.message
    assert "https://***@github.com/o/registry.git/" in facet.stackTrace
    assert facet.message == "push failed for https://***@git.example.org/r"


@pytest.mark.parametrize("text", [
    "s3://granary-work/home/ana/run/x", "https://h/srv/co/schemas/X.json",
    "https://h.example:8080/srv/co/x", "http://[::1]/home/ana/x", "s3://b/x/srv/co/y",
    "/data/srv/co/x", "v1.2/home/ana"])
def test_object_keys_and_url_paths_that_contain_a_root_stay(text: str) -> None:
    fix = relativiser({"/srv/co": "", "/home/ana": "~"})
    assert fix(text) == text


@pytest.mark.parametrize(("text", "fixed"), [
    ("PATH=/usr/bin:/home/ana/bin", "PATH=/usr/bin:~/bin"),
    ("'/srv/co/x.py'", "'x.py'"), ("(/home/ana/f)", "(~/f)"), ("[/srv/co/a, /srv/co/b]", "[a, b]"),
    ("file:///home/ana/f", "file://~/f")])
def test_paths_that_begin_after_a_separator_are_rewritten(text: str, fixed: str) -> None:
    assert relativiser({"/srv/co": "", "/home/ana": "~"})(text) == fixed


def test_a_published_version_is_named_by_its_release_folder() -> None:
    from lineage.naming import release_folder
    from storage import keys

    name = release_folder("granary-releases", "reviews", 3)
    assert (name.namespace, name.name) == ("s3://granary-releases", "reviews/v3")
    assert name.uri == f"s3://granary-releases/{keys.release_prefix('reviews', 3)}"
    assert f"{name.uri}/data.parquet" == \
        f"s3://granary-releases/{keys.release_key('reviews', 3, 'data.parquet')}"
