"""The lineage store: OpenLineage events kept append-only in the catalog database, indexed
by run and by dataset, and the graph queries the API answers.

The graph has the shape Marquez uses: nodes ``dataset:<namespace>:<name>`` and
``job:<namespace>:<name>``, each with ``inEdges`` and ``outEdges`` (origin -> destination).
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
from collections import deque
from concurrent.futures import Future, InvalidStateError
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, select, update

from lineage.naming import parse_node_id
from lineage.validate import validate_event
from storage.catalog import Catalog
from storage.models import LineageEventRow, LineageIORow, LineageRunRow

TERMINAL = {"COMPLETE", "FAIL", "ABORT"}
GROUP_MAX = 500  # events written in one transaction at most
WRITER_IDLE_S = 30.0  # the writer thread ends after this long without events


def _time(value: str) -> datetime:
    t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _aware(t: datetime | None) -> datetime | None:
    if t is None:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _merged_run(row: Any, etype: str, when: datetime,
                facets: dict[str, Any]) -> dict[str, Any]:
    """A run's state after one more event (``row``: its stored values, None for a new run).
    Events can arrive out of order: a terminal state is never replaced by a later RUNNING or
    START, and the newest terminal state wins."""
    state = row["state"] if row is not None else etype
    last = (_aware(row["updated_at"]) if row is not None else None) or when
    if etype in TERMINAL or (state not in TERMINAL and when >= last):
        state = etype
    started = _aware(row["started_at"]) if row is not None else None
    if etype == "START" and (started is None or when < started):
        started = when
    ended = _aware(row["ended_at"]) if row is not None else None
    if etype in TERMINAL:
        ended = when
    out: dict[str, Any] = {"state": state, "updated_at": max(last, when), "started_at": started,
                           "ended_at": ended,
                           "facets": {**((row["facets"] or {}) if row is not None else {}),
                                      **facets}}
    parent = facets.get("parent") or {}
    if parent.get("run"):
        out["parent_run_id"] = str(parent["run"].get("runId"))
        out["parent_job_name"] = (parent.get("job") or {}).get("name")
    return out


def _settle(done: Future[list[bool]], result: list[bool] | None = None,
            error: Exception | None = None) -> None:
    """Hand the outcome to the waiting request; one that went away (its future cancelled when
    the client disconnected) is skipped: its events are stored all the same."""
    try:
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result or [])
    except InvalidStateError:
        pass


def _validate(events: list[dict[str, Any]]) -> None:
    for i, event in enumerate(events):
        try:
            validate_event(event)
        except ValueError as e:
            raise ValueError(f"event {i}: {e}" if len(events) > 1 else str(e)) from e


def event_key(event: dict[str, Any]) -> str:
    """Identity of a delivery: the same event sent twice has the same key."""
    return hashlib.sha256(json.dumps(event, sort_keys=True, separators=(",", ":"))
                          .encode()).hexdigest()


class LineageStore:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._pending: queue.Queue[tuple[list[dict[str, Any]], Future[list[bool]]]] = \
            queue.Queue()
        self._writer: threading.Thread | None = None
        self._writer_lock = threading.Lock()

    # ---- ingestion -----------------------------------------------------------------------------
    def add(self, event: dict[str, Any]) -> bool:
        """Validate and store one event; False when it was already stored (idempotent)."""
        return self.add_many([event])[0]

    def add_many(self, events: list[dict[str, Any]]) -> list[bool]:
        """Validate and store ``events`` in one transaction, all or nothing; for each, False
        when it was already stored."""
        _validate(events)
        return self._write(events)

    def _write(self, events: list[dict[str, Any]]) -> list[bool]:
        with self.catalog.engine.begin() as conn:
            return [self._add(conn, event) for event in events]

    def submit(self, events: list[dict[str, Any]]) -> Future[list[bool]]:
        """Validate ``events`` now (ValueError) and store them with group commit: one writer
        thread takes every submission waiting when it is free and writes them in one
        transaction, so many concurrent requests cost one commit. The future holds what
        :meth:`add_many` returns once the transaction has committed; if a group fails, its
        submissions are written again one by one, so only the failing one fails."""
        _validate(events)
        done: Future[list[bool]] = Future()
        with self._writer_lock:
            self._pending.put((events, done))
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_groups, daemon=True,
                                                name="lineage-writer")
                self._writer.start()
        return done

    def _write_groups(self) -> None:
        while True:
            try:
                first = self._pending.get(timeout=WRITER_IDLE_S)
            except queue.Empty:
                with self._writer_lock:  # submit() starts a new writer after this one
                    if self._pending.empty():
                        self._writer = None
                        return
                continue
            group = [first]
            size = len(group[0][0])
            while size < GROUP_MAX:  # no waiting: a group is what queued during the last one
                try:
                    group.append(self._pending.get_nowait())
                except queue.Empty:
                    break
                size += len(group[-1][0])
            try:
                with self.catalog.engine.begin() as conn:
                    results = [[self._add(conn, e) for e in events] for events, _ in group]
            except Exception:  # noqa: BLE001 - retried one by one below, each reports its own
                for events, done in group:
                    try:
                        _settle(done, self._write(events))
                    except Exception as e:  # noqa: BLE001 - handed to the waiting request
                        _settle(done, error=e)
                continue
            for (_, done), added in zip(group, results, strict=True):
                _settle(done, added)

    # Ingestion speaks SQLAlchemy Core, not the ORM: an event is three to five statements
    # (insert the event unless known, insert or lock-and-update its run, its inputs and
    # outputs in one executemany). The ORM path took twice as many statements and about
    # 9 ms an event on PostgreSQL here (bench/load.py).
    def _insert(self, table: Any) -> Any:
        if self.catalog.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(table)
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table)

    def _add(self, conn: Connection, event: dict[str, Any]) -> bool:
        key = event_key(event)
        run_id = str(event["run"]["runId"])
        job = event["job"]
        when = _time(event["eventTime"])
        etype = event.get("eventType") or "OTHER"
        stored = conn.execute(
            self._insert(LineageEventRow.__table__).values(
                event_key=key, event_type=etype, event_time=when, run_id=run_id,
                job_namespace=job["namespace"], job_name=job["name"], body=event,
                received_at=datetime.now(UTC))
            .on_conflict_do_nothing(index_elements=["event_key"])
            .returning(LineageEventRow.__table__.c.id)).first()
        if stored is None:
            return False  # the same delivery again
        runs = cast(Table, LineageRunRow.__table__)
        facets = event["run"].get("facets") or {}
        fresh = _merged_run(None, etype, when, facets)
        created = conn.execute(
            self._insert(runs).values(run_id=run_id, job_namespace=job["namespace"],
                                      job_name=job["name"], **fresh)
            .on_conflict_do_nothing(index_elements=["run_id"])
            .returning(runs.c.run_id)).first()
        known: dict[tuple[str, str, str], Any] = {}
        if created is None:  # a later event of a known run: lock it, merge, update
            row = conn.execute(select(runs).where(runs.c.run_id == run_id)
                               .with_for_update()).mappings().one()
            conn.execute(update(runs).where(runs.c.run_id == run_id)
                         .values(**_merged_run(row, etype, when, facets)))
            io = cast(Table, LineageIORow.__table__)
            known = {(r.namespace, r.name, r.direction): r for r in conn.execute(
                select(io.c.id, io.c.namespace, io.c.name, io.c.direction, io.c.facets,
                       io.c.version).where(io.c.run_id == run_id))}
        self._add_io(conn, run_id, event, when, known)
        return True

    def _add_io(self, conn: Connection, run_id: str, event: dict[str, Any], when: datetime,
                known: dict[tuple[str, str, str], Any]) -> None:
        io = cast(Table, LineageIORow.__table__)
        new: dict[tuple[str, str, str], dict[str, Any]] = {}
        for direction, side in (("in", "inputs"), ("out", "outputs")):
            for ds in event.get(side) or []:
                extra = ds.get("inputFacets" if direction == "in" else "outputFacets") or {}
                facets = {**(ds.get("facets") or {}), **extra}
                version = (facets.get("version") or {}).get("datasetVersion")
                ident = (ds["namespace"], ds["name"], direction)
                if ident in known:
                    old = known[ident]
                    conn.execute(update(io).where(io.c.id == old.id).values(
                        facets={**(old.facets or {}), **facets},
                        version=version or old.version))
                elif ident in new:  # listed twice in one event: merge
                    row = new[ident]
                    row["facets"] = {**row["facets"], **facets}
                    row["version"] = version or row["version"]
                else:
                    new[ident] = {"run_id": run_id, "namespace": ds["namespace"],
                                  "name": ds["name"], "direction": direction,
                                  "version": version, "facets": facets, "event_time": when}
        if new:
            conn.execute(io.insert(), list(new.values()))

    # ---- reads -----------------------------------------------------------------------------
    def namespaces(self) -> list[str]:
        with self.catalog.session() as s:
            jobs = set(s.scalars(select(LineageRunRow.job_namespace).distinct()))
            data = set(s.scalars(select(LineageIORow.namespace).distinct()))
        return sorted(jobs | data)

    def jobs(self, namespace: str) -> list[dict[str, Any]]:
        with self.catalog.session() as s:
            rows = s.scalars(select(LineageRunRow).filter_by(job_namespace=namespace)
                             .order_by(LineageRunRow.job_name, LineageRunRow.updated_at))
            latest: dict[str, LineageRunRow] = {}
            for r in rows:
                latest[r.job_name] = r
        return [{"namespace": namespace, "name": n, "latestRun": _run_dict(r)}
                for n, r in sorted(latest.items())]

    def runs(self, namespace: str, job: str) -> list[dict[str, Any]]:
        with self.catalog.session() as s:
            rows = s.scalars(select(LineageRunRow).filter_by(job_namespace=namespace,
                                                             job_name=job)
                             .order_by(LineageRunRow.updated_at.desc()))
            return [_run_dict(r) for r in rows]

    def run(self, run_id: str) -> dict[str, Any] | None:
        with self.catalog.session() as s:
            row = s.get(LineageRunRow, run_id)
            if row is None:
                return None
            out = _run_dict(row)
            io = s.scalars(select(LineageIORow).filter_by(run_id=run_id))
            out["inputs"] = [_io_dict(r) for r in io if r.direction == "in"]
            io = s.scalars(select(LineageIORow).filter_by(run_id=run_id))
            out["outputs"] = [_io_dict(r) for r in io if r.direction == "out"]
            return out

    def events(self, run_id: str | None = None) -> list[dict[str, Any]]:
        with self.catalog.session() as s:
            q = select(LineageEventRow).order_by(LineageEventRow.event_time,
                                                 LineageEventRow.id)
            if run_id:
                q = q.filter_by(run_id=run_id)
            return [r.body for r in s.scalars(q)]

    def dataset_versions(self, namespace: str, name: str) -> list[dict[str, Any]]:
        with self.catalog.session() as s:
            rows = s.scalars(select(LineageIORow).filter_by(namespace=namespace, name=name,
                                                            direction="out")
                             .order_by(LineageIORow.event_time))
            return [{**_io_dict(r), "createdByRun": r.run_id} for r in rows if r.version]

    # ---- graph -----------------------------------------------------------------------------
    def graph(self, node_id: str, depth: int = 20, run_id: str | None = None,
              version: str | None = None, as_of: datetime | None = None) -> dict[str, Any]:
        """Nodes reachable from ``node_id`` within ``depth`` hops, upstream and downstream.

        ``version`` (of a dataset node) or ``run_id`` (a task or DAG run) restrict the graph to
        the runs of that one DAG run; ``as_of`` to events at or before that time.
        """
        with self.catalog.session() as s:
            runs = {r.run_id: r for r in s.scalars(select(LineageRunRow))}
            io_rows = list(s.scalars(select(LineageIORow)))
        if as_of is not None:
            io_rows = [r for r in io_rows if _aware(r.event_time) <= as_of]  # type: ignore[operator]
        scope = self._scope(node_id, runs, io_rows, run_id, version)
        if scope is not None:
            io_rows = [r for r in io_rows if r.run_id in scope]
        nodes: dict[str, dict[str, Any]] = {}
        edges: set[tuple[str, str]] = set()
        for r in io_rows:
            run = runs.get(r.run_id)
            if run is None:
                continue
            job = f"job:{run.job_namespace}:{run.job_name}"
            ds = f"dataset:{r.namespace}:{r.name}"
            nodes.setdefault(job, {"id": job, "type": "JOB", "data": {
                "namespace": run.job_namespace, "name": run.job_name, "runs": {}}})
            nodes[job]["data"]["runs"][r.run_id] = _run_dict(run)
            data = nodes.setdefault(ds, {"id": ds, "type": "DATASET", "data": {
                "namespace": r.namespace, "name": r.name, "versions": {}}})["data"]
            if r.version:
                data["versions"][r.version] = _summary(r.facets)
            edges.add((ds, job) if r.direction == "in" else (job, ds))
        if node_id not in nodes:
            return {"graph": []}
        keep = _reachable(node_id, edges, depth)
        graph = []
        for nid in sorted(keep):
            node = nodes[nid]
            node["data"]["runs" if node["type"] == "JOB" else "versions"] = list(
                node["data"]["runs" if node["type"] == "JOB" else "versions"].values()
                if node["type"] == "JOB" else
                [{"version": k, **v} for k, v in node["data"]["versions"].items()])
            node["inEdges"] = [{"origin": a, "destination": b} for a, b in sorted(edges)
                               if b == nid and a in keep]
            node["outEdges"] = [{"origin": a, "destination": b} for a, b in sorted(edges)
                                if a == nid and b in keep]
            graph.append(node)
        return {"graph": graph}

    def _scope(self, node_id: str, runs: dict[str, LineageRunRow], io_rows: list[LineageIORow],
               run_id: str | None, version: str | None) -> set[str] | None:
        parent: str | None = None
        if version is not None and node_id.startswith("dataset:"):
            _, ns, name = parse_node_id(node_id)
            producing = [r.run_id for r in io_rows if r.direction == "out" and
                         r.namespace == ns and r.name == name and r.version == version]
            if not producing:
                return set()
            run_id = producing[-1]
        if run_id is not None:
            run = runs.get(run_id)
            parent = (run.parent_run_id or run.run_id) if run else run_id
        if parent is None:
            return None
        return {rid for rid, r in runs.items() if r.parent_run_id == parent or rid == parent}


def _reachable(start: str, edges: set[tuple[str, str]], depth: int) -> set[str]:
    out: dict[str, list[str]] = {}
    inn: dict[str, list[str]] = {}
    for a, b in edges:
        out.setdefault(a, []).append(b)
        inn.setdefault(b, []).append(a)
    seen = {start}
    for adjacency in (out, inn):  # downstream, then upstream
        queue = deque([(start, 0)])
        visited = {start}
        while queue:
            node, d = queue.popleft()
            if d >= depth:
                continue
            for nxt in adjacency.get(node, []):
                if nxt not in visited:
                    visited.add(nxt)
                    queue.append((nxt, d + 1))
        seen |= visited
    return seen


def _run_dict(r: LineageRunRow) -> dict[str, Any]:
    return {"id": r.run_id, "job": {"namespace": r.job_namespace, "name": r.job_name},
            "state": r.state,
            "startedAt": r.started_at.isoformat() if r.started_at else None,
            "endedAt": r.ended_at.isoformat() if r.ended_at else None,
            "parentRunId": r.parent_run_id,
            "conservation": (r.facets or {}).get("granary_conservation")}


def _io_dict(r: LineageIORow) -> dict[str, Any]:
    return {"namespace": r.namespace, "name": r.name, "version": r.version,
            "facets": r.facets, **_summary(r.facets)}


def _summary(facets: dict[str, Any]) -> dict[str, Any]:
    stats = facets.get("outputStatistics") or facets.get("dataQualityMetrics") or {}
    registry = facets.get("granary_registry") or {}
    return {"rowCount": stats.get("rowCount"), "size": stats.get("size") or stats.get("bytes"),
            "tag": registry.get("tag")}
