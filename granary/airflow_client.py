"""A small client for Airflow 3's REST API v2 (token from POST /auth/token)."""

from __future__ import annotations

import time
from typing import Any

import httpx


class AirflowError(RuntimeError):
    """Airflow answered with an error, or not at all."""


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

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dag = self.get_dag(dag_id)
            if dag is not None:
                return dag
            time.sleep(2)
        errors = "; ".join(e.get("stack_trace", "")[-300:] for e in self.import_errors())
        raise AirflowError(f"DAG {dag_id} did not appear within {timeout:.0f}s. "
                           f"Import errors: {errors or 'none reported'}")

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
