"""The accessibility checks' plumbing against a real local HTTP server
(lifecycle/publish/reachable.py):
what is failed, what is not measured, retries, limits, and no presigned link in the logs."""

from __future__ import annotations

import hashlib
import http.server
import logging
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from lifecycle.publish import reachable
from lifecycle.spec import parse_spec
from storage.registry import DvcRegistry, RegistryError, RegistryTimeout

pytestmark = pytest.mark.unit

BODY = b"granary release bytes\n" * 100
SHA = hashlib.sha256(BODY).hexdigest()
SECRET = "X-Amz-Signature=5ec7e7d00d1e5ec7e7"


class _Handler(http.server.BaseHTTPRequestHandler):
    hits: dict[str, int] = {}

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = self.path.split("?")[0]
        n = self.hits[path] = self.hits.get(path, 0) + 1
        if path == "/ok" or (path == "/flaky" and n > 1):
            self._send(200, BODY)
        elif path == "/missing":
            self._send(404, b"NoSuchKey")
        elif path == "/denied":
            self._send(403, b"AccessDenied")
        elif path in ("/down", "/flaky"):
            self._send(503, b"SlowDown")
        elif path == "/trickle":  # a byte every 50 ms for 10 s
            self.send_response(200)
            self.send_header("Content-Length", "200")
            self.end_headers()
            for _ in range(200):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.05)

    def _send(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setattr(reachable, "BACKOFF", 0.01)
    _Handler.hits = {}
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _get(url: str, expected: str = SHA, limit: float = 30.0) -> reachable.Outcome:
    def once() -> reachable.Outcome:
        sha = reachable._download(url, None, time.monotonic() + limit)
        return reachable.OK if sha == expected else (reachable.FAILED, f"sha256 {sha}")

    return reachable._retrying(once)


def test_a_presigned_link_never_reaches_the_logs(server: str,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # the root at DEBUG: whatever a library logs is captured
    assert _get(f"{server}/ok?{SECRET}") == reachable.OK
    assert _get(f"{server}/down?{SECRET}")[0] == reachable.NOT_MEASURED
    assert _get(f"{server}/missing?{SECRET}")[0] == reachable.FAILED
    assert caplog.records, "the retries are logged"  # the capture works
    assert "X-Amz-Signature" not in caplog.text and "5ec7e7d00d" not in caplog.text


def test_4xx_and_a_wrong_sha256_fail_transient_errors_are_not_measured(server: str) -> None:
    assert _get(f"{server}/missing")[0] == reachable.FAILED
    assert _Handler.hits["/missing"] == 1  # a 404 is an answer: not tried again
    status, why = _get(f"{server}/denied")
    assert status == reachable.FAILED and "HTTP 403" in str(why)
    assert _get(f"{server}/ok", expected="0" * 64)[0] == reachable.FAILED
    status, why = _get(f"{server}/down")
    assert status == reachable.NOT_MEASURED and "HTTP 503" in str(why)
    assert f"after {reachable.ATTEMPTS} tries" in str(why)
    assert _Handler.hits["/down"] == reachable.ATTEMPTS
    assert _get(f"{server}/flaky") == reachable.OK  # one 503, then the file
    assert _Handler.hits["/flaky"] == 2
    port = server.rsplit(":", 1)[1]
    closed = server.replace(port, "9")  # discard port: connection refused
    status, why = _get(f"{closed}/ok")
    assert status == reachable.NOT_MEASURED and "ConnectError" in str(why)


def test_a_trickling_download_stops_at_the_files_limit(server: str) -> None:
    start = time.monotonic()
    status, why = _get(f"{server}/trickle", limit=0.5)
    assert status == reachable.NOT_MEASURED and "did not complete" in str(why)
    assert time.monotonic() - start < 5  # not the 10 s the server would take


def test_an_exception_in_a_check_is_its_recorded_failure() -> None:
    def broken() -> reachable.Outcome:
        return {}["x"]  # type: ignore[no-any-return]

    status, why = reachable._retrying(broken)
    assert status == reachable.FAILED and "KeyError" in str(why)
    card = reachable._validated(lambda path: 1 / 0, Path("croissant.json"), set())
    assert card[0] == reachable.FAILED and "ZeroDivisionError" in str(card[1])


def test_a_registry_process_past_its_limit_is_stopped(tmp_path: Path) -> None:
    registry = DvcRegistry(str(tmp_path / "reg"), {"url": "s3://b/dvc"}, {},
                           tmp_path / "lock")
    start = time.monotonic()
    with pytest.raises(RegistryTimeout, match=r"within 0\.5 s"):
        registry._run([sys.executable, "-c", "import time; time.sleep(30)"], tmp_path,
                      "a sleeping process", timeout=0.5)
    assert time.monotonic() - start < 10


class _Registry:
    """fetch_file raising what a registry would (unit double: the process is tested above
    and in tests/integration/test_quality.py)."""

    def __init__(self, error: Exception) -> None:
        self.error, self.calls = error, 0

    def fetch_file(self, *args: Any, **kwargs: Any) -> Path:
        self.calls += 1
        assert kwargs["timeout"] == reachable.DVC_LIMIT
        raise self.error


@pytest.mark.parametrize("error,status,calls", [
    (RegistryTimeout("registry: dvc get did not finish within 600 s"), "not_measured", 1),
    (RegistryError("registry: dvc get failed (exit 1): 503 Service Unavailable"),
     "not_measured", 3),
    (RegistryError("registry: dvc get failed (exit 1): unknown revision 'x/v9'"), "failed", 1),
])
def test_dvc_get_errors_are_sorted_into_failed_and_not_measured(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, error: Exception, status: str,
        calls: int) -> None:
    from storage.catalog import Version

    monkeypatch.setattr(reachable, "BACKOFF", 0.01)
    v = Version(dataset="d", version=1, tag="d/v1", git_rev="", dvc_md5="", content_hash="",
                row_count=1, run_id="r", files={"data.parquet": {"sha256": SHA}}, quality={},
                created_at=datetime(2026, 1, 1, tzinfo=UTC))
    registry = _Registry(error)
    outcome = reachable._dvc_get(v, registry, "data.parquet",  # type: ignore[arg-type]
                                 tmp_path / "data.parquet")
    assert outcome[0] == status and registry.calls == calls


CARD = ("---\nlicense: cc-by-4.0\npretty_name: X\nsize_categories: [n<1K]\nconfigs:\n"
        "- config_name: default\n  data_files: [{split: train, path: data.parquet}]\n---\n# X\n")


@pytest.mark.parametrize("text,files,problem", [
    (CARD, {"data.parquet", "README.md"}, None),
    (CARD, {"README.md"}, "does not hold"),
    (CARD.replace("license: cc-by-4.0\n", ""), {"data.parquet"}, "lacks ['license']"),
    (CARD.replace("cc-by-4.0", "noassertion"), {"data.parquet"}, "without a licence"),
    (CARD.replace("- config_name: default\n  data_files: [{split: train, path: data.parquet}]",
                  "- just a string"), {"data.parquet"}, "not a list of mappings"),
    ("# X\n", {"data.parquet"}, "no YAML front matter"),
])
def test_the_card_check_names_what_is_wrong(tmp_path: Path, text: str, files: set[str],
                                            problem: str | None) -> None:
    path = tmp_path / "README.md"
    path.write_text(text, encoding="utf-8")
    found = reachable.card_problem(path, files)
    assert found is None if problem is None else problem in str(found)


@pytest.mark.parametrize("formats,data", [(["jsonl"], "data/jsonl/*.jsonl"),
                                          (["csv"], "data/csv/*.csv"),
                                          (["csv", "parquet"], "data/parquet/*.parquet")])
def test_the_card_names_the_data_files_the_release_holds(tmp_path: Path, formats: list[str],
                                                         data: str) -> None:
    """The card's configs name the parts of the format a consumer reads (a glob), and the
    card check finds them; a glob that matches no file of the release is named."""
    from lifecycle.publish import card
    from tests.unit.test_quality import SPEC_TEXT

    spec = parse_spec(SPEC_TEXT + f"publish: {{formats: {formats}}}\n", "graded.yaml")
    files = {f"data/{f}/part-{i:05d}.{f}": {"sha256": "0" * 64, "bytes": 1, "rows": 5}
             for f in formats for i in range(2)}
    text = card.card(spec, {"version": 1, "row_count": 10, "content_hash": "h",
                            "files": files}, {},
                     {"added": 10, "removed": 0, "relabelled": 0,
                      "grade": {"from": None, "to": "A"}}, {}, "/registry")
    path = tmp_path / "README.md"
    path.write_text(text, encoding="utf-8")
    assert reachable.card_problem(path, {*files, "README.md"}) is None
    assert f"{spec.name}/{data}" in text  # the loading snippet reads it too
    assert f"path: {data}" in text
    others = {n for n in files if not n.startswith(data.split("*")[0])}
    assert f"name ['{data}']" in str(reachable.card_problem(path, {*others, "README.md"}))
