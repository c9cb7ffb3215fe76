"""Faults of the components, really injected, each followed by what a user does (the task's
retry) and counted from outside (tests/outcome.py) against the fault harness's uninterrupted
run (tests/reliability/faultharness.py):

- the catalog's PostgreSQL goes away while publishing (a TCP proxy in front of the real
  server is cut, every open connection with it): after the registry's push, and inside the
  transaction that writes the version;
- the S3 server is SIGKILLed in the middle of a multipart upload (a 23 MB raw object being
  landed) and started again; stopped between requests, back within the retry window or not;
- a stage SIGKILLed while an object is half written (uploaded under its temporary key);
- and a deliberately broken retry, whose writes are never promoted, which the comparison
  must catch: the check can fail.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from granary.settings import Settings
from storage.catalog import CatalogError
from tests.outcome import compare, read_outcome
from tests.reliability.faultharness import (
    DATASET,
    STAGES,
    Baseline,
    case_settings,
    context,
    make_baseline,
    run_case,
    run_from,
    run_stage,
    services,
)

pytestmark = pytest.mark.reliability


class CutProxy:
    """Forwards TCP connections from a local port to ``target``; ``cut()`` closes the
    listener and every open connection (the database is gone), ``restore()`` listens again
    on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        assert self.listener is not None
        with contextlib.suppress(OSError):  # wakes the accepting thread (close alone
            self.listener.shutdown(socket.SHUT_RDWR)  # would leave it listening)
        self.listener.close()
        with self.lock:
            for s in self.sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
            self.sockets.clear()


@pytest.fixture
def proxied_catalog(postgres_base: str) -> Iterator[tuple[str, CutProxy]]:
    """A throw-away schema in the test PostgreSQL, reached through a proxy that can be cut."""
    url = make_url(postgres_base)
    schema = f"granary_fault_{uuid.uuid4().hex[:8]}"
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    proxy = CutProxy((url.host or "127.0.0.1", url.port or 5432))
    via = url.set(host="127.0.0.1", port=proxy.port,
                  query={**url.query, "options": f"-csearch_path={schema}"})
    try:
        yield via.render_as_string(hide_password=False), proxy
    finally:
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


# ---- the catalog database cut while publishing ---------------------------------------------
WHERE = {"publish.after_registry": "after the registry's push",
         "catalog.version_row": "inside the version's transaction"}


@pytest.mark.parametrize("point", sorted(WHERE))
def test_the_catalog_cut_while_publishing_leaves_no_half_version(
        fault_baseline: Baseline, tmp_path: Path, proxied_catalog: tuple[str, CutProxy],
        point: str, monkeypatch: pytest.MonkeyPatch, report: Any) -> None:
    import lifecycle.publish.stage
    import storage.catalog.versions

    url, proxy = proxied_catalog
    s = case_settings(fault_baseline, tmp_path, own_raw=False, other={"database_url": url})
    assert s.catalog_url == url
    svc = services(s)
    svc.catalog.migrate()
    svc.catalog.upsert_dataset(DATASET, title="Reviews under faults")
    ctx = context(s, "run-cut")
    evaluated = run_stage(ctx, "evaluate", fault_baseline.xcoms["synthesize"])
    cuts: list[str] = []

    def cut_at(name: str) -> None:  # the named point, here: the database goes away
        if name == point:
            cuts.append(name)
            proxy.cut()

    for module in (lifecycle.publish.stage, storage.catalog.versions):
        monkeypatch.setattr(module, "fault_point", cut_at)
    with pytest.raises(CatalogError) as failed:
        run_stage(ctx, "publish", evaluated)
    monkeypatch.undo()
    message = str(failed.value)
    assert cuts == [point]
    assert "catalog write failed" in message and "Is the database running" in message
    proxy.restore()
    again = context(s, "run-cut")  # the task's retry, in a new process as Airflow's
    assert again.catalog.versions(DATASET) == []  # nothing half-written in the catalog
    run_stage(again, "publish", evaluated)
    c = compare(fault_baseline.outcome, read_outcome(s, DATASET))
    report(f"the catalog database cut {WHERE[point]}",
           f"clear failure ({message[:50]}...); retried: {c.summary()}", c.lost)
    assert c.same, c.summary()


