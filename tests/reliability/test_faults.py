"""Faults really injected: the catalog's PostgreSQL goes away in the middle of publishing (a
TCP proxy in front of the real server is cut, every open connection with it), and comes
back for the retry."""

from __future__ import annotations

import contextlib
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from granary.settings import Settings
from lifecycle import evaluate, publish
from storage.catalog import CatalogError
from tests.graded import SPEC, context, graded_settings, until_evaluate

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


def test_the_catalog_lost_while_publishing_leaves_no_half_version(
        s3: Settings, tmp_path: Path, proxied_catalog: tuple[str, CutProxy],
        report: Any) -> None:
    url, proxy = proxied_catalog
    s = graded_settings(s3, tmp_path, database_url=url)
    assert s.catalog_url == url
    ctx = context(s, SPEC, "run-fault")
    ev = evaluate.run(ctx, until_evaluate(ctx))
    rows = ev.counts["kept"]
    real = ctx.registry.publish

    def then_cut(*args: Any, **kwargs: Any) -> Any:  # the registry commits, then the
        out = real(*args, **kwargs)                   # database goes away
        proxy.cut()
        return out

    ctx.registry.publish = then_cut  # type: ignore[method-assign]
    with pytest.raises(CatalogError) as failed:
        publish.run(ctx, ev.to_xcom())
    message = str(failed.value)
    assert "catalog write failed" in message and "Is the database running" in message
    proxy.restore()
    ctx.registry.publish = real  # type: ignore[method-assign]
    # back: nothing was published in the catalog, whatever the registry holds
    assert ctx.catalog.versions("graded_reviews") == []
    again = publish.run(ctx, ev.to_xcom())  # the task's retry
    assert again.counts["version"] == 1
    assert [v.version for v in ctx.catalog.versions("graded_reviews")] == [1]
    assert ctx.registry.tags("graded_reviews") == {1: "graded_reviews/v1"}  # tagged once
    version = ctx.catalog.get_version("graded_reviews", 1)
    assert version is not None and version.row_count == rows
    report("the catalog database lost while publishing",
           f"clear failure ({message[:60]}...); no version in the catalog; the retry reused "
           f"the registry's commit: one v1 of {rows} rows", rows - version.row_count)


# ---- the S3 server stopped mid-stage ---------------------------------------------------------
def _outage_after(store: Any, calls: int, stack: Any, back_after: float | None) -> list[str]:
    """After ``calls`` writes, stop the S3 server (SIGTERM, then SIGKILL) from another
    thread and, unless ``back_after`` is None, start it again that many seconds later."""
    import time

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


@pytest.fixture
def own_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, Any]]:
    """An S3 server of this test's own, since the test stops it."""
    from tests.services import start_s3

    settings, stack = start_s3(tmp_path_factory.mktemp("own-s3"))
    yield settings, stack
    stack.down(grace=5)


def test_the_s3_server_stopped_mid_stage_and_back_within_the_retry_window(
        own_s3: tuple[Settings, Any], tmp_path: Path, report: Any) -> None:
    from lifecycle import collect, preprocess

    settings, stack = own_s3
    s = graded_settings(settings, tmp_path)
    ctx = context(s, SPEC, "run-outage")
    up = collect.run(ctx).to_xcom()
    events = _outage_after(ctx.store, 2, stack, back_after=1.0)
    result = preprocess.run(ctx, up)
    assert events == ["stopped", "started"]  # the server really went away and came back
    c = result.counts
    assert c["in"] == c["kept"] + c["quarantined"] + c["merged"] == up["counts"]["records"]
    report("the S3 server stopped during a stage, back 1 s later",
           f"the stage completed through the store's retries ({c['kept']} kept, "
           f"{c['merged']} merged)", c["in"] - c["kept"] - c["quarantined"] - c["merged"])


def test_the_s3_server_gone_beyond_the_window_fails_clearly_and_resumes(
        own_s3: tuple[Settings, Any], tmp_path: Path, report: Any) -> None:
    from lifecycle import collect, preprocess
    from storage.objectstore import StorageError

    settings, stack = own_s3
    s = graded_settings(settings, tmp_path)
    ctx = context(s, SPEC, "run-gone")
    up = collect.run(ctx).to_xcom()
    events = _outage_after(ctx.store, 2, stack, back_after=None)
    with pytest.raises(StorageError) as failed:
        preprocess.run(ctx, up)
    assert events == ["stopped"] and "did not answer" in str(failed.value)
    assert "granary status" in str(failed.value)
    stack.start_s3()  # the operator brings it back; the retried task resumes the stage
    again = preprocess.run(context(s, SPEC, "run-gone"), up)
    c = again.counts
    assert c["in"] == c["kept"] + c["quarantined"] + c["merged"] == up["counts"]["records"]
    report("the S3 server gone beyond the retry window",
           f"clear failure ({str(failed.value)[:70]}...); after a restart the stage's retry "
           "completed from collection's output", 0)


# ---- SIGKILL in the middle of a write ----------------------------------------------------------
def _killed_during_a_write(s: Settings, up: dict[str, Any], kill_at: int) -> None:
    """Child process: preprocess, SIGKILLed by itself while its ``kill_at``-th object is half
    written (uploaded under its temporary key, not yet promoted)."""
    import os
    import signal

    from lifecycle import preprocess

    ctx = context(s, SPEC, "run-killed")
    real = ctx.store.promote
    count = [0]

    def promote(bucket: str, tmp_key: str, key: str, size: int | None = None) -> Any:
        count[0] += 1
        if count[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(bucket, tmp_key, key, size=size)

    ctx.store.promote = promote  # type: ignore[method-assign]
    preprocess.run(ctx, up)


def test_a_stage_killed_mid_write_retries_to_byte_identical_output(
        s3: Settings, tmp_path: Path, report: Any) -> None:
    import multiprocessing

    from lifecycle import collect, preprocess
    from lifecycle.shards import read_manifest, read_table
    from storage import keys

    s = graded_settings(s3, tmp_path)
    ctx = context(s, SPEC, "run-killed")
    up = collect.run(ctx).to_xcom()
    child = multiprocessing.get_context("fork").Process(
        target=_killed_during_a_write, args=(s, up, 4))
    child.start()
    child.join(timeout=300)
    assert child.exitcode == -9  # SIGKILL
    prefix = keys.stage_prefix("graded_reviews", "run-killed", "preprocess")
    left = [o.key for o in ctx.store.list(s.bucket_work, prefix)]
    assert left and not any(k.endswith("manifest.json") for k in left)  # no output claimed
    for key in left:  # every object that is visible is whole
        body = ctx.store.get_bytes(s.bucket_work, key)
        assert body[:4] == b"PAR1" and body[-4:] == b"PAR1" if key.endswith(".parquet") \
            else body
    retry = preprocess.run(context(s, SPEC, "run-killed"), up)
    clean = preprocess.run(context(s, SPEC, "run-clean"), up)
    got, want = (read_manifest(ctx.store, r.manifest_uri) for r in (retry, clean))
    assert [x["sha256"] for x in got["shards"]] == [x["sha256"] for x in want["shards"]]
    assert retry.counts == clean.counts
    records = read_table(ctx.store, got)
    assert records["id"].is_unique and len(records) == retry.counts["kept"]
    report("SIGKILL of a stage in the middle of a write",
           f"no manifest and no partial object visible; the retry's {len(got['shards'])} "
           "shards byte-identical (sha256) to an uninterrupted run's, no record twice",
           retry.counts["in"] - retry.counts["kept"] - retry.counts["quarantined"]
           - retry.counts["merged"])
