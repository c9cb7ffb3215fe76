from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import granary.settings
from granary.settings import REPO_ROOT, Settings

pytestmark = pytest.mark.unit


def _checkout(folder: Path) -> Path:
    """A folder that looks like a Granary checkout (its pyproject names the project)."""
    (folder / "datasets").mkdir(parents=True)
    (folder / "pyproject.toml").write_text('[project]\nname = "granary"\nversion = "0"\n')
    return folder


def test_defaults_live_under_the_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _checkout(tmp_path)
    monkeypatch.chdir(tmp_path)
    s = Settings()
    assert s.home == tmp_path / ".granary" and s.datasets_dir == tmp_path / "datasets"
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


def test_the_nearest_checkout_above_the_current_folder_is_found(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _checkout(tmp_path / "work" / "granary")
    deep = root / "docs" / "a" / "b"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    s = Settings()
    assert s.home == root / ".granary" and s.datasets_dir == root / "datasets"
    assert str(root) in s.home_found_by and not s.home.exists()  # nothing created


def test_a_home_the_stack_made_counts_and_an_accidental_one_does_not(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    (project / ".granary").mkdir(parents=True)
    (project / ".granary" / "s3-credentials.json").write_text("{}")
    stray = tmp_path / "elsewhere"
    (stray / ".granary").mkdir(parents=True)
    (stray / ".granary" / "catalog.db").write_bytes(b"")  # what a read used to leave behind
    (project / "sub").mkdir()
    monkeypatch.chdir(project / "sub")
    assert Settings().home == project / ".granary"
    monkeypatch.chdir(stray)
    assert Settings().home == REPO_ROOT / ".granary"  # past the stray folder: the checkout


def test_outside_any_checkout_the_home_says_how_it_was_chosen(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(granary.settings, "REPO_ROOT", tmp_path / "site-packages")
    monkeypatch.chdir(tmp_path)
    s = Settings()
    assert s.home == tmp_path / ".granary"
    assert "GRANARY_HOME unset" in s.home_found_by and str(tmp_path) in s.home_found_by
    monkeypatch.setenv("GRANARY_HOME", str(tmp_path / "h"))
    assert Settings().home_found_by == "set by GRANARY_HOME"


def test_mask_hides_every_secret_and_url_passwords(tmp_path: Path) -> None:
    s = Settings(home=tmp_path, s3_secret_key="supersecretvalue", pii_salt="pepper-salt",
                 database_url="postgresql+psycopg://granary:db-pass-1@db/x")
    text = ("denied with supersecretvalue for postgresql+psycopg://granary:db-pass-1@db/x, "
            "redis://:broker-pw@r:6379/0, salt pepper-salt, pass db-pass-1")
    masked = s.mask(text)
    for secret in ("supersecretvalue", "db-pass-1", "broker-pw", "pepper-salt"):
        assert secret not in masked
    assert masked.count("***") == 5 and "postgresql+psycopg://***@db/x" in masked


@pytest.mark.parametrize(("text", "hidden"), [
    ("fatal: unable to access 'https://ghp_abc123XYZ@github.com/o/r.git/'",
     "fatal: unable to access 'https://***@github.com/o/r.git/'"),
    ("push to https://x-access-token:ghs_tok3n@github.com/o/r failed",
     "push to https://***@github.com/o/r failed"),
    ("redis://:broker-pw@r:6379/0 and s3://user@bucket/key",
     "redis://***@r:6379/0 and s3://***@bucket/key"),
])
def test_mask_hides_the_whole_user_info_of_any_url(tmp_path: Path, text: str,
                                                   hidden: str) -> None:
    assert Settings(home=tmp_path).mask(text) == hidden


@pytest.mark.parametrize("text", [
    "https://h.example/p?to=ana@example.org", "https://h.example/@scope/pkg",
    "mail ana@example.org", "git@github.com:o/r.git", "s3://granary-work/a@b/c"])
def test_mask_leaves_an_at_sign_that_is_no_url_credential(tmp_path: Path, text: str) -> None:
    assert Settings(home=tmp_path).mask(text) == text


def test_a_token_only_registry_url_is_hidden_wherever_it_appears(tmp_path: Path) -> None:
    s = Settings(home=tmp_path, registry_url="https://ghp_tokenvalue42@github.com/o/r.git")
    assert s.mask("auth failed for ghp_tokenvalue42") == "auth failed for ***"
