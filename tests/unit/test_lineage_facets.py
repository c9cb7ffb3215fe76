"""Facets built from stage descriptors validate; lineage failures never raise."""

from __future__ import annotations

import json
import uuid

import pytest

from granary import emit
from lifecycle.context import StageResult
from lineage.facets import Conservation, DatasetIO, conservation_facet
from lineage.naming import from_uri, parse_node_id
from lineage.validate import EventError, validate_event, validate_facet

pytestmark = pytest.mark.unit


def _event() -> dict:
    from openlineage.client.event_v2 import Job, Run, RunEvent, RunState
    from openlineage.client.serde import Serde

    ios = [
        DatasetIO(uri="s3://raw/d/s/2026-01-01/ab.txt", direction="input", file_format="text",
                  version="v-1", size=10, files=1, licence={"id": "MIT", "legal_basis": "x"}),
        DatasetIO(uri="s3://work/d/run/collect", direction="output", file_format="parquet",
                  version="c" * 64, rows=5, size=100, files=1, columns=[("text", "str")],
                  lifecycle="CREATE", assertions=[{"expectation": "expect_x", "success": True,
                                                   "column": "text"}],
                  quality={"grade": "B", "score": 0.93, "passed": True,
                           "dimensions": {"safety": 0.91}, "reportUri": "s3://w/q.json"}),
        DatasetIO(uri="s3://registry/datasets/d", direction="output", version="md5", rows=5,
                  registry={"registry": "/r.git", "revision": "f" * 40, "tag": "d/v1",
                            "dvcMd5": "md5", "version": 1}),
    ]
    inputs, outputs = emit.build_datasets(ios, ["team"])
    event = RunEvent(eventType=RunState.RUNNING, eventTime="2026-11-28T00:00:00+00:00",
                     run=Run(runId=str(uuid.uuid4()), facets={
                         "granary_conservation": conservation_facet("preprocess", Conservation(
                             records_in=7, kept=4, quarantined=1, merged=2,
                             reasons={"empty_text": 1}))}),
                     job=Job(namespace="granary", name="dag.task"), inputs=inputs,
                     outputs=outputs, producer="https://pypi.org/project/granary/0.1.0")
    return json.loads(Serde.to_json(event))


def test_built_event_is_valid_and_carries_every_facet() -> None:
    event = validate_event(_event())
    out = event["outputs"][0]
    assert set(out["facets"]) >= {"dataSource", "schema", "storage", "version",
                                  "lifecycleStateChange", "ownership", "dataQualityAssertions"}
    assert out["outputFacets"]["outputStatistics"]["rowCount"] == 5
    assert event["inputs"][0]["facets"]["granary_licence"]["licence"] == "MIT"
    assert event["outputs"][1]["facets"]["granary_registry"]["tag"] == "d/v1"
    assert out["facets"]["granary_quality"]["grade"] == "B"
    facet = event["run"]["facets"]["granary_conservation"]
    assert facet["_schemaURL"].endswith(
        "/schemas/GranaryConservationRunFacet.json#/$defs/GranaryConservationRunFacet")
    assert (facet["recordsIn"], facet["kept"], facet["merged"]) == (7, 4, 2)


def test_broken_facets_are_named() -> None:
    event = _event()
    event["run"]["facets"]["granary_conservation"]["kept"] = -1
    with pytest.raises(EventError, match="granary_conservation.kept"):
        validate_event(event)
    event = _event()
    del event["outputs"][0]["facets"]["storage"]["storageLayer"]
    with pytest.raises(EventError, match="storage.storageLayer: required"):
        validate_event(event)
    event = _event()
    event["outputs"][0]["facets"]["granary_quality"]["dimensions"]["safety"] = 1.5
    with pytest.raises(EventError, match="granary_quality.dimensions"):
        validate_event(event)
    with pytest.raises(EventError, match="_schemaURL"):
        validate_facet({"_producer": "https://x"}, "f")


def test_lineage_failure_is_logged_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    import airflow.providers.openlineage.api as api

    def broken(**_kwargs: object) -> None:
        raise ConnectionError("lineage store is down")

    monkeypatch.setattr(api, "is_openlineage_active", lambda: True)
    monkeypatch.setattr(api, "emit_dataset_lineage", broken)
    warnings: list[str] = []
    monkeypatch.setattr(emit.log, "warning",
                        lambda msg, *args, **_kw: warnings.append(msg % args))
    sent = emit.emit_stage("collect", [DatasetIO(uri="s3://b/k", direction="input")],
                           StageResult("collect", "s3://b/m", {"in": 1, "kept": 1}), ["team"],
                           "collect stage")
    assert sent is False
    assert warnings and "lineage store is down" in warnings[0]


def test_names() -> None:
    name = from_uri("s3://granary-raw/d/s/x.txt")
    assert (name.namespace, name.name) == ("s3://granary-raw", "d/s/x.txt")
    assert parse_node_id(name.node_id) == ("dataset", "s3://granary-raw", "d/s/x.txt")
    assert parse_node_id("job:granary:dag.task") == ("job", "granary", "dag.task")


def test_no_airflow_in_the_process_means_no_lineage_and_no_airflow_import() -> None:
    """A process that runs stages without Airflow (a script, the preprocess benchmark) has
    no task run to join: emit_stage says so and does not import Airflow to find out."""
    import subprocess
    import sys

    code = ("import sys\nfrom granary import emit\nfrom lifecycle.context import StageResult\n"
            "from lineage.facets import DatasetIO\n"
            "sent = emit.emit_stage('collect', [DatasetIO(uri='s3://b/k', direction='input')], "
            "StageResult('collect', 's3://b/m', {'in': 1, 'kept': 1}), ['team'], 'x')\n"
            "print(sent, 'airflow' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.split() == ["False", "False"]
