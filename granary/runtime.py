"""Wiring between settings and the lifecycle: build the services, run one stage.

DAG tasks and the CLI call :func:`run_stage`; it resolves settings, builds a
:class:`~lifecycle.context.StageContext`, runs the stage, records the result in the catalog and
returns a small JSON-able reference (never data).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from granary.settings import Settings, load_settings
from lifecycle.context import StageResult
from lifecycle.contract import STAGE_DEFS, UPSTREAM, declared, run_in_process
from lifecycle.errors import bounded, failure_facts, mark_stage
from lifecycle.spec import STAGES, DatasetSpec, load_spec
from storage.catalog import Catalog, CatalogMissing, Failure, sqlite_file
from storage.objectstore import ObjectStore
from storage.registry import DvcRegistry

log = logging.getLogger(__name__)


class StageSkipped(Exception):
    """The stage lies after the run's last stage."""


@dataclass
class Services:
    settings: Settings
    store: ObjectStore
    catalog: Catalog
    registry: DvcRegistry


def object_store(settings: Settings) -> ObjectStore:
    cfg = settings.to_minio()
    return ObjectStore.connect(cfg.pop("endpoint"), cfg.pop("access_key"), cfg.pop("secret_key"),
                               **cfg)


def public_object_store(settings: Settings) -> ObjectStore:
    """A store addressed as browsers see the S3 server, for presigning download links."""
    cfg = settings.to_minio()
    cfg.pop("endpoint")
    return ObjectStore.connect(settings.s3_public_endpoint or settings.endpoint,
                               cfg.pop("access_key"), cfg.pop("secret_key"), **cfg)


def registry(settings: Settings) -> DvcRegistry:
    return DvcRegistry(settings.registry, settings.to_dvc_remote(), settings.s3_env(),
                       settings.home / "locks" / "registry.lock")


def catalog(settings: Settings) -> Catalog:
    return Catalog(settings.catalog_url)


def existing_catalog(settings: Settings) -> Catalog:
    """The catalog for reading: CatalogMissing, saying where it looked and what to do, when
    there is none (a read never creates one, not even an empty SQLite file)."""
    path = sqlite_file(settings.catalog_url)
    where = f"{path}" if path is not None else settings.catalog_url.split("@")[-1]
    todo = (f"Granary's home is {settings.home} ({settings.home_found_by}). Build a dataset "
            "there first (`granary up`, then `granary run DATASET`; `make demo` in the "
            "checkout does both), or point GRANARY_HOME at the folder holding catalog.db "
            "(GRANARY_DATABASE_URL for a database server).")
    if path is not None and not path.is_file():
        raise CatalogMissing(f"no Granary catalog at {where}. {todo}")
    if path is not None and path.stat().st_size == 0:  # opening it would write a header
        raise CatalogMissing(f"{where} is an empty file, not a Granary catalog. {todo}")
    cat = catalog(settings)
    try:
        cat.require()
    except CatalogMissing as e:
        cat.dispose()
        raise CatalogMissing(f"{e}. {todo}") from e
    return cat


def services(settings: Settings | None = None) -> Services:
    settings = settings or load_settings()
    return Services(settings, object_store(settings), catalog(settings), registry(settings))


def bootstrap(svc: Services) -> None:
    """Buckets (raw and releases versioned), catalog schema and registry repository;
    idempotent."""
    s = svc.settings
    svc.store.ensure_bucket(s.bucket_raw, versioning=True)
    svc.store.ensure_bucket(s.bucket_work)
    svc.store.ensure_bucket(s.bucket_registry)
    svc.store.ensure_bucket(s.bucket_releases, versioning=True)
    svc.catalog.migrate()
    svc.registry.ensure()


def load_dataset(settings: Settings, dataset: str) -> DatasetSpec:
    return load_spec(settings.datasets_dir / f"{dataset}.yaml").spec


