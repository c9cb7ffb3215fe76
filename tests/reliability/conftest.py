"""The reliability suite (marker ``reliability``): each test reports its rows (fault or input,
outcome, records lost) through ``report``; tests/conftest.py prints them as one table at the
end of the session, from every worker."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Any:
    def add(case: str, outcome: str, lost: int) -> None:
        request.node.user_properties.append(("reliability", (case, outcome, lost)))
    return add
