"""Credentials for sources, Label Studio and LLMs, from named connections (never from the spec).

The lifecycle does not know where connections live: the app installs the lookup (:func:`use`;
granary/connections.py installs Airflow's, so a connection is found the Airflow way:
``AIRFLOW_CONN_<ID>`` environment variables, a secrets backend, or the metadata database, Admin
-> Connections in the UI). A connection is any object with Airflow's ``Connection`` attributes
(``conn_type``, ``host``, ``schema``, ``login``, ``password``, ``port``, ``extra_dejson``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lifecycle.errors import SourceError

Lookup = Callable[[str], Any]
_lookup: Lookup | None = None


def use(lookup: Lookup) -> None:
    """Install the function that finds a connection by its id."""
    global _lookup
    _lookup = lookup

# Airflow connection types -> SQLAlchemy drivers installed with Granary
_DRIVERS = {"postgres": "postgresql+psycopg", "postgresql": "postgresql+psycopg",
            "sqlite": "sqlite", "mysql": "mysql+pymysql", "mssql": "mssql+pymssql"}


def get_connection(conn_id: str, what: str) -> Any:
    """The connection named ``conn_id``; ``what`` names the source asking."""
    if _lookup is None:
        raise SourceError(f"{what}: connection {conn_id!r} cannot be looked up: no connection "
                          "lookup is installed (granary.connections installs Airflow's)")
    try:
        return _lookup(conn_id)
    except Exception as e:  # AirflowNotFoundException, or no metadata database reachable
        raise SourceError(
            f"{what}: Airflow connection {conn_id!r} not found ({type(e).__name__}). Create it "
            f"in the Airflow UI (Admin -> Connections) or set AIRFLOW_CONN_{conn_id.upper()} "
            "to its URI.") from e


def sqlalchemy_url(conn_id: str, what: str) -> str:
    """A SQLAlchemy URL for a database connection. ``extra.sqlalchemy_scheme`` overrides the
    driver (``postgresql+psycopg2``, say)."""
    from sqlalchemy.engine import URL

    conn = get_connection(conn_id, what)
    extra = dict(conn.extra_dejson or {})
    scheme = extra.pop("sqlalchemy_scheme", None) or _DRIVERS.get(conn.conn_type or "")
    if scheme is None:
        raise SourceError(f"{what}: connection {conn_id!r} has type {conn.conn_type!r}; "
                          f"known types: {', '.join(sorted(_DRIVERS))}, or set "
                          "extra.sqlalchemy_scheme to a SQLAlchemy driver name")
    if scheme == "sqlite":
        path = conn.schema or conn.host or ""
        return f"sqlite:///{path}" if path else "sqlite://"
    url = URL.create(scheme, username=conn.login or None, password=conn.password or None,
                     host=conn.host or None, port=conn.port or None,
                     database=conn.schema or None,
                     query={k: str(v) for k, v in extra.items()})
    return url.render_as_string(hide_password=False)


def http_auth(conn_id: str, what: str) -> tuple[tuple[str, str] | None, dict[str, str]]:
    """(basic auth, headers) for an HTTP source: login+password is basic auth; a password
    alone (or ``extra.token``) is a bearer token; ``extra.headers`` are added as given."""
    conn = get_connection(conn_id, what)
    extra = dict(conn.extra_dejson or {})
    headers = {str(k): str(v) for k, v in (extra.get("headers") or {}).items()}
    token = extra.get("token") or (conn.password if not conn.login else None)
    if token:
        headers.setdefault("Authorization", f"Bearer {token}")
        return None, headers
    if conn.login:
        return (conn.login, conn.password or ""), headers
    return None, headers


def s3_credentials(conn_id: str, what: str) -> tuple[str, str, str | None]:
    """(access key, secret key, endpoint from ``extra.endpoint_url`` or None)."""
    conn = get_connection(conn_id, what)
    extra = dict(conn.extra_dejson or {})
    access = conn.login or extra.get("aws_access_key_id")
    secret = conn.password or extra.get("aws_secret_access_key")
    if not access or not secret:
        raise SourceError(f"{what}: connection {conn_id!r} has no access key (login) and "
                          "secret (password)")
    return access, secret, extra.get("endpoint_url")