def stage_range(params: dict[str, Any]) -> tuple[int, int]:
    first = STAGES.index(params.get("first_stage") or STAGES[0])
    last = STAGES.index(params.get("last_stage") or STAGES[-1])
    if first > last:
        raise ValueError(f"first_stage {STAGES[first]!r} comes after last_stage "
                         f"{STAGES[last]!r}; pick a first stage at or before the last")
    return first, last


def begin_run(dataset: str, run_id: str, params: dict[str, Any]) -> dict[str, Any]:
    """Bootstrap storage, register the dataset and the run; refuse an impossible stage range."""
    svc = services()
    loaded = load_spec(svc.settings.datasets_dir / f"{dataset}.yaml")
    spec = loaded.spec
    bootstrap(svc)
    svc.catalog.upsert_dataset(
        spec.name, title=spec.title, description=spec.description, domain=spec.domain,
        modality=spec.modality, task=spec.task, licence=spec.licence.id,
        language=",".join(spec.language), tags=",".join(spec.tags), spec_hash=loaded.sha256,
        access=spec.access)
    svc.catalog.start_run(dataset, run_id, str(params.get("mode", "full")))
    try:
        stage_range(params)
    except ValueError as e:
        svc.catalog.finish_run(dataset, run_id, "failed", str(e))
        raise
    return {"dataset": dataset, "run_id": run_id, "spec_sha256": loaded.sha256}


def refuse_run(dataset: str, run_id: str, params: dict[str, Any], status: str,
               message: str) -> None:
    """Record a run that did not start (its dataset's other DAG was running), with why."""
    svc = services()
    svc.catalog.start_run(dataset, run_id, str(params.get("mode", "full")))
    svc.catalog.finish_run(dataset, run_id, status, message)


def _context(svc: Services, dataset: str, run_id: str, params: dict[str, Any]) -> Any:
    from lifecycle.context import StageContext

    return StageContext(spec=load_dataset(svc.settings, dataset), run_id=run_id,
                        store=svc.store, catalog=svc.catalog, registry=svc.registry,
                        raw_bucket=svc.settings.bucket_raw, work_bucket=svc.settings.bucket_work,
                        releases_bucket=svc.settings.bucket_releases,
                        inbox=svc.settings.inbox_dir, mode=str(params.get("mode", "full")),
                        rows_per_shard=svc.settings.rows_per_shard,
                        pii_salt=(svc.settings.pii_salt.get_secret_value()
                                  if svc.settings.pii_salt else ""))


REUSE_UNIT = {"index": -1, "source": "", "items": [], "label": "reused earlier output"}


def _placeholder(value: Any) -> bool:
    """A unit or partial result that stands for "nothing to do" (reuse, nothing new)."""
    if isinstance(value, dict):
        return not value or value.get("index", 0) < 0
    if isinstance(value, list):
        return all(_placeholder(v) for v in value)
    return False


def run_part(dataset: str, stage: str, part: str, run_id: str, params: dict[str, Any],
             *args: Any) -> Any:
    """One part of a stage that fans out, other than its reduce (lifecycle.contract: plan, a
    mapped part over one unit, a global part); ``args`` are its unit and the results of the
    parts it takes. A run that starts after ``stage`` gets placeholders, so the stage's reduce
    still runs and reuses the earlier output."""
    first, last = stage_range(params)
    index = STAGES.index(stage)
    if index > last:
        raise StageSkipped(f"{stage} is after the run's last stage {STAGES[last]}")
    # the part's kind, from STAGE_DEFS (or the stage's whole: a part of one name is of one
    # kind in both); the part that runs is the spec's (declared), read below
    kind = STAGE_DEFS[stage].part(part).kind
    if index < first or any(_placeholder(a) for a in args):
        # nothing to do; a plan still gives one unit, or Airflow skips the parts mapped
        # over it (zero expansion) and everything after them
        return [dict(REUSE_UNIT)] if kind == "plan" else {}
    given = list(args)
    try:
        svc = services()
        ctx = _context(svc, dataset, run_id, params)
        step = declared(stage, ctx.spec).part(part)
        first_taken = 1 if step.kind == "map" else 0  # a map part's unit comes first
        for i, taken in enumerate(step.takes):
            if taken == UPSTREAM:  # the previous stage's XCom, read back into its type
                given[first_taken + i] = StageResult.from_xcom(given[first_taken + i])
        result = step.function()(ctx, *given)
    except Exception as e:
        mark_stage(e, stage)
        raise
    if step.kind == "plan" and not result:  # nothing new anywhere: one empty unit
        return [{**REUSE_UNIT, "label": "nothing new to fetch"}]
    return result


