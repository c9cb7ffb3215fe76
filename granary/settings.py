"""The one typed settings object, read from GRANARY_* environment variables once, at the edge.

Library code (lifecycle, storage, lineage) never reads the environment: the front doors
(CLI, DAG tasks, the local stack) build a :class:`Settings` and hand each consumer what it
needs through an adapter (``to_minio()``, ``to_dvc_remote()``, ``s3_env()``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from lineage.redact import hide_url_credentials, url_credentials

CREDENTIALS_FILE = "s3-credentials.json"
"""File under the home where the local stack keeps the S3 credentials it generated (0600)."""
LINEAGE_KEY_FILE = "lineage-credentials.json"
"""File under the home with the lineage API key the local stack generated (0600)."""

REPO_ROOT = Path(__file__).resolve().parents[1]
HOME_DIR = ".granary"
"""The home's folder name inside a checkout (or any project folder)."""
STACK_FILES = (CREDENTIALS_FILE, "registry.git", "airflow")
"""Files `granary up` writes into a home: a folder holding one is a home, not an accident."""


def is_checkout(folder: Path) -> bool:
    """A Granary checkout: its pyproject.toml names the project ``granary``."""
    try:
        text = (folder / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return False
    return re.search(r'(?m)^name\s*=\s*"granary"\s*$', text) is not None


def is_home(folder: Path) -> bool:
    """A home the local stack made (not an empty folder left by chance)."""
    return any((folder / name).exists() for name in STACK_FILES)


def find_root(start: Path) -> Path | None:
    """The nearest folder at or above ``start`` that is a Granary checkout or holds a home
    the stack made (``.granary/``)."""
    for folder in (start, *start.parents):
        if is_checkout(folder) or is_home(folder / HOME_DIR):
            return folder
    return None


class Settings(BaseSettings):
    """Everything Granary needs to know about where things live, with embedded defaults."""

    model_config = SettingsConfigDict(env_prefix="GRANARY_", extra="ignore", frozen=True)

    home: Path = Field(default=Path(HOME_DIR), description="Granary's working folder; when "
                       "unset, .granary/ of the nearest checkout above the current folder, "
                       "else of the checkout Granary runs from (see `home_found_by`).")
    database_url: str | None = Field(
        default=None, description="Catalog database URL; SQLite under the home when unset."
    )
    datasets_dir: Path = Field(default=REPO_ROOT / "datasets", description="Dataset specs.")
    inbox: Path | None = Field(default=None, description="Root for `files` sources.")

    s3_host: str = "127.0.0.1"
    s3_port: int = 8333
    s3_endpoint: str | None = Field(
        default=None, description="host:port of the S3 server; the local one when unset."
    )
    s3_public_endpoint: str | None = Field(
        default=None, description="host:port where browsers reach the S3 server (presigned "
        "download links); the S3 endpoint when unset.")
    s3_secure: bool = False
    s3_region: str = "us-east-1"
    s3_access_key: SecretStr | None = None
    s3_secret_key: SecretStr | None = None
    bucket_raw: str = "granary-raw"
    bucket_work: str = "granary-work"
    bucket_registry: str = "granary-registry"
    bucket_releases: str = Field(
        default="granary-releases", description="Every published version's files as plain "
        "objects, <dataset>/v<N>/<file> (versioning on); the OpenLineage name of a release.")
    download_link_minutes: int = Field(default=15, ge=1, le=7 * 24 * 60,
                                       description="Lifetime of presigned download links.")
    download_via: Literal["presigned", "proxy"] = Field(
        default="presigned", description="presigned: downloads redirect to a short-lived S3 "
        "link (browsers must reach S3); proxy: the web app streams the file itself, so only "
        "the UI needs to be published")

    registry_url: str | None = Field(
        default=None, description="git URL of the DVC registry; a bare repo under the home."
    )

    airflow_host: str = "127.0.0.1"
    airflow_port: int = 8080
    airflow_url: str | None = None
    airflow_user: str = "admin"
    airflow_password: SecretStr | None = None
    airflow_executor: Literal["local", "celery"] = Field(
        default="local", description="local: `airflow standalone` (LocalExecutor); celery: "
        "API server, scheduler, DAG processor, triggerer and `celery_workers` Celery workers")
    airflow_database_url: str | None = Field(
        default=None, description="Airflow's metadata database; SQLite under the home when "
        "unset (the celery executor needs PostgreSQL or MySQL)")
    celery_broker_url: str | None = Field(default=None, description="the celery executor's "
                                          "broker, e.g. redis://127.0.0.1:6379/0")
    celery_workers: int = Field(default=2, ge=1, le=32)
    celery_concurrency: int = Field(default=2, ge=1, le=64, description="task slots a worker")
    rows_per_shard: int = Field(
        default=50_000, ge=1, description="records per work shard: what one mapped task "
        "holds, so its memory; smaller shards give more mapped tasks to spread over workers")

    lineage_namespace: str = "granary"
    lineage_api_key: SecretStr | None = Field(
        default=None, description="Bearer key for POST /api/v1/lineage; generated locally.")
    public_url: str = Field(default="", description="Where the Granary web app is served; "
                            "<Airflow URL>/granary when unset.")
    pii_salt: SecretStr | None = Field(
        default=None, description="Secret salt of `hash` pseudonyms for personal data.")

    _found_by: str = PrivateAttr(default="")

    @model_validator(mode="after")
    def _resolve(self) -> Settings:
        # frozen model: derived defaults are filled through object.__setattr__ once, here.
        if "home" in self.model_fields_set:
            self._found_by = "set by GRANARY_HOME"
        else:
            self._locate()
        home = self.home.expanduser().resolve()
        object.__setattr__(self, "home", home)
        if not self.public_url:
            object.__setattr__(self, "public_url", f"{self.api_url}/granary")
        if self.inbox is None:
            object.__setattr__(self, "inbox", home / "inbox")
        if self.s3_access_key is None or self.s3_secret_key is None:
            creds = _read_credentials(home / CREDENTIALS_FILE)
            if creds:
                object.__setattr__(self, "s3_access_key", SecretStr(creds["access_key"]))
                object.__setattr__(self, "s3_secret_key", SecretStr(creds["secret_key"]))
        if self.lineage_api_key is None:
            key = _read_json(home / LINEAGE_KEY_FILE).get("api_key")
            if key:
                object.__setattr__(self, "lineage_api_key", SecretStr(str(key)))
        if self.airflow_password is None:
            password = _read_airflow_password(self.airflow_home, self.airflow_user)
            if password:
                object.__setattr__(self, "airflow_password", SecretStr(password))
        return self

    def _locate(self) -> None:
        """No home given: the nearest checkout (or stack-made home) above the current folder,
        else the checkout this code runs from; its datasets/ too, unless one was given."""
        cwd = Path.cwd()
        root = find_root(cwd)
        if root is not None:
            self._found_by = f"the nearest Granary folder above {cwd}: {root}"
        elif is_checkout(REPO_ROOT):
            root = REPO_ROOT
            self._found_by = (f"no Granary folder above {cwd}, so the checkout Granary runs "
                              f"from: {root}")
        else:
            self._found_by = (f"no Granary folder above {cwd} and GRANARY_HOME unset, so "
                              f"{cwd / HOME_DIR}")
            return
        object.__setattr__(self, "home", root / HOME_DIR)
        if "datasets_dir" not in self.model_fields_set and (root / "datasets").is_dir():
            object.__setattr__(self, "datasets_dir", root / "datasets")

    @property
    def home_found_by(self) -> str:
        """How the home was chosen (said when something is missing from it)."""
        return self._found_by

    # ---- derived locations -------------------------------------------------------------
    @property
    def catalog_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'catalog.db'}"

    @property
    def endpoint(self) -> str:
        return self.s3_endpoint or f"{self.s3_host}:{self.s3_port}"

    @property
    def endpoint_url(self) -> str:
        return f"{'https' if self.s3_secure else 'http'}://{self.endpoint}"

    @property
    def registry(self) -> str:
        return self.registry_url or str(self.home / "registry.git")

    @property
    def airflow_home(self) -> Path:
        return self.home / "airflow"

    @property
    def api_url(self) -> str:
        return self.airflow_url or f"http://{self.airflow_host}:{self.airflow_port}"

    @property
    def inbox_dir(self) -> Path:
        assert self.inbox is not None  # filled by _resolve
        return self.inbox.expanduser().resolve()

    # ---- adapters ------------------------------------------------------------------------
    def require_s3_credentials(self) -> tuple[str, str]:
        if self.s3_access_key is None or self.s3_secret_key is None:
            raise RuntimeError(
                "No S3 credentials: set GRANARY_S3_ACCESS_KEY and GRANARY_S3_SECRET_KEY, "
                f"or start the local stack (`granary up`), which writes {CREDENTIALS_FILE} "
                f"under {self.home}."
            )
        return self.s3_access_key.get_secret_value(), self.s3_secret_key.get_secret_value()

    def to_minio(self) -> dict[str, Any]:
        """Keyword arguments for ``minio.Minio``."""
        access, secret = self.require_s3_credentials()
        return {
            "endpoint": self.endpoint,
            "access_key": access,
            "secret_key": secret,
            "secure": self.s3_secure,
            "region": self.s3_region,
        }

    def to_dvc_remote(self) -> dict[str, str]:
        """The registry's DVC remote: committed part (url, endpoint) only, never secrets."""
        return {"url": f"s3://{self.bucket_registry}/dvc", "endpointurl": self.endpoint_url}

    @property
    def registry_objects(self) -> tuple[str, str]:
        """Bucket and key prefix of the registry's DVC objects."""
        bucket, _, prefix = self.to_dvc_remote()["url"].removeprefix("s3://").partition("/")
        return bucket, prefix

    def s3_env(self) -> dict[str, str]:
        """Environment for subprocesses that talk S3 themselves (dvc, weed)."""
        access, secret = self.require_s3_credentials()
        return {
            "AWS_ACCESS_KEY_ID": access,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_DEFAULT_REGION": self.s3_region,
        }

    def mask(self, text: str) -> str:
        """``text`` with every secret these settings hold, and the credentials written in any
        URL (its whole user-info part: ``user:password@`` or a token alone), replaced by ``***``
        (for what is stored or shown, such as a failure's message)."""
        values = [v.get_secret_value() for v in (
            self.s3_secret_key, self.airflow_password, self.lineage_api_key, self.pii_salt)
            if v is not None]
        values += [v for url in (self.database_url, self.airflow_database_url,
                                 self.celery_broker_url, self.registry_url) if url
                   for v in url_credentials(url)]
        for value in sorted({v for v in values if len(v) >= 4}, key=len, reverse=True):
            text = text.replace(value, "***")
        return hide_url_credentials(text)

    def to_env(self) -> dict[str, str]:
        """GRANARY_* variables that make a child process see these same settings."""
        env = {
            "GRANARY_HOME": str(self.home),
            "GRANARY_DATASETS_DIR": str(self.datasets_dir),
            "GRANARY_INBOX": str(self.inbox_dir),
            "GRANARY_S3_ENDPOINT": self.endpoint,
            "GRANARY_S3_SECURE": str(self.s3_secure).lower(),
            "GRANARY_REGISTRY_URL": self.registry,
            "GRANARY_DATABASE_URL": self.catalog_url,
            "GRANARY_AIRFLOW_PORT": str(self.airflow_port),
            "GRANARY_PUBLIC_URL": self.public_url,  # the facets' _schemaURL (runtime.run_stage)
            "GRANARY_BUCKET_RAW": self.bucket_raw,
            "GRANARY_BUCKET_WORK": self.bucket_work,
            "GRANARY_BUCKET_REGISTRY": self.bucket_registry,
            "GRANARY_BUCKET_RELEASES": self.bucket_releases,
        }
        if self.lineage_api_key:
            env["GRANARY_LINEAGE_API_KEY"] = self.lineage_api_key.get_secret_value()
        if self.pii_salt:
            env["GRANARY_PII_SALT"] = self.pii_salt.get_secret_value()
        if self.s3_access_key and self.s3_secret_key:
            env["GRANARY_S3_ACCESS_KEY"] = self.s3_access_key.get_secret_value()
            env["GRANARY_S3_SECRET_KEY"] = self.s3_secret_key.get_secret_value()
        return env


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _read_credentials(path: Path) -> dict[str, str] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and {"access_key", "secret_key"} <= data.keys():
        return {"access_key": str(data["access_key"]), "secret_key": str(data["secret_key"])}
    return None


def _read_airflow_password(airflow_home: Path, user: str) -> str | None:
    path = airflow_home / "simple_auth_manager_passwords.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    value = data.get(user) if isinstance(data, dict) else None
    return str(value) if value else None


def load_settings(**overrides: Any) -> Settings:
    """Read the environment once; keyword arguments win over it (used by tests and the CLI)."""
    return Settings(**overrides)
