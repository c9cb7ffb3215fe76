"""A stand-in for a Label Studio server, for tests: the few REST endpoints Granary's client
uses (projects, task import, task list with annotations), with Label Studio's JSON shapes and
Django REST framework's pagination (404 past the last page). People are played by
``annotate()``. Served over real HTTP by uvicorn in a thread.

Its answers follow Label Studio 1.23's, as tests/integration/test_label_studio_live.py sees
them on the real server: the token it hands out is a Personal Access Token (a JWT refresh
token) that is exchanged at ``/api/token/refresh/`` for short-lived access tokens sent as
``Bearer``; a legacy ``Token`` key is refused, as a new organisation refuses it, unless the
stand-in is made with ``legacy=True`` (Label Studio's ``--enable-legacy-api-token``)."""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import jwt
from fastapi import FastAPI, HTTPException, Request

from tests.webapp import serve_app


class FakeLabelStudio:
    def __init__(self, legacy: bool = False) -> None:
        self.legacy = legacy
        self._key = secrets.token_hex(16)
        # what "Account & Settings" hands out: a legacy key, or a PAT
        self.token = secrets.token_hex(20) if legacy else self._jwt("refresh", 10 * 365 * 86400)
        self.projects: dict[int, dict[str, Any]] = {}
        self.tasks: dict[int, list[dict[str, Any]]] = {}
        self.requests: list[str] = []
        self._ids = itertools.count(1)
        self.app = self._build()

    def _jwt(self, kind: str, seconds: int) -> str:
        now = int(time.time())
        return jwt.encode({"token_type": kind, "exp": now + seconds, "iat": now,
                           "jti": secrets.token_hex(8), "user_id": "1"}, self._key, "HS256")

    def _auth(self, request: Request) -> None:
        self.requests.append(f"{request.method} {request.url.path}")
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme == "Token" and self.legacy and value == self.token:
            return
        if scheme == "Bearer":
            try:
                if jwt.decode(value, self._key, ["HS256"]).get("token_type") == "access":
                    return
            except jwt.InvalidTokenError:
                pass
        if not scheme:
            raise HTTPException(401, "Authentication credentials were not provided.")
        raise HTTPException(401, "Invalid token.")

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.exception_handler(HTTPException)
        async def error(request: Request, exc: HTTPException) -> Any:
            from fastapi.responses import JSONResponse

            return JSONResponse({"id": secrets.token_hex(8), "status_code": exc.status_code,
                                 "version": "1.23.2", "detail": exc.detail, "exc_info": None},
                                exc.status_code)

        @app.post("/api/token/refresh/")
        async def refresh(request: Request) -> dict[str, Any]:
            self.requests.append(f"{request.method} {request.url.path}")
            given = (await request.json()).get("refresh", "")
            try:
                if jwt.decode(given, self._key, ["HS256"]).get("token_type") == "refresh":
                    return {"access": self._jwt("access", 300)}
            except jwt.InvalidTokenError:
                pass
            raise HTTPException(401, "Token is invalid")

        @app.get("/api/projects/")
        def list_projects(request: Request, title: str = "", page: int = 1,
                          page_size: int = 30) -> dict[str, Any]:
            self._auth(request)
            found = [p for p in self.projects.values() if not title or p["title"] == title]
            return _page(found, page, page_size, "results")

        @app.post("/api/projects/", status_code=201)
        async def create_project(request: Request) -> dict[str, Any]:
            self._auth(request)
            body = await request.json()
            if not 3 <= len(body.get("title", "")) <= 50:  # as Label Studio 1.23 refuses it
                raise HTTPException(400, "Validation error")
            pid = next(self._ids)
            self.projects[pid] = {"id": pid, "title": body.get("title", ""),
                                  "label_config": body.get("label_config", ""),
                                  "expert_instruction": body.get("expert_instruction", "")}
            self.tasks[pid] = []
            return self.projects[pid]

        @app.post("/api/projects/{pid}/import", status_code=201)
        async def import_tasks(request: Request, pid: int) -> dict[str, Any]:
            self._auth(request)
            if pid not in self.projects:
                raise HTTPException(404, "Not found.")
            body = await request.json()
            for t in body:
                self.tasks[pid].append({"id": next(self._ids), "data": t["data"],
                                        "predictions": t.get("predictions", []),
                                        "annotations": [], "project": pid})
            return {"task_count": len(body), "annotation_count": 0,
                    "prediction_count": sum(len(t.get("predictions", [])) for t in body),
                    "duration": 0.01, "could_be_tasks_list": False, "data_columns": ["text"]}

        @app.get("/api/tasks/")
        def list_tasks(request: Request, project: int, page: int = 1, page_size: int = 30,
                       fields: str = "task_only") -> dict[str, Any]:
            self._auth(request)
            rows = self.tasks.get(project, [])
            shown = rows if fields == "all" else [
                {k: v for k, v in t.items() if k != "annotations"} for t in rows]
            # no count/next/previous here, unlike the other lists
            return {"tasks": _page(shown, page, page_size, "tasks")["tasks"],
                    "total": len(rows),
                    "total_annotations": sum(len(t["annotations"]) for t in rows),
                    "total_predictions": sum(len(t["predictions"]) for t in rows)}

        return app

    def annotate(self, project: int, granary_id: str, annotator: int, label: str = "",
                 result: list[dict[str, Any]] | None = None) -> None:
        """A person labels the task of ``granary_id``: a text's choice, or ``result`` as
        given (regions on an image)."""
        task = next(t for t in self.tasks[project] if t["data"]["granary_id"] == granary_id)
        task["annotations"].append({
            "id": next(self._ids), "completed_by": annotator, "was_cancelled": False,
            "ground_truth": False, "lead_time": 2.5, "task": task["id"], "project": project,
            "result": result if result is not None else [
                {"id": f"r{annotator}", "from_name": "label", "to_name": "text",
                 "type": "choices", "origin": "manual", "value": {"choices": [label]}}]})


def _page(rows: list[dict[str, Any]], page: int, size: int, key: str) -> dict[str, Any]:
    start = (page - 1) * size
    if page < 1 or (start >= len(rows) and page != 1):
        raise HTTPException(404, "Invalid page.")
    return {key: rows[start:start + size], "count": len(rows), "next": None, "previous": None}


@contextmanager
def label_studio(legacy: bool = False) -> Iterator[tuple[str, FakeLabelStudio]]:
    fake = FakeLabelStudio(legacy)
    with serve_app(fake.app, probe="/api/projects/", start=14000) as url:
        yield url, fake