def _reused(svc: Services, dataset: str, stage: str, run_id: str, first: int) -> StageResult:
    previous = svc.catalog.latest_stage_result(dataset, stage)
    if previous is None:
        raise ValueError(
            f"run starts at {STAGES[first]!r}, but {dataset} has no earlier successful "
            f"{stage!r} output to start from; run from {stage!r} first")
    log.info("reusing %s output of an earlier run: %s", stage, previous.output_uri)
    # recorded under this run too, so trace and lineage can follow the reused output
    svc.catalog.record_stage(dataset, run_id, stage, "reused", previous.output_uri,
                             dict(previous.counts))
    return StageResult(stage, previous.output_uri, dict(previous.counts), status="reused")


def run_stage(dataset: str, stage: str, run_id: str, params: dict[str, Any],
              upstream: dict[str, Any] | None = None, parts: dict[str, Any] | None = None,
              one_of_several: bool = False, svc: Services | None = None,
              people: bool = False) -> dict[str, Any]:
    """Run ``stage`` of ``dataset`` for ``run_id``; the heart of every DAG task. ``upstream``:
    the previous stage's result as its XCom (read back into a StageResult here, the one place
    a stage's input crosses from Airflow). ``parts``: the results of the stage's earlier parts
    (the lifecycle DAG's mapped tasks), so only the reduce runs here; without them every part
    runs in this process (lifecycle.contract.run_in_process). ``people``: the stage's second
    pass after people answered (its contract's ``people`` sequence; with ``parts``, its
    reduce) on ``upstream``, the first pass's result. ``one_of_several``: the task
    runs other stages too (run_stages), so the stage's lineage is a run of its own under the
    task's (granary.emit.emit_stage's ``child_started``); ``svc``: the task's connections,
    made once for its stages."""
    from datetime import UTC, datetime

    started = datetime.now(UTC)  # the stage's own lineage run starts here
    first, last = stage_range(params)
    index = STAGES.index(stage)
    svc = svc or services()
    if index > last:
        raise StageSkipped(f"{stage} is after the run's last stage {STAGES[last]}")
    if index < first:
        return _reused(svc, dataset, stage, run_id, first).to_xcom()
    ctx = _context(svc, dataset, run_id, params)
    try:
        first_pass = declared(stage, ctx.spec)
        if first_pass.needs_upstream and upstream is None:
            raise ValueError(f"{stage} needs the output of the stage before it")
        given = StageResult.from_xcom(upstream) if upstream is not None else None
        if people and first_pass.people is None:
            raise ValueError(f"{stage} has no second pass for people's answers")
        sequence = first_pass.people if people and first_pass.people else first_pass
        if parts is None:
            result = run_in_process(sequence, ctx, given)
        else:
            taken = {UPSTREAM: given, **parts}
            result = sequence.reduce.function()(ctx, *(taken[t] for t in sequence.reduce.takes))
    except Exception as e:
        mark_stage(e, stage)
        try:
            facts = failure_facts(e)
            svc.catalog.record_stage(dataset, run_id, stage, "failed", "", {
                "error": svc.settings.mask(f"{facts['error_type']}: {facts['message']}")})
        except Exception:  # the catalog may be the thing that failed; the task error says why
            log.exception("could not record the failure of %s in the catalog", stage)
        raise
    svc.catalog.record_stage(dataset, run_id, stage, result.status, result.manifest_uri,
                             result.counts)
    if result.lineage:
        from granary.emit import emit_stage
        from lineage.facets import set_schema_base
        from lineage.naming import stage_description

        set_schema_base(f"{svc.settings.public_url}/schemas")
        emit_stage(stage, result.lineage, result, [o.name for o in ctx.spec.owners],
                   stage_description(ctx.spec.title, stage),
                   child_started=started if one_of_several else None)
    return result.to_xcom()