# ---- the S3 server killed or stopped --------------------------------------------------------
@pytest.fixture
def own_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, Any]]:
    """An S3 server of this test's own, since the test stops it."""
    from tests.services import start_s3

    settings, stack = start_s3(tmp_path_factory.mktemp("own-s3"))
    yield settings, stack
    stack.down(grace=5)


def _server(s: Settings) -> dict[str, Any]:
    """The settings that name an S3 server, to move a case onto it."""
    return {k: getattr(s, k) for k in ("s3_host", "s3_port", "s3_endpoint", "s3_secure",
                                       "s3_region", "s3_access_key", "s3_secret_key")}


def _kill_s3(stack: Any, back_after: float | None, events: list[str]) -> None:
    """SIGKILL the S3 server (no graceful shutdown) and, unless ``back_after`` is None, start
    it again that many seconds later, from another thread."""
    proc = stack._alive("s3")
    assert proc is not None, "the test's S3 server is not running"
    for p in [*proc.children(recursive=True), proc]:
        p.kill()
    proc.wait(10)
    events.append("killed")
    if back_after is not None:
        def restart() -> None:
            time.sleep(back_after)
            stack.start_s3()
            events.append("started")
        threading.Thread(target=restart, daemon=True).start()


def test_the_s3_server_killed_mid_multipart_upload_and_restarted(
        s3: Settings, own_s3: tuple[Settings, Any], tmp_path: Path, report: Any) -> None:
    """A 23 MB raw object is landed in 5 MiB parts; the server is SIGKILLed once two parts
    are up and started again a second later. The store's retry starts the upload again."""
    import os

    import pandas as pd

    from tests.reliability.faultharness import write_inbox

    def with_big_file(base_home: Path) -> None:
        folder = base_home / "inbox" / "reviews"
        write_inbox(folder)
        rows = pd.read_csv(folder / "rows-0.csv")
        rows["padding"] = [os.urandom(35_000).hex() for _ in range(len(rows))]
        rows.to_csv(folder / "rows-big.csv", index=False)

    # the uninterrupted run of this inbox, on the session's server
    base = make_baseline(s3, tmp_path / "base", inbox=with_big_file, publishing=False)
    assert any(n > 1 for n in base.outcome.raw_versions.values()) is False
    settings, stack = own_s3
    s = case_settings(base, tmp_path / "case", own_raw=True, other=_server(settings))
    ctx = context(s, "run-mpu")
    client = ctx.store._client
    real = client._upload_part
    events: list[str] = []

    def upload_part(*args: Any, **kwargs: Any) -> Any:
        out = real(*args, **kwargs)
        number = kwargs.get("part_number", args[-1] if args else None)
        if number == 2 and not events:  # two parts up, the upload not completed
            _kill_s3(stack, 1.0, events)
        return out

    client._upload_part = upload_part
    run_from(ctx, "collect", None)
    assert events == ["killed", "started"]
    c = compare(base.outcome, read_outcome(s, DATASET))
    report("the S3 server SIGKILLed mid multipart upload, restarted 1 s later",
           f"the store's retry landed the 23 MB object again: {c.summary()}", c.lost)
    assert c.same, c.summary()


