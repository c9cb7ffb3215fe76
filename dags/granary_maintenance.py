"""Daily maintenance of every Granary dataset.

One mapped task per dataset verifies its published versions' ledger, prunes work outputs past
its retention window (never what a published version's lineage references), re-evaluates
published versions whose quality rules changed (recorded beside the old evaluation), and
records whether it is stale; the last task fails, naming them, when a ledger is broken, so the
run shows red in the UI. What each dataset's task found is on its catalog page.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Param, task

from granary.settings import Settings
from lifecycle.spec import discover

with DAG(
    dag_id="granary_maintenance",
    description="Verify ledgers, prune, re-evaluate, report stale datasets",
    doc_md=__doc__,
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["granary", "maintenance"],
    default_args={"owner": "granary", "retries": 1, "retry_delay": timedelta(minutes=1)},
    params={"dry_run": Param(False, type="boolean", title="Dry run",
                             description="report what would be pruned; change nothing")},
):

    @task
    def datasets() -> list[str]:
        good, _ = discover(Settings().datasets_dir)
        return sorted(s.spec.name for s in good)

    @task(map_index_template="{{ granary_dataset }}")
    def maintain(dataset: str, **context: Any) -> dict[str, Any]:
        from airflow.sdk import get_current_context

        from granary.runtime import maintain_dataset

        get_current_context()["granary_dataset"] = dataset  # type: ignore[typeddict-unknown-key]
        found = maintain_dataset(dataset, bool(context["params"].get("dry_run")))
        return {"dataset": dataset, "stale": found.get("stale"),
                "ledger_ok": found["ledger"]["ok"], "pruned_runs": len(found["pruned"]["runs"]),
                "pruned_bytes": found["pruned"]["bytes"],
                "reevaluated": [r["version"] for r in found["reevaluated"]]}

    @task
    def report(found: Any) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        rows = list(found)
        for r in rows:
            print(f"{r['dataset']}: ledger {'intact' if r['ledger_ok'] else 'BROKEN'}, "
                  f"{'STALE' if r['stale'] else 'fresh'}, pruned {r['pruned_runs']} run(s) "
                  f"({r['pruned_bytes']} bytes), re-evaluated {r['reevaluated'] or 'none'}")
        broken = [r["dataset"] for r in rows if not r["ledger_ok"]]
        if broken:
            raise AirflowFailException(f"ledger broken for {', '.join(broken)}: run `granary "
                                       "verify <dataset>` for the differences")
        return {"datasets": len(rows), "stale": [r["dataset"] for r in rows if r["stale"]]}

    report(maintain.expand(dataset=datasets()))
