from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from granary.runtime import object_store
from granary.settings import Settings
from storage.objectstore import ObjectStore
from tests.services import postgres_schema_url


@pytest.fixture
def store(s3: Settings) -> ObjectStore:
    return object_store(s3)


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'catalog.db'}"
        return
    yield from postgres_schema_url(request.getfixturevalue("postgres_base"))