def _outage_after(store: Any, calls: int, stack: Any, back_after: float | None) -> list[str]:
    """After ``calls`` writes, stop the S3 server (SIGTERM, then SIGKILL) from another
    thread and, unless ``back_after`` is None, start it again that many seconds later."""
    events: list[str] = []
    real = store.write_atomic
    count = [0]

    def outage() -> None:
        stack.down(grace=2)
        events.append("stopped")
        if back_after is not None:
            time.sleep(back_after)
            stack.start_s3()
            events.append("started")

    def write_atomic(*args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        if count[0] == calls:
            thread = threading.Thread(target=outage, daemon=True)
            thread.start()
            thread.join(timeout=10)  # stopped before this write goes out
        return real(*args, **kwargs)

    store.write_atomic = write_atomic
    return events


def test_the_s3_server_stopped_mid_stage_and_back_within_the_retry_window(
        fault_baseline: Baseline, own_s3: tuple[Settings, Any], tmp_path: Path,
        report: Any) -> None:
    settings, stack = own_s3
    s = case_settings(fault_baseline, tmp_path, own_raw=True, other=_server(settings))
    ctx = context(s, "run-outage")
    up = run_stage(ctx, "collect", None)
    events = _outage_after(ctx.store, 2, stack, back_after=1.0)
    up = run_stage(ctx, "preprocess", up)
    assert events == ["stopped", "started"]  # the server really went away and came back
    run_from(ctx, "annotate", up)
    c = compare(fault_baseline.outcome, read_outcome(s, DATASET))
    report("the S3 server stopped during a stage, back 1 s later",
           f"the stage completed through the store's retries: {c.summary()}", c.lost)
    assert c.same, c.summary()


def test_the_s3_server_gone_beyond_the_window_fails_clearly_and_resumes(
        fault_baseline: Baseline, own_s3: tuple[Settings, Any], tmp_path: Path,
        report: Any) -> None:
    from storage.objectstore import ObjectStore, StorageError

    settings, stack = own_s3
    s = case_settings(fault_baseline, tmp_path, own_raw=True, other=_server(settings))
    ctx = context(s, "run-gone")
    up = run_stage(ctx, "collect", None)
    # a retry window of 3 tries over about 1 s instead of the policy's 6 over 15 s: the
    # same code path, waited for less (the window itself: tests/unit/test_retry.py)
    cfg = s.to_minio()
    ctx.store = ObjectStore.connect(cfg.pop("endpoint"), cfg.pop("access_key"),
                                    cfg.pop("secret_key"), retries=2, backoff=0.3, **cfg)
    events = _outage_after(ctx.store, 2, stack, back_after=None)
    with pytest.raises(StorageError) as failed:
        run_stage(ctx, "preprocess", up)
    assert events == ["stopped"] and "did not answer" in str(failed.value)
    assert "granary status" in str(failed.value)
    stack.start_s3()  # the operator brings it back; the retried task resumes the stage
    run_from(context(s, "run-gone"), "preprocess", up)
    c = compare(fault_baseline.outcome, read_outcome(s, DATASET))
    report("the S3 server gone beyond the retry window",
           f"clear failure ({str(failed.value)[:60]}...); after a restart, retried: "
           f"{c.summary()}", c.lost)
    assert c.same, c.summary()


# ---- SIGKILL in the middle of a write -------------------------------------------------------
def test_a_stage_killed_mid_write_shows_nothing_partial_and_retries_whole(
        fault_baseline: Baseline, tmp_path: Path, report: Any) -> None:
    """Killed while its 4th object is uploaded under its temporary key only: no manifest and
    no partial object is visible under the stage's prefix, and the retry publishes the same
    records as the uninterrupted run."""
    from storage import keys

    seen: list[str] = []

    def nothing_partial(s: Settings, run_id: str) -> None:
        store = services(s).store
        prefix = keys.stage_prefix(DATASET, run_id, "preprocess")
        left = [o.key for o in store.list(s.bucket_work, prefix)]
        assert left and not any(k.endswith("manifest.json") for k in left)
        for key in left:  # every object that is visible is whole
            body = store.get_bytes(s.bucket_work, key)
            assert body[:4] == body[-4:] == b"PAR1" if key.endswith(".parquet") else body
        seen.extend(left)

    result = run_case(fault_baseline, tmp_path, "store.before_promote@4", "preprocess",
                      after_kill=nothing_partial)
    assert result.exitcode == -9 and result.stage == "preprocess" and seen
    c = result.comparison
    report("SIGKILL of a stage in the middle of a write (temporary key only)",
           f"no manifest, {len(seen)} whole objects visible; retried: {c.summary()}", c.lost)
    assert c.same, c.summary()


# ---- the check can fail ---------------------------------------------------------------------
def test_a_broken_resume_that_never_promotes_is_caught_by_the_comparison(
        fault_baseline: Baseline, tmp_path: Path, report: Any) -> None:
    """The retry's object store promotes nothing (its writes stay under their temporary
    keys, never visible): the comparison with the uninterrupted run must count lost records.
    A harness that reported 0 here could not tell a good resume from a broken one."""

    def never_promote(ctx: Any) -> None:
        from storage.objectstore import ObjectInfo

        def promote(bucket: str, tmp_key: str, key: str, size: int | None = None) -> Any:
            return ObjectInfo(bucket, key, size or 0, "not-promoted")

        ctx.store.promote = promote

    result = run_case(fault_baseline, tmp_path, "collect.shard_written@2", "collect",
                      resume_prepare=never_promote, tolerate_resume=True)
    assert result.exitcode == -9
    c = result.comparison
    report("(deliberately broken) a retry whose writes are never promoted",
           f"the comparison caught it: {c.summary()}; the retry "
           f"{'raised ' + (result.resume_error or '')[:60] if result.resume_error else 'ran'}",
           c.lost)
    assert c.lost > 0 and not c.same
    assert c.lost == sum(len(r) for r in fault_baseline.outcome.records.values())


def test_every_stage_is_run_by_the_harness_and_every_documented_point_killed(
        repo: Path) -> None:
    """The harness's stage list is the lifecycle's (a stage added later gets fault cases), and
    the points docs/faults.md lists are the points the suite kills at."""
    import re

    from lifecycle.spec import STAGES as LIFECYCLE
    from tests.reliability import test_fault_points_publish as publishing
    from tests.reliability import test_fault_points_stages as stages

    assert tuple(LIFECYCLE) == STAGES
    documented = set(re.findall(r"^\| `([a-z_.]+)` \|", (repo / "docs" / "faults.md").read_text(),
                                re.MULTILINE))
    killed = {p.split("@")[0] for p, _ in stages.POINTS} | \
        {p.split("@")[0] for p in publishing.POINTS}
    assert documented == killed, (sorted(documented - killed), sorted(killed - documented))
    assert len(killed) >= 30


# ---- the catalog's PostgreSQL SIGKILLed ------------------------------------------------------
def test_the_catalog_postgres_killed_inside_the_version_transaction(
        fault_baseline: Baseline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        report: Any) -> None:
    """A PostgreSQL server of the test's own (pgserver's binaries), every one of its processes
    SIGKILLed while publishing's transaction holds the version's row uncommitted; started
    again (crash recovery), the task's retry publishes the version once."""
    import os

    import psutil

    import storage.catalog.versions
    from tests.services import _pgserver_bin, _run, start_postgres, stop_postgres

    case = "the catalog's PostgreSQL SIGKILLed inside the version's transaction"
    try:
        url, data = start_postgres()
    except Exception as e:  # noqa: BLE001 - no server, no case: said so in the table
        report(case, f"could not start a PostgreSQL of its own: {str(e)[:100]}", None)
        pytest.skip(f"{case}: could not start a PostgreSQL of its own: {e}")
    try:
        s = case_settings(fault_baseline, tmp_path, own_raw=False, other={"database_url": url})
        svc = services(s)
        svc.catalog.migrate()
        svc.catalog.upsert_dataset(DATASET, title="Reviews under faults")
        svc.catalog.dispose()
        ctx = context(s, "run-pgkill")
        evaluated = run_stage(ctx, "evaluate", fault_baseline.xcoms["synthesize"])
        killed: list[int] = []

        def kill_at(name: str) -> None:
            if name == "catalog.version_row":
                postmaster = psutil.Process(int((data / "postmaster.pid").read_text()
                                                .splitlines()[0]))
                for p in [postmaster, *postmaster.children(recursive=True)]:
                    p.kill()
                    killed.append(p.pid)
                postmaster.wait(10)

        monkeypatch.setattr(storage.catalog.versions, "fault_point", kill_at)
        with pytest.raises(CatalogError) as failed:
            run_stage(ctx, "publish", evaluated)
        monkeypatch.undo()
        assert killed and "catalog write failed" in str(failed.value)
        port = url.rsplit(":", 1)[1].split("/")[0]
        _run([str(_pgserver_bin() / "pg_ctl"), "-D", str(data), "-w", "-t", "60",
              "-l", str(data / "server.log"),
              "-o", f"-h 127.0.0.1 -p {port} -k {data} -c fsync=off", "start"],
             "starting PostgreSQL again", user="pgserver" if os.geteuid() == 0 else None)
        again = context(s, "run-pgkill")  # the task's retry
        assert again.catalog.versions(DATASET) == []  # the transaction died with the server
        run_stage(again, "publish", evaluated)
        again.catalog.dispose()
        c = compare(fault_baseline.outcome, read_outcome(s, DATASET))
        report(case, f"{len(killed)} server processes killed; clear failure; restarted "
               f"(crash recovery), retried: {c.summary()}", c.lost)
        assert c.same, c.summary()
    finally:
        stop_postgres(data)
