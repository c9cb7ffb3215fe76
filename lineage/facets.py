"""OpenLineage facets for what a stage read and wrote.

Standard facets come from openlineage-python's generated classes; Granary's own facets
(record conservation, licence, registry revision) follow the spec's rules for custom facets:
a ``granary_`` key prefix, a class name ending in the facet kind, and a JSON schema that the
Granary web app serves at the facet's ``_schemaURL`` (files in ``lineage/schemas``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import attr
from openlineage.client.facet_v2 import (
    DatasetFacet,
    RunFacet,
    data_quality_assertions_dataset,
    data_quality_metrics_input_dataset,
    dataset_version_dataset,
    datasource_dataset,
    documentation_dataset,
    lifecycle_state_change_dataset,
    output_statistics_output_dataset,
    ownership_dataset,
    schema_dataset,
    storage_dataset,
)

from lineage.naming import from_uri

PRODUCER = "https://pypi.org/project/granary/0.1.0"
SCHEMA_DIR = Path(__file__).with_name("schemas")
_schema_base = "http://127.0.0.1:8080/granary/schemas/"


def set_schema_base(url: str) -> None:
    """Where the web app serves ``lineage/schemas`` (``<public url>/schemas/``)."""
    global _schema_base
    _schema_base = url.rstrip("/") + "/"


def schema_url(facet_class: str) -> str:
    return f"{_schema_base}{facet_class}.json#/$defs/{facet_class}"


@attr.define
class GranaryConservationRunFacet(RunFacet):
    stage: str
    recordsIn: int  # noqa: N815 (OpenLineage facets use camelCase fields)
    kept: int
    quarantined: int
    merged: int
    quarantineReasons: dict[str, int] = attr.field(factory=dict)  # noqa: N815

    @staticmethod
    def _get_schema() -> str:
        return schema_url("GranaryConservationRunFacet")


@attr.define
class GranaryLicenceDatasetFacet(DatasetFacet):
    licence: str
    legalBasis: str  # noqa: N815
    url: str | None = None

    @staticmethod
    def _get_schema() -> str:
        return schema_url("GranaryLicenceDatasetFacet")


@attr.define
class GranaryRegistryDatasetFacet(DatasetFacet):
    registry: str
    revision: str
    tag: str
    dvcMd5: str  # noqa: N815
    version: int

    @staticmethod
    def _get_schema() -> str:
        return schema_url("GranaryRegistryDatasetFacet")


@attr.define
class GranaryQualityDatasetFacet(DatasetFacet):
    grade: str
    score: float
    passed: bool
    dimensions: dict[str, float] = attr.field(factory=dict)
    reportUri: str | None = None  # noqa: N815
    # the dimensions not measured (left out of the score and the grade) and why
    notMeasured: dict[str, str] = attr.field(factory=dict)  # noqa: N815

    @staticmethod
    def _get_schema() -> str:
        return schema_url("GranaryQualityDatasetFacet")


CUSTOM_FACETS = {
    "granary_conservation": GranaryConservationRunFacet,
    "granary_licence": GranaryLicenceDatasetFacet,
    "granary_registry": GranaryRegistryDatasetFacet,
    "granary_quality": GranaryQualityDatasetFacet,
}


@dataclass
class DatasetIO:
    """One dataset a stage read or wrote, with what is known about it (plain data)."""

    uri: str
    direction: str  # "input" or "output"
    file_format: str | None = None
    version: str | None = None
    rows: int | None = None
    size: int | None = None
    files: int | None = None
    columns: list[tuple[str, str]] = field(default_factory=list)
    lifecycle: str | None = None  # CREATE, OVERWRITE, ...
    assertions: list[dict[str, Any]] = field(default_factory=list)
    licence: dict[str, Any] | None = None
    registry: dict[str, Any] | None = None
    description: str | None = None
    quality: dict[str, Any] | None = None  # grade, score, passed, dimensions, reportUri

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def with_producer(facet: Any) -> Any:
    """The facet, produced by Granary (``_producer``)."""
    facet._producer = PRODUCER
    return facet


def dataset_facets(io: DatasetIO, owners: list[str]) -> dict[str, Any]:
    ns_name = from_uri(io.uri)
    facets: dict[str, Any] = {
        "dataSource": with_producer(datasource_dataset.DatasourceDatasetFacet(
            name=ns_name.namespace, uri=ns_name.namespace)),
    }
    if io.columns:
        facets["schema"] = with_producer(schema_dataset.SchemaDatasetFacet(fields=[
            schema_dataset.SchemaDatasetFacetFields(name=n, type=t) for n, t in io.columns]))
    if io.file_format:
        facets["storage"] = with_producer(storage_dataset.StorageDatasetFacet(
            storageLayer="s3", fileFormat=io.file_format))
    if io.version:
        facets["version"] = with_producer(dataset_version_dataset.DatasetVersionDatasetFacet(
            datasetVersion=io.version))
    if io.lifecycle:
        facets["lifecycleStateChange"] = with_producer(
            lifecycle_state_change_dataset.LifecycleStateChangeDatasetFacet(
                lifecycleStateChange=lifecycle_state_change_dataset.LifecycleStateChange(
                    io.lifecycle)))
    if owners:
        facets["ownership"] = with_producer(ownership_dataset.OwnershipDatasetFacet(owners=[
            ownership_dataset.Owner(name=o, type="team") for o in owners]))
    if io.description:
        facets["documentation"] = with_producer(documentation_dataset.DocumentationDatasetFacet(
            description=io.description))
    if io.assertions:
        facets["dataQualityAssertions"] = with_producer(
            data_quality_assertions_dataset.DataQualityAssertionsDatasetFacet(assertions=[
                data_quality_assertions_dataset.Assertion(
                    assertion=a["expectation"], success=bool(a["success"]),
                    column=a.get("column")) for a in io.assertions]))
    if io.licence:
        facets["granary_licence"] = with_producer(GranaryLicenceDatasetFacet(
            licence=io.licence["id"], legalBasis=io.licence.get("legal_basis", ""),
            url=io.licence.get("url")))
    if io.registry:
        facets["granary_registry"] = with_producer(GranaryRegistryDatasetFacet(**io.registry))
    if io.quality:
        facets["granary_quality"] = with_producer(GranaryQualityDatasetFacet(**io.quality))
    return facets


def input_facets(io: DatasetIO) -> dict[str, Any]:
    if io.rows is None:
        return {}
    return {"dataQualityMetrics": with_producer(
        data_quality_metrics_input_dataset.DataQualityMetricsInputDatasetFacet(
            columnMetrics={}, rowCount=io.rows, bytes=io.size, fileCount=io.files))}


def output_facets(io: DatasetIO) -> dict[str, Any]:
    if io.rows is None and io.size is None:
        return {}
    return {"outputStatistics": with_producer(
        output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
            rowCount=io.rows, size=io.size, fileCount=io.files))}


@dataclass(frozen=True)
class Conservation:
    """A stage's records in, and where each went: kept, quarantined (with reasons) or merged
    into another (in = kept + quarantined + merged; every stage states it in its counts)."""

    records_in: int
    kept: int
    quarantined: int = 0
    merged: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


def conservation_facet(stage: str, c: Conservation) -> GranaryConservationRunFacet:
    return with_producer(GranaryConservationRunFacet(
        stage=stage, recordsIn=c.records_in, kept=c.kept, quarantined=c.quarantined,
        merged=c.merged, quarantineReasons=dict(c.reasons)))
