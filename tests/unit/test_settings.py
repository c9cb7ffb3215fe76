from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from granary.settings import Settings

pytestmark = pytest.mark.unit


def test_defaults_live_under_the_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = Settings()
    assert s.home == tmp_path / ".granary"
    assert s.catalog_url == f"sqlite:///{tmp_path / '.granary' / 'catalog.db'}"
    assert s.registry == str(tmp_path / ".granary" / "registry.git")
    assert s.inbox_dir == tmp_path / ".granary" / "inbox"
    assert s.endpoint == "127.0.0.1:8333"
    assert s.api_url == "http://127.0.0.1:8080"


def test_environment_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRANARY_HOME", str(tmp_path / "h"))
    monkeypatch.setenv("GRANARY_S3_PORT", "9999")
    monkeypatch.setenv("GRANARY_DATABASE_URL", "postgresql+psycopg://u@db/x")
    s = Settings()
    assert s.home == tmp_path / "h"
    assert s.endpoint == "127.0.0.1:9999"
    assert s.catalog_url == "postgresql+psycopg://u@db/x"


def test_secrets_are_hidden_from_repr(tmp_path: Path) -> None:
    s = Settings(home=tmp_path, s3_access_key="AKIAVISIBLE", s3_secret_key="supersecretvalue")
    assert "supersecretvalue" not in repr(s) and "supersecretvalue" not in str(s)
    assert s.to_minio()["secret_key"] == "supersecretvalue"
    assert "supersecretvalue" not in json.dumps(s.to_dvc_remote())


def test_credentials_file_written_by_the_stack_is_read(tmp_path: Path) -> None:
    (tmp_path / "s3-credentials.json").write_text(json.dumps(
        {"access_key": "ak", "secret_key": "sk"}))
    s = Settings(home=tmp_path)
    assert s.s3_env()["AWS_ACCESS_KEY_ID"] == "ak"
    assert s.s3_env()["AWS_SECRET_ACCESS_KEY"] == "sk"


def test_missing_credentials_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="granary up"):
        Settings(home=tmp_path).to_minio()


def test_to_env_round_trips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = Settings(home=tmp_path, s3_port=9100, s3_access_key="a", s3_secret_key="b")
    for k, v in s.to_env().items():
        monkeypatch.setenv(k, v)
    again = Settings()
    assert again.endpoint == s.endpoint and again.home == s.home
    assert again.catalog_url == s.catalog_url and again.registry == s.registry
    assert os.environ["GRANARY_S3_SECRET_KEY"] == "b"
