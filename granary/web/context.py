"""What the web app's routers share: the settings, the lineage store (opened on the first
request) and its catalog, the datasets a request may not see, the app's base path, and the
run reports that the stages wrote to S3."""

from __future__ import annotations

import threading
from typing import Any

from fastapi import HTTPException, Request

from granary import auth
from granary.settings import Settings, load_settings
from lineage.store import LineageStore
from storage.catalog import Catalog


def base(request: Request) -> str:
    """The path the app is mounted under (``/granary`` inside Airflow), without a final /."""
    return str(request.scope.get("root_path", "")).rstrip("/")


class AppContext:
    """The settings and stores of one app; nothing connects until the first request."""

    def __init__(self, settings: Settings | None = None) -> None:
        self._settings = settings
        self._opening = threading.Lock()
        self._opened: list[LineageStore] = []

    def current_settings(self) -> Settings:
        if self._settings is None:  # loaded once, on the first request
            self._settings = load_settings()
        return self._settings

    def api_key(self) -> str | None:
        key = self.current_settings().lineage_api_key
        return key.get_secret_value() if key else None

    def store(self) -> LineageStore:
        # the first requests arrive together on the threadpool; Alembic is not thread-safe
        if not self._opened:
            with self._opening:
                if not self._opened:
                    first = Catalog(self.current_settings().catalog_url)
                    first.migrate()
                    self._opened.append(LineageStore(first))
        return self._opened[0]

    def catalog(self) -> Catalog:
        return self.store().catalog

    def hidden(self, request: Request) -> set[str]:
        return auth.hidden(request, self.catalog())

    def read_uri(self, uri: str) -> bytes:
        from granary.runtime import object_store
        from lifecycle.records.shards import parse_uri

        bucket, key = parse_uri(uri)
        return object_store(self.current_settings()).get_bytes(bucket, key)

    def quality(self, dataset: str, run_id: str) -> dict[str, Any]:
        import json

        from granary.runtime import object_store
        from lifecycle.records.shards import parse_uri

        found = self.store().catalog.evaluation(dataset, run_id)
        if found is None:
            raise HTTPException(404, f"run {run_id} of {dataset} has not been evaluated")
        bucket, key = parse_uri(found.report_uri)
        report: dict[str, Any] = json.loads(
            object_store(self.current_settings()).get_bytes(bucket, key))
        return report

    def stage_report(self, dataset: str, run_id: str, stage: str, name: str) -> dict[str, Any]:
        """The report ``name`` that a run's ``stage`` output points at. The output is the one
        the catalog recorded for the run (an earlier run's, when this run reused it), else the
        run's own manifest at its fixed key."""
        import json

        from storage import keys
        from storage.objectstore import ObjectNotFound

        found = {r.stage: r for r in self.store().catalog.stage_results(dataset, run_id)}
        recorded = found.get(stage)
        uri = (recorded.output_uri if recorded is not None and recorded.output_uri
               else f"s3://{self.current_settings().bucket_work}/"
                    f"{keys.manifest_key(dataset, run_id, stage)}")
        try:
            manifest = json.loads(self.read_uri(uri))
        except (ValueError, ObjectNotFound) as e:
            raise HTTPException(404, f"run {run_id} of {dataset} has no {stage} output") from e
        if not manifest.get(name):
            raise HTTPException(404, f"run {run_id} of {dataset} wrote no {stage} report")
        report: dict[str, Any] = json.loads(self.read_uri(manifest[name]))
        return report
