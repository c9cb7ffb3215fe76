"""Declare a stage task's inputs and outputs to Airflow's OpenLineage provider.

``@task`` functions get no lineage automatically, so each stage task calls :func:`emit_stage`
after its stage ran. The provider's ``emit_dataset_lineage`` joins the running task's own
OpenLineage run (same run id, parent facet pointing at the DAG run). A task that runs several
stages (the refresh DAG's ``collect_to_evaluate``) emits each as a run of its own instead
(``child_started``), whose parent is the task's run, so that the lineage graph keeps a
job per stage. Lineage never breaks a task: every failure is logged with the reason and
swallowed.
"""

from __future__ import annotations

import logging
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

from lifecycle.context import StageResult
from lineage.facets import (
    PRODUCER,
    DatasetIO,
    conservation_facet,
    dataset_facets,
    input_facets,
    output_facets,
    with_producer,
)
from lineage.naming import from_uri

log = logging.getLogger(__name__)


def build_datasets(ios: list[DatasetIO], owners: list[str]) -> tuple[list[Any], list[Any]]:
    from openlineage.client.event_v2 import InputDataset, OutputDataset

    inputs, outputs = [], []
    for io in ios:
        name = from_uri(io.uri)
        facets = dataset_facets(io, owners)
        if io.direction == "input":
            inputs.append(InputDataset(namespace=name.namespace, name=name.name, facets=facets,
                                       inputFacets=input_facets(io)))
        else:
            outputs.append(OutputDataset(namespace=name.namespace, name=name.name,
                                         facets=facets, outputFacets=output_facets(io)))
    return inputs, outputs


def _job_facets(owners: list[str], description: str) -> dict[str, Any]:
    """The job facets of a stage reported as a run of its own (_child_events): no Airflow
    task stands behind its job, so Granary sets them itself."""
    from openlineage.client.facet_v2 import documentation_job, ownership_job

    facets: dict[str, Any] = {}
    if description:
        facets["documentation"] = with_producer(documentation_job.DocumentationJobFacet(
            description=description, contentType="text/markdown"))
    if owners:  # as the provider names a task's owners (no type)
        facets["ownership"] = with_producer(ownership_job.OwnershipJobFacet(
            owners=[ownership_job.Owner(name=o) for o in owners]))
    return facets


def _child_events(stage: str, inputs: list[Any], outputs: list[Any], result: StageResult,
                  job_facets: dict[str, Any], started: datetime) -> list[Any]:
    """A stage that ran inside a task running several, as a run of its own: job
    ``<dag id>.<stage>`` (``granary_<name>_refresh.collect``), START at ``started`` and
    COMPLETE now with its datasets and counts, a parent facet naming the task's run (and the
    DAG run as root), the way a Spark job inside a task is reported. Its run id is derived
    from the task's run (one per try) and the stage."""
    from airflow.providers.openlineage.plugins import macros
    from airflow.sdk import get_current_context
    from openlineage.client.event_v2 import Job, Run, RunEvent, RunState
    from openlineage.client.facet_v2 import parent_run

    ti = get_current_context()["ti"]
    task_run = str(macros.lineage_run_id(ti))
    namespace = macros.lineage_job_namespace()
    parent = parent_run.ParentRunFacet(
        run=parent_run.Run(runId=task_run),
        job=parent_run.Job(namespace=namespace, name=macros.lineage_job_name(ti)),
        root=parent_run.Root(
            run=parent_run.RootRun(runId=str(macros.lineage_root_run_id(ti))),
            job=parent_run.RootJob(namespace=macros.lineage_root_job_namespace(ti),
                                   name=macros.lineage_root_job_name(ti))))
    run_id = str(uuid.uuid5(uuid.UUID(task_run), stage))
    job = Job(namespace=namespace, name=f"{ti.dag_id}.{stage}", facets=job_facets)
    return [RunEvent(eventType=RunState.START, eventTime=started.isoformat(),
                     run=Run(runId=run_id, facets={"parent": parent}), job=job,
                     inputs=inputs, outputs=[], producer=PRODUCER),
            RunEvent(eventType=RunState.COMPLETE, eventTime=datetime.now(UTC).isoformat(),
                     run=Run(runId=run_id, facets={
                         "parent": parent,
                         "granary_conservation": conservation_facet(
                             stage, result.conservation)}),
                     job=job, inputs=inputs, outputs=outputs, producer=PRODUCER)]


def emit_stage(stage: str, ios: list[DatasetIO], result: StageResult,
               owners: list[str], description: str,
               child_started: datetime | None = None) -> bool:
    """Emit the stage's datasets on the current task's OpenLineage run; True if sent.
    ``child_started``: the task runs other stages too, so this one is a run of its own under
    the task's, started then (_child_events)."""
    if "airflow" not in sys.modules:
        # no Airflow in this process, so no task run to join (a script or benchmark calling
        # granary.runtime directly): importing the provider only to learn that took ~2 CPU-s
        log.info("not in an Airflow task: %s lineage not emitted", stage)
        return False
    try:
        from airflow.providers.openlineage.api import (
            emit,
            emit_dataset_lineage,
            is_openlineage_active,
        )

        if not is_openlineage_active():
            log.info("OpenLineage is not active: %s lineage not emitted", stage)
            return False
        inputs, outputs = build_datasets(ios, owners)
        if not inputs and not outputs:
            return False
        if child_started is not None:
            for event in _child_events(stage, inputs, outputs, result,
                                       _job_facets(owners, description), child_started):
                emit(event)
            return True
        # the task's job facets are the provider's: it builds ``documentation`` and
        # ``ownership`` from the task's doc_md and owner (granary/dagfactory.py sets them to
        # the stage's description and the spec's owners) over any given here
        emit_dataset_lineage(
            inputs=inputs, outputs=outputs,
            additional_run_facets={
                "granary_conservation": conservation_facet(stage, result.conservation)})
        return True
    except Exception as e:  # lineage must never fail a data task
        log.warning("could not emit OpenLineage for %s: %s", stage, e, exc_info=True)
        return False
