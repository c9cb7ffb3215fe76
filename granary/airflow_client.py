"""A small client for Airflow 3's REST API v2 (token from POST /auth/token)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import httpx


class AirflowError(RuntimeError):
    """Airflow answered with an error, or not at all."""


class DagImportError(AirflowError):
    """A DAG cannot load: the message is Airflow's import error, whole."""

    @classmethod
    def of(cls, dag_id: str, errors: list[dict[str, Any]]) -> DagImportError:
        return cls("\n".join(f"Airflow cannot import {e.get('filename', '?')}, so {dag_id} "
                             f"cannot run:\n{import_error_message(e)}" for e in errors))


_RAISED = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b[^\n]*$", re.MULTILINE)


def import_error_message(error: dict[str, Any]) -> str:
    """What an import error says: the exception's whole message (every line of it), without
    the traceback above it; the whole stack trace when it cannot tell where that begins."""
    trace = str(error.get("stack_trace") or "").rstrip()
    found = list(_RAISED.finditer(trace))
    return trace[found[-1].start():] if found else trace


class AirflowClient:
    def __init__(self, base_url: str, username: str, password: str, timeout: float = 30) -> None:
        self.base_url = base_url.rstrip("/")
        self._username, self._password = username, password
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)
        self._token: str | None = None

    def _auth(self) -> dict[str, str]:
        if self._token is None:
            try:
                r = self._http.post("/auth/token", json={"username": self._username,
                                                         "password": self._password})
            except httpx.HTTPError as e:
                raise AirflowError(f"Airflow at {self.base_url} did not answer ({e}); is the "
                                   "stack running (`granary status`)?") from e
            if r.status_code not in (200, 201):
                raise AirflowError(f"Airflow refused the login for {self._username!r} "
                                   f"({r.status_code}): check the password file")
            self._token = r.json()["access_token"]
        return {"Authorization": f"Bearer {self._token}"}

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        extra = kwargs.pop("headers", {})
        try:
            r = self._http.request(method, path, headers={**extra, **self._auth()}, **kwargs)
            if r.status_code == 401:  # token expired: log in again once
                self._token = None
                r = self._http.request(method, path, headers={**extra, **self._auth()},
                                       **kwargs)
        except httpx.HTTPError as e:
            raise AirflowError(f"{method} {path}: Airflow did not answer ({e})") from e
        return r

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        r = self.request(method, path, **kwargs)
        if r.status_code >= 400:
            raise AirflowError(f"{method} {path}: {r.status_code} {r.text[:500]}")
        return r.json()

    def health(self) -> dict[str, Any]:
        data: dict[str, Any] = self._http.get("/api/v2/monitor/health").json()
        return data

    def get_dag(self, dag_id: str) -> dict[str, Any] | None:
        r = self.request("GET", f"/api/v2/dags/{dag_id}")
        if r.status_code == 404:
            return None
        if r.status_code >= 400:
            raise AirflowError(f"GET dag {dag_id}: {r.status_code} {r.text[:300]}")
        data: dict[str, Any] = r.json()
        return data

    def import_errors(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/api/v2/importErrors").get("import_errors", []))

    def wait_for_dag(self, dag_id: str, timeout: float = 180,
                     blocking: Callable[[dict[str, Any]], bool] | None = None,
                     waiting: Callable[[float], None] | None = None) -> dict[str, Any]:
        """The DAG once Airflow has loaded it. An import error that ``blocking`` says concerns
        this DAG raises DagImportError at once, with its whole message; ``waiting`` is told
        the seconds waited so far after each look."""
        started = time.monotonic()
        while True:
            dag = self.get_dag(dag_id)
            if blocking is not None:
                found = [e for e in self.import_errors() if blocking(e)]
                if found:
                    raise DagImportError.of(dag_id, found)
            if dag is not None and not dag.get("is_stale"):
                return dag
            waited = time.monotonic() - started
            if waited >= timeout:
                break
            if waiting is not None:
                waiting(waited)
            time.sleep(2)
        errors = "\n".join(f"{e.get('filename', '?')}: {import_error_message(e)}"
                           for e in self.import_errors())
        raise AirflowError(f"DAG {dag_id} did not appear within {timeout:.0f}s. Import errors: "
                           + (f"\n{errors}" if errors else "none reported"))

    def unpause(self, dag_id: str) -> None:
        self._json("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        data = self._json("POST", f"/api/v2/dags/{dag_id}/dagRuns",
                          json={"logical_date": None, "conf": conf or {}})
        return str(data["dag_run_id"])

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        data: dict[str, Any] = self._json("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
        return data

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        data = self._json("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        return list(data.get("task_instances", []))

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> str:
        r = self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/"
                                f"{task_id}/logs/{try_number}", params={"full_content": True},
                         headers={"Accept": "application/json"})
        if r.status_code >= 400:
            return ""
        content = r.json().get("content", "")
        if isinstance(content, list):
            return "\n".join(str(c.get("event", c)) if isinstance(c, dict) else str(c)
                             for c in content)
        return str(content)