def run_stages(dataset: str, stages: tuple[str, ...], run_id: str, params: dict[str, Any],
               resume: bool = False) -> dict[str, Any]:
    """Run consecutive ``stages`` of ``dataset`` in this process, each stage's result the
    next one's input (the refresh DAG's task before publishing); returns the last result.
    Stops after collection when an incremental run found nothing new, and before any stage
    after the run's last. ``resume`` (a retried task): the stages this run already completed
    are not run again; their recorded outputs are passed on."""
    import time

    _, last = stage_range(params)
    svc = services()  # one catalog engine and S3 client for every stage of the task
    done: dict[str, Any] = {}
    if resume:
        for row in svc.catalog.stage_results(dataset, run_id):  # oldest first
            done[row.stage] = row
    result: dict[str, Any] | None = None
    for stage in stages:
        if STAGES.index(stage) > last:
            break
        earlier = done.get(stage)
        if earlier is not None and earlier.status == "success":
            log.info("%s: %s already completed in this run (%s); passed on", dataset, stage,
                     earlier.output_uri)
            result = StageResult(stage, earlier.output_uri,
                                 dict(earlier.counts or {})).to_xcom()
        else:
            started = time.perf_counter()
            result = run_stage(dataset, stage, run_id, params, result, one_of_several=True,
                               svc=svc)
            log.info("%s: %s %s in %.2f s: %s", dataset, stage, result.get("status"),
                     time.perf_counter() - started, result.get("counts"))
        if StageResult.from_xcom(result).nothing_new:
            break  # an incremental run with nothing new: no later stage has work
    if result is None:
        raise StageSkipped(f"{stages[0]} is after the run's last stage {STAGES[last]}")
    return result


def end_run(dataset: str, run_id: str, params: dict[str, Any]) -> dict[str, Any]:
    """Record the run's outcome from the stage results it left in the catalog."""
    svc = services()
    try:
        first, last = stage_range(params)
    except ValueError as e:  # begin already failed on this; record it rather than retry
        svc.catalog.finish_run(dataset, run_id, "failed", str(e))
        return {"status": "failed", "message": str(e)}
    results = {r.stage: r for r in svc.catalog.stage_results(dataset, run_id)}
    record = svc.catalog.run(dataset, run_id)
    if not results and record is not None and record.status in ("skipped", "failed") \
            and record.message:  # refused at begin (refuse_run): its reason stands
        return {"status": record.status, "message": record.message}
    expected = list(STAGES[first:last + 1])
    collected = (results["collect"].counts or {}) if "collect" in results else {}
    # this run's own incremental collection found nothing new (not a reused earlier output)
    nothing_new = bool(collected.get("nothing_new")) and results["collect"].status == "success"
    if nothing_new:
        expected = ["collect"]  # the later stages were skipped: there was nothing to do
    missing = [s for s in expected if s not in results or results[s].status != "success"]
    status = "failed" if missing else "success"
    message = _failed_message(svc.catalog, dataset, run_id, missing) if missing else ""
    version = svc.catalog.version_for_run(dataset, run_id)
    if version is not None:
        message = f"published {version.ref}"
    elif nothing_new and not missing:
        message = (f"no new version: nothing new in the sources since {dataset}@v"
                   f"{collected.get('base_version')}")
    elif "publish" in results and (results["publish"].counts or {}).get("unchanged"):
        message = (f"no new version: the records equal {dataset}@v"
                   f"{results['publish'].counts.get('version')}")
    if status == "success":
        # only a run that completed moves the sources' incremental state forward
        advanced = svc.catalog.commit_source_states(dataset, run_id)
        log.info("%s: incremental state of %d source(s) committed", dataset, advanced)
    svc.catalog.finish_run(dataset, run_id, status, message)
    return {"status": status, "message": message}


