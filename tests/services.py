"""Real services for the integration and e2e layers: a SeaweedFS S3 server on free ports and
catalog databases (SQLite always, PostgreSQL when GRANARY_TEST_DATABASE_URL is set)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import create_engine, text

from granary.settings import Settings
from granary.stack import S3_PORT_BLOCK, LocalStack, free_port_block


def start_s3(home: Path) -> tuple[Settings, LocalStack]:
    """Start `weed mini` under ``home`` on a free block of ports; return settings that reach it."""
    settings = Settings(home=home, s3_port=free_port_block(S3_PORT_BLOCK),
                        airflow_port=free_port_block(1, start=30000))
    stack = LocalStack(settings, echo=lambda _msg: None)
    stack.start_s3()
    return stack.settings_with_credentials(), stack


def postgres_url() -> str | None:
    return os.environ.get("GRANARY_TEST_DATABASE_URL") or None


def postgres_schema_url(base: str) -> Iterator[str]:
    """A throw-away schema in the test database, dropped afterwards."""
    schema = f"granary_test_{uuid.uuid4().hex[:10]}"
    engine = create_engine(base)
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()
