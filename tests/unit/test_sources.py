"""Source rules that need no server: the http safety checks and the licence rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from lifecycle.collect.sources import SqlConnector, check_url
from lifecycle.errors import PermanentError
from lifecycle.formats.readers import parse
from lifecycle.spec import HttpSource, SpecError, SqlSource, parse_spec

pytestmark = pytest.mark.unit

LICENCE = {"id": "CC-BY-4.0", "origin": "test", "legal_basis": "public"}


def http(**extra: object) -> HttpSource:
    return HttpSource.model_validate({"name": "api", "type": "http",
                                      "url": "https://api.example.org/v1/items",
                                      "allow_hosts": ["api.example.org", "*.cdn.example.org"],
                                      "licence": LICENCE, **extra})


def test_hosts_off_the_allow_list_are_refused() -> None:
    src = http(allow_private=True)  # so only the allow-list is under test
    check_url("https://api.example.org/v1/items?page=2", src)
    check_url("https://eu.cdn.example.org/x", src)
    for url in ("https://evil.example.com/", "https://api.example.org.evil.com/",
                "ftp://api.example.org/", "https://cdn.example.org.attacker/x"):
        with pytest.raises(PermanentError, match="refusing"):
            check_url(url, src)


@pytest.mark.parametrize("address,kind", [
    ("127.0.0.1", "loopback"), ("10.1.2.3", "private"), ("192.168.0.10", "private"),
    ("169.254.169.254", "link_local"), ("[::1]", "loopback"), ("0.0.0.0", "unspecified"),
])
def test_private_and_internal_addresses_are_refused(address: str, kind: str) -> None:
    host = address.strip("[]")
    src = http(allow_hosts=[host])
    with pytest.raises(PermanentError, match=kind) as e:
        check_url(f"http://{address}/data", src)
    assert "allow_private: true" in str(e.value)  # says what to do
    check_url(f"http://{address}/data", http(allow_hosts=[host], allow_private=True))


SPEC = """\
name: lic_test
title: Licence test
licence: {id: CC-BY-4.0}
owners: [{name: qa}]
schema:
  label_field: null
  fields: [{name: text}]
sources:
  - name: scraped
    type: files
    path: x/*.txt
    format: text
"""


def test_a_source_without_licence_is_refused_unless_accepted() -> None:
    with pytest.raises(SpecError, match="declares no licence") as e:
        parse_spec(SPEC, "lic_test.yaml")
    assert e.value.field == "sources[0]" and e.value.line == 9
    spec = parse_spec(SPEC + "    accept_unlicensed: true\n", "lic_test.yaml")
    assert spec.sources[0].provenance()["id"] == "NOASSERTION"
    with pytest.raises(SpecError, match="'unknown' is not a licence"):
        parse_spec(SPEC + "    licence: {id: unknown, origin: web, legal_basis: public}\n",
                   "lic_test.yaml")
    with pytest.raises(SpecError, match="legal_basis"):
        parse_spec(SPEC + "    licence: {id: MIT, origin: web, legal_basis: because}\n",
                   "lic_test.yaml")


def test_unknown_key_of_an_http_source_lists_http_keys(tmp_path: Path) -> None:
    text = SPEC.replace("    type: files\n    path: x/*.txt\n    format: text\n",
                        "    type: http\n    url: https://a.example/\n    allow_hosts: [a.example]"
                        "\n    records_pth: data\n    accept_unlicensed: true\n")
    with pytest.raises(SpecError) as e:
        parse_spec(text, "lic_test.yaml")
    assert e.value.field == "sources[0].records_pth"
    assert "Did you mean 'records_path'?" in str(e.value) and "pagination" in str(e.value)


def test_sql_source_needs_one_of_table_or_query_and_builds_a_watermarked_query() -> None:
    with pytest.raises(ValueError, match="exactly one of `table` or `query`"):
        SqlSource.model_validate({"name": "db", "type": "sql", "conn_id": "c",
                                  "licence": LICENCE})
    src = SqlSource.model_validate({"name": "db", "type": "sql", "conn_id": "c",
                                    "table": "shop.reviews", "watermark": "updated_at",
                                    "licence": LICENCE})
    from sqlalchemy.dialects import postgresql

    first, _ = SqlConnector(src, {}, "incremental").statement(postgresql.dialect())
    assert first == ("SELECT * FROM (SELECT * FROM shop.reviews) AS granary_q "
                     "ORDER BY granary_q.updated_at")
    later, params = SqlConnector(src, {"watermark": "2026-01-02T03:04:05",
                                       "watermark_type": "datetime"},
                                 "incremental").statement(postgresql.dialect())
    assert "WHERE granary_q.updated_at > :granary_since" in later
    assert params["granary_since"].year == 2026


def test_an_undecodable_line_is_quarantined_and_the_rest_kept() -> None:
    data = "好的\n".encode() + b"\xff\xfe broken\n" + "还行\n".encode()
    out = list(parse("text", data, "utf-8", "t"))
    assert [p.record["text"] for p in out if p.record] == ["好的", "还行"]
    bad = [p for p in out if p.record is None]
    assert [(p.line, p.reason) for p in bad] == [(2, "undecodable")]
