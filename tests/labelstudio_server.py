"""A stand-in for a Label Studio server, for tests: the few REST endpoints Granary's client
uses (projects, task import, task list with annotations), with Label Studio's token header,
its JSON shapes and Django REST framework's pagination (404 past the last page). People are
played by ``annotate()``. Served over real HTTP by uvicorn in a thread."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request

from tests.webapp import serve_app


class FakeLabelStudio:
    def __init__(self, token: str) -> None:
        self.token = token
        self.projects: dict[int, dict[str, Any]] = {}
        self.tasks: dict[int, list[dict[str, Any]]] = {}
        self.requests: list[str] = []
        self._ids = itertools.count(1)
        self.app = self._build()

    def _auth(self, request: Request) -> None:
        self.requests.append(f"{request.method} {request.url.path}")
        if request.headers.get("authorization") != f"Token {self.token}":
            raise HTTPException(401, {"detail": "Authentication credentials were not provided."})

    def _build(self) -> FastAPI:
        app = FastAPI()

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
                raise HTTPException(404, {"detail": "Not found."})
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
            out = _page(shown, page, page_size, "tasks")
            out.update(total=len(rows), total_annotations=sum(len(t["annotations"])
                                                              for t in rows),
                       total_predictions=sum(len(t["predictions"]) for t in rows))
            return out

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
        raise HTTPException(404, {"detail": "Invalid page."})
    return {key: rows[start:start + size], "count": len(rows), "next": None, "previous": None}


@contextmanager
def label_studio(token: str = "ls-test-token") -> Iterator[tuple[str, FakeLabelStudio]]:
    fake = FakeLabelStudio(token)
    with serve_app(fake.app, probe="/api/projects/", start=14000) as url:
        yield url, fake
