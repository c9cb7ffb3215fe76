"""The catalog on SQLite and, when GRANARY_TEST_DATABASE_URL is set, PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import inspect

from storage.catalog import Catalog, CatalogError, Version

pytestmark = pytest.mark.integration


def _version(n: int, run: str) -> Version:
    return Version("reviews", n, f"reviews/v{n}", "f" * 40, "m" * 32, "c" * 64, 10 * n, run,
                   {"data.jsonl": {"sha256": "s"}}, {"passed": True}, datetime.now(UTC))


def test_migrate_is_idempotent_and_creates_tables(catalog_url: str) -> None:
    cat = Catalog(catalog_url)
    cat.migrate()
    cat.migrate()
    tables = set(inspect(cat.engine).get_table_names())
    assert {"datasets", "runs", "stage_results", "versions", "alembic_version"} <= tables


def test_dataset_run_stage_and_version_rows(catalog_url: str) -> None:
    cat = Catalog(catalog_url)
    cat.migrate()
    cat.upsert_dataset("reviews", title="Reviews", domain="shop", licence="MIT")
    cat.upsert_dataset("reviews", title="Reviews v2 title")
    assert [(d.name, d.title, d.domain) for d in cat.datasets()] == \
        [("reviews", "Reviews v2 title", "shop")]

    cat.start_run("reviews", "run-1", "full")
    cat.record_stage("reviews", "run-1", "collect", "success", "s3://w/m1", {"records": 5})
    cat.record_stage("reviews", "run-1", "collect", "success", "s3://w/m2", {"records": 6})
    rows = cat.stage_results("reviews", "run-1")
    assert [(r.stage, r.output_uri, r.counts) for r in rows] == \
        [("collect", "s3://w/m2", {"records": 6})]
    assert cat.latest_stage_result("reviews", "collect").output_uri == "s3://w/m2"
    assert cat.latest_stage_result("reviews", "publish") is None

    assert cat.next_version("reviews") == 1
    v1 = cat.add_version(_version(1, "run-1"))
    again = cat.add_version(_version(1, "run-1"))  # a retried publish of the same run
    assert again.version == v1.version == 1
    cat.add_version(_version(2, "run-2"))
    assert [v.version for v in cat.versions("reviews")] == [1, 2]
    assert cat.get_version("reviews").version == 2
    assert cat.get_version("reviews", 1).row_count == 10
    assert cat.version_for_run("reviews", "run-2").tag == "reviews/v2"
    assert cat.next_version("reviews") == 3

    cat.finish_run("reviews", "run-1", "success", "published reviews@v1")
    run = cat.run("reviews", "run-1")
    assert run.status == "success" and run.ended_at is not None


def test_unreachable_database_is_a_clear_error() -> None:
    cat = Catalog("postgresql+psycopg://nobody@127.0.0.1:9/none?connect_timeout=2")
    with pytest.raises(CatalogError, match="cannot migrate the catalog"):
        cat.migrate()


def test_search_and_filters_return_the_right_datasets(catalog_url: str) -> None:
    cat = Catalog(catalog_url)
    cat.migrate()
    cat.upsert_dataset("zh_reviews", title="Chinese reviews", description="商品评论",
                       domain="e-commerce", modality="text", task="sentiment-classification",
                       licence="MIT", language="zh", tags="sentiment,zh")
    cat.upsert_dataset("en_news", title="English news", description="Headlines",
                       domain="news", modality="text", task="topic-classification",
                       licence="CC-BY-4.0", language="en", tags="news")
    cat.upsert_dataset("prices", title="Shop prices", domain="e-commerce", modality="table",
                       licence="CC0-1.0", language="")
    for name, rows, grade in (("zh_reviews", 17000, "A"), ("en_news", 900, "C")):
        cat.add_version(Version(name, 1, f"{name}/v1", "f" * 40, "m", "c" * 64, rows, "r1",
                                {}, {"passed": True, "grade": grade}, datetime.now(UTC)))

    def names(**kw: object) -> list[str]:
        return [d.name for d, _ in cat.search(**kw)]  # type: ignore[arg-type]

    assert names() == ["en_news", "prices", "zh_reviews"]
    assert names(q="REVIEWS") == ["zh_reviews"] and names(q="评论") == ["zh_reviews"]
    assert names(q="news") == ["en_news"]  # by tag and title
    assert names(domain="e-commerce") == ["prices", "zh_reviews"]
    assert names(modality="table") == ["prices"]
    assert names(task="topic-classification") == ["en_news"]
    assert names(language="zh") == ["zh_reviews"]
    assert names(licence="mit") == ["zh_reviews"]
    assert names(grade="B") == ["zh_reviews"] and names(grade="C") == ["en_news", "zh_reviews"]
    assert names(min_rows=1000) == ["zh_reviews"] and names(max_rows=1000) == ["en_news", "prices"]
    assert names(domain="e-commerce", min_rows=1) == ["zh_reviews"]


def test_deprecation_and_rollback_move_latest_and_are_recorded(catalog_url: str) -> None:
    from storage.catalog import ReleaseError

    cat = Catalog(catalog_url)
    cat.migrate()
    cat.upsert_dataset("reviews", title="Reviews")
    for n in (1, 2, 3):
        cat.add_version(_version(n, f"run-{n}"))
    assert cat.latest("reviews").version == 3

    v3 = cat.deprecate("reviews", 3, "ana", "labels of batch 7 are wrong")
    assert v3.deprecated["by"] == "ana" and v3.deprecated["reason"].startswith("labels")
    assert cat.latest("reviews").version == 2  # the newest version not deprecated
    assert cat.get_version("reviews", 3).deprecated is not None  # kept, flagged
    with pytest.raises(ReleaseError, match="is deprecated"):
        cat.set_latest("reviews", 3, "ana", "try")
    with pytest.raises(ReleaseError, match="who .* and why"):
        cat.deprecate("reviews", 2, "ana", "  ")

    cat.set_latest("reviews", 1, "bo", "v2 dropped a source by mistake")
    assert cat.latest("reviews").version == 1
    assert [r.name for r, latest in cat.search() if latest and latest.version == 1] == \
        ["reviews"]
    cat.deprecate("reviews", 3, "ana", "fixed upstream", undo=True)
    assert cat.latest("reviews").version == 1  # the pin holds until the next publish
    with pytest.raises(ReleaseError, match="not deprecated"):
        cat.deprecate("reviews", 3, "ana", "again", undo=True)

    cat.add_version(_version(4, "run-4"))
    assert cat.latest("reviews").version == 4  # a new publish is latest again
    history = [(e.version, e.action, e.actor) for e in cat.release_events("reviews")]
    assert history == [(1, "publish", "granary"), (2, "publish", "granary"),
                       (3, "publish", "granary"), (3, "deprecate", "ana"),
                       (1, "rollback", "bo"), (3, "undeprecate", "ana"),
                       (4, "publish", "granary")]
    assert cat.release_events("reviews")[4].reason == "v2 dropped a source by mistake"
    with pytest.raises(ReleaseError, match="has no version 9"):
        cat.set_latest("reviews", 9, "bo", "typo")
