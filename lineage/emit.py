"""Declare a stage task's inputs and outputs to Airflow's OpenLineage provider.

``@task`` functions get no lineage automatically, so each stage task calls :func:`emit_stage`
after its stage ran. The provider's ``emit_dataset_lineage`` joins the running task's own
OpenLineage run (same run id, parent facet pointing at the DAG run). Lineage never breaks a
task: every failure is logged with the reason and swallowed.
"""

from __future__ import annotations

import logging
from typing import Any

from lineage.facets import (
    DatasetIO,
    conservation_facet,
    dataset_facets,
    input_facets,
    output_facets,
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


def emit_stage(stage: str, ios: list[DatasetIO], counts: dict[str, Any],
               owners: list[str], description: str) -> bool:
    """Emit the stage's datasets on the current task's OpenLineage run; True if sent."""
    try:
        from airflow.providers.openlineage.api import emit_dataset_lineage, is_openlineage_active
        from openlineage.client.facet_v2 import documentation_job, ownership_job

        if not is_openlineage_active():
            log.info("OpenLineage is not active: %s lineage not emitted", stage)
            return False
        inputs, outputs = build_datasets(ios, owners)
        if not inputs and not outputs:
            return False
        job_facets: dict[str, Any] = {}
        if description:
            job_facets["documentation"] = documentation_job.DocumentationJobFacet(
                description=description)
        if owners:
            job_facets["ownership"] = ownership_job.OwnershipJobFacet(
                owners=[ownership_job.Owner(name=o, type="team") for o in owners])
        emit_dataset_lineage(
            inputs=inputs, outputs=outputs,
            additional_run_facets={"granary_conservation": conservation_facet(stage, counts)},
            additional_job_facets=job_facets)
        return True
    except Exception as e:  # lineage must never fail a data task
        log.warning("could not emit OpenLineage for %s: %s", stage, e, exc_info=True)
        return False