def _failed_message(cat: Catalog, dataset: str, run_id: str, missing: list[str]) -> str:
    """Why a run failed, in one line: the first failure its tasks recorded (the cause; the
    others usually follow from it), else which stages did not complete."""
    failures = cat.failures(dataset, run_id)
    final = [f for f in failures if not f.will_retry] or failures
    if not final:
        return (f"stages not completed: {', '.join(missing)}; no task recorded a cause (killed "
                "or timed out?): see the failed task's log in the Airflow UI")
    more = len(final) - 1
    return final[0].summary() + (
        f" (and {more} more failed task{'s' if more > 1 else ''}: `granary runs {dataset}`)"
        if more else "")


def record_failure(dataset: str, run_id: str, task_id: str, error: BaseException | None, *,
                   stage: str | None = None, map_index: int = -1, try_number: int = 1,
                   will_retry: bool = False, unit: str | None = None,
                   dag_id: str | None = None, settings: Settings | None = None
                   ) -> Failure | None:
    """Record in the catalog why task ``task_id`` of the run failed: the stage, the
    exception's type and message (bounded, every secret of the settings masked) and the
    record, field, file and source it names. Called as the task fails, before Airflow hears
    of it (so the run's `end` finds it); never raises: the task's own error must stand."""
    try:
        settings = settings or load_settings()
        facts = failure_facts(error) if error is not None else {
            "error_type": "unknown", "message": "the task failed without an exception (killed "
            "or timed out?); see its log in the Airflow UI"}
        details = {k: facts[k] for k in ("source", "line", "cause") if facts.get(k) is not None}
        if unit:
            details["unit"] = unit
        if dag_id:
            details["dag_id"] = dag_id
        masked = {k: settings.mask(str(v)) if isinstance(v, str) else v
                  for k, v in details.items()}
        failure = Failure(
            task_id=task_id, error_type=facts["error_type"],
            message=bounded(settings.mask(facts["message"])),
            stage=facts.get("stage") or stage, map_index=map_index, try_number=try_number,
            will_retry=will_retry,
            record_id=_short(facts.get("record_id")), field=_short(facts.get("field")),
            file=settings.mask(str(facts["file"])) if facts.get("file") else None,
            details=masked)
        cat = catalog(settings)
        try:
            cat.require()
        except Exception:  # a first run failing before its set-up: make the schema
            cat.migrate()
        cat.record_failure(dataset, run_id, failure)
        cat.dispose()
        return failure
    except Exception:
        log.exception("could not record the failure of %s in the catalog", task_id)
        return None


def clear_failure(dataset: str, run_id: str, task_id: str, map_index: int = -1,
                  settings: Settings | None = None) -> None:
    """Forget the failure an earlier try of a task instance recorded, now that a later try
    succeeded (so `end` never gives a retried, recovered failure as the run's cause). Never
    raises: the task succeeded."""
    try:
        cat = catalog(settings or load_settings())
        if cat.clear_failure(dataset, run_id, task_id, map_index):
            log.info("%s succeeded on a later try: its earlier failure is forgotten", task_id)
        cat.dispose()
    except Exception:
        log.exception("could not clear the earlier failure of %s in the catalog", task_id)


def _short(value: Any) -> str | None:
    return None if value in (None, "") else str(value)[:250]


def maintain_dataset(dataset: str, dry_run: bool = False,
                     settings: Settings | None = None) -> dict[str, Any]:
    """The daily maintenance of one dataset (lifecycle/maintenance.py); returns its
    finding."""
    from lifecycle import maintenance

    svc = services(settings)
    bootstrap(svc)
    ctx = _context(svc, dataset, f"maintenance-{dataset}", {"mode": "full"})
    bucket, prefix = svc.settings.registry_objects
    return maintenance.maintain(ctx, svc.settings.registry, bucket, prefix, dry_run=dry_run)
