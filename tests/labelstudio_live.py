"""A real Label Studio server for tests, beside the stand-in of tests/labelstudio_server.py.

The `label-studio` package from PyPI (pinned with everything it pulls in, in
tests/labelstudio_requirements.txt) lives in its own virtual environment, never in Granary's:
its Django stack would pin half of Airflow's dependencies. The environment is built once per
machine in a per-user cache outside the clone (``~/.cache/granary/label-studio-<version>/``,
``$XDG_CACHE_HOME`` honoured), so that CI's fresh clone does not reinstall it every run: a stamp
file holding the lock's hash is written last (a half-built environment is rebuilt) and a file
lock keeps two pytest workers from building it at once. Beside the environment it keeps a
data directory whose database is already migrated (1 min of Django migrations); each server
starts from a copy of it in a temporary directory, on a free port of 127.0.0.1.

People sign in through Label Studio's web form as a person would, and take a Personal Access
Token (a JWT refresh token, what "Account & Settings" hands out): in Label Studio 1.23 a new
organisation accepts no legacy ``Token`` keys unless it is started with
``--enable-legacy-api-token``.

``python -m tests.labelstudio_live`` builds the environment (.ci/run does, before the tests,
so that the install is not charged to a test and its failure is printed).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

VERSION = "1.23.2"
LOCK = Path(__file__).with_name("labelstudio_requirements.txt")
# set by .ci/run: an environment that cannot be built fails the test instead of skipping it
REQUIRED = "GRANARY_TEST_REQUIRE_LABEL_STUDIO"
ADMIN = ("admin@granary.test", "granary-admin-pw")
INSTALL_TIMEOUT = 1500


class Unavailable(RuntimeError):
    """The Label Studio environment could not be built here (no PyPI, an install failure)."""


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "granary" / f"label-studio-{VERSION}"


def _lock_hash() -> str:
    return hashlib.sha256(LOCK.read_bytes()).hexdigest()


def _server_env(data: Path) -> dict[str, str]:
    """Label Studio reads any ``X``, ``LABEL_STUDIO_X`` or ``HEARTEX_X`` variable as its
    setting X (HOST, PORT, USERNAME, DEBUG, ...): it gets a clean environment, with its data
    in ``data`` and no calls home (PyPI version check, analytics, Sentry)."""
    keep = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL", "TMPDIR", "HOME")
            if k in os.environ}
    return {**keep, "LABEL_STUDIO_BASE_DATA_DIR": str(data), "LATEST_VERSION_CHECK": "false",
            "COLLECT_ANALYTICS": "false", "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": "",
            "PYTHONUNBUFFERED": "1"}


def _run(cmd: list[str], what: str, env: dict[str, str] | None = None,
         error: type[Exception] = Unavailable) -> None:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=INSTALL_TIMEOUT,
                              env=env, check=False)
    except subprocess.TimeoutExpired as e:
        raise error(f"{what} took more than {INSTALL_TIMEOUT} s: {' '.join(cmd)}") from e
    if done.returncode:
        output = "\n".join(line for line in (done.stdout + done.stderr).splitlines()
                           if not line.startswith("WARNING: Location"))
        raise error(f"{what} failed (exit {done.returncode}): {' '.join(cmd)}\n"
                    f"{output[-3000:]}")


def prepare(echo: Callable[[str], None] = lambda _m: None) -> Path:
    """The directory of the Label Studio environment (``venv/``, ``template/``), built on
    first use. Raises :class:`Unavailable` saying why when it cannot be built."""
    from filelock import FileLock

    home = cache_dir()
    stamp = home / "ready"
    want = _lock_hash()
    if stamp.exists() and stamp.read_text() == want:
        return home
    home.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(home) + ".lock", timeout=INSTALL_TIMEOUT + 300):
        if stamp.exists() and stamp.read_text() == want:
            return home  # another worker built it while this one waited
        shutil.rmtree(home, ignore_errors=True)  # half-built, or from another lock
        venv = home / "venv"
        started = time.monotonic()
        echo(f"building Label Studio {VERSION} in {home} (once per machine) ...")
        _run([sys.executable, "-m", "venv", str(venv)], "creating the Label Studio venv")
        _run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
              "--disable-pip-version-check", "-r", str(LOCK)],
             f"pip install of label-studio {VERSION} (from {LOCK.name})")
        # a migrated database to copy for each server: `user` migrates, then only looks up.
        # Installed but failing here is Label Studio not working, not missing: an error
        template = home / "template"
        template.mkdir()
        _run([str(venv / "bin" / "label-studio"), "user", "--username", "nobody@granary.test"],
             "migrating Label Studio's template database", env=_server_env(template),
             error=RuntimeError)
        if not (template / "label_studio.sqlite3").exists():
            raise RuntimeError(f"Label Studio left no database in {template}")
        stamp.write_text(want)
        echo(f"Label Studio {VERSION} ready in {time.monotonic() - started:.0f} s")
    return home


@dataclass
class Person:
    """Somebody signed in to Label Studio's web app (a session, as in a browser) with the
    Personal Access Token they made there."""

    email: str
    web: httpx.Client
    token: str
    id: int = 0

    def submit(self, task_id: int, result: list[dict[str, Any]]) -> dict[str, Any]:
        """Submit an annotation of a task, as the labelling page does."""
        answer = self.web.post(f"/api/tasks/{task_id}/annotations/",
                               json={"result": result, "lead_time": 2.5},
                               headers={"X-CSRFToken": self.web.cookies.get("csrftoken") or ""})
        answer.raise_for_status()
        return answer.json()  # type: ignore[no-any-return]


@dataclass
class LiveLabelStudio:
    url: str
    data: Path
    people: list[Person] = field(default_factory=list)  # the admin first

    @property
    def admin(self) -> Person:
        return self.people[0]

    def _web(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, follow_redirects=False)

    def _form(self, web: httpx.Client, path: str, fields: dict[str, str]) -> None:
        web.get(path).raise_for_status()  # sets the CSRF cookie
        sent = web.post(path, data={**fields, "csrfmiddlewaretoken":
                                    web.cookies.get("csrftoken") or ""},
                        headers={"Referer": f"{self.url}{path}"})
        if sent.status_code != 302:  # the form comes back (with its errors) when refused
            raise RuntimeError(f"Label Studio refused {path} for {fields.get('email')}: "
                               f"HTTP {sent.status_code}\n{sent.text[-1500:]}")

    def _person(self, web: httpx.Client, email: str) -> Person:
        made = web.post("/api/token/", headers={"X-CSRFToken": web.cookies.get("csrftoken") or "",
                                                "Referer": f"{self.url}/"})
        made.raise_for_status()
        me = web.get("/api/current-user/whoami")
        me.raise_for_status()
        person = Person(email, web, str(made.json()["token"]), int(me.json()["id"]))
        self.people.append(person)
        return person

    def sign_in(self, email: str, password: str) -> Person:
        web = self._web()
        self._form(web, "/user/login/", {"email": email, "password": password})
        return self._person(web, email)

    def sign_up(self, email: str, password: str) -> Person:
        web = self._web()
        self._form(web, "/user/signup/", {"email": email, "password": password,
                                          "how_find_us": "", "allow_newsletters": "false"})
        return self._person(web, email)


@contextmanager
def label_studio_server(tmp: Path) -> Iterator[LiveLabelStudio]:
    """A real Label Studio on a free port of 127.0.0.1 with its data under ``tmp`` and an
    admin (``ADMIN``) signed in; stopped (its process group) on exit. Needs :func:`prepare`."""
    from granary.stack import free_port_block

    home = prepare()
    data = tmp / "label-studio"
    shutil.copytree(home / "template", data)
    port = free_port_block(1, start=26000)
    log_path = data / "server.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [str(home / "venv" / "bin" / "label-studio"), "start", "--no-browser",
             "--internal-host", "127.0.0.1", "--port", str(port),
             "--username", ADMIN[0], "--password", ADMIN[1]],
            env=_server_env(data), cwd=data, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
    server = LiveLabelStudio(f"http://127.0.0.1:{port}", data)
    try:
        _wait_healthy(proc, server.url, port, log_path)
        server.sign_in(*ADMIN)
        yield server
    finally:
        for person in server.people:
            person.web.close()
        _stop(proc)


def _wait_healthy(proc: subprocess.Popen, url: str, port: int, log_path: Path) -> None:  # type: ignore[type-arg]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"Label Studio exited ({proc.returncode}) before answering; "
                               f"its log ({log_path}):\n{_tail(log_path)}")
        try:
            if httpx.get(f"{url}/health", timeout=2).json().get("status") == "UP":
                # Label Studio moves to another port when its own is taken: make sure the
                # server that answered is this one
                if f"127.0.0.1:{port}/" not in log_path.read_text(errors="replace"):
                    raise RuntimeError(f"another server answers on port {port}")
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.3)
    raise RuntimeError(f"Label Studio did not answer {url}/health in 180 s; its log:\n"
                       f"{_tail(log_path)}")


def _stop(proc: subprocess.Popen) -> None:  # type: ignore[type-arg]
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


if __name__ == "__main__":
    try:
        where = prepare(echo=lambda m: print(m, flush=True))
    except Unavailable as e:
        print(f"Label Studio is not available: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"Label Studio {VERSION}: {where}")
