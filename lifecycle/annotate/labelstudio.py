"""Label Studio through its API (label-studio-sdk): one project per dataset, the records
routed to people imported as tasks with the model's pre-annotations, completions pulled back.

The server and its API token come from an Airflow connection (``annotate.people.label_studio
.connection``): host (with scheme and port) is the URL, password (or ``extra.token``) the token:
a Personal Access Token (a JWT, which the SDK exchanges for short-lived access tokens; what
Label Studio 1.23 hands out) or a legacy token where the organisation still allows them.
Pushing is idempotent: tasks whose ``granary_id`` the project already holds are not imported
again, so a retried task never doubles them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from lifecycle.errors import PermanentError

log = logging.getLogger(__name__)
PAGE = 100
TITLE_MAX = 50  # Label Studio refuses longer project titles (and shorter than 3 characters)


@dataclass(frozen=True)
class Server:
    url: str
    token: str

    def client(self) -> Any:
        from label_studio_sdk.client import LabelStudio

        return LabelStudio(base_url=self.url, api_key=self.token, timeout=30)


def server(conn_id: str) -> Server:
    """The Label Studio server of an Airflow connection."""
    from lifecycle.connections import get_connection

    conn = get_connection(conn_id, "annotate.people.label_studio")
    extra = dict(conn.extra_dejson or {})
    host = str(conn.host or "").rstrip("/")
    if not host:
        raise PermanentError(f"Airflow connection {conn_id!r} has no host: set it to the Label "
                         "Studio URL, e.g. http://label-studio:8080")
    if "://" not in host:
        host = f"{conn.schema or 'http'}://{host}"
    if conn.port and host.count(":") < 2:
        host = f"{host}:{conn.port}"
    token = extra.get("token") or conn.password
    if not token:
        raise PermanentError(f"Airflow connection {conn_id!r} has no API token: put it in the "
                         "password (Label Studio: Account & Settings -> Personal Access Token)")
    return Server(host, str(token))


def project_title(dataset: str) -> str:
    """The default project of a dataset, ``Granary: <dataset>``. A name too long for Label
    Studio's 50 characters is cut and ends with a hash of the whole name, so that two long
    names sharing their beginning still get projects of their own."""
    import hashlib

    title = f"Granary: {dataset}"
    if len(title) <= TITLE_MAX:
        return title
    digest = hashlib.sha256(dataset.encode()).hexdigest()[:8]
    return f"{title[:TITLE_MAX - 9]}~{digest}"


def ensure_project(client: Any, title: str, config: str, instructions: str) -> int:
    """The id of the project called ``title``, created with ``config`` when missing."""
    # the first page only: the SDK's pager asks for pages past the last one, which Label
    # Studio answers with 404
    for project in client.projects.list(title=title, page_size=PAGE).items or []:
        if project.title == title:
            return int(project.id)
    created = client.projects.create(title=title, label_config=config,
                                     expert_instruction=instructions, show_instruction=True)
    log.info("label studio: created project %s (%s)", created.id, title)
    return int(created.id)


def tasks(client: Any, project: int) -> list[dict[str, Any]]:
    """Every task of ``project`` with its annotations, as plain dicts (the export's shape)."""
    out: list[dict[str, Any]] = []
    page = 1
    while True:
        pager = client.tasks.list(project=project, fields="all", page=page, page_size=PAGE)
        items = list(pager.items or [])
        out += [_plain(t) for t in items]
        total = int(getattr(pager.response, "total", 0) or 0)
        if not items or len(out) >= total:
            return out
        page += 1


def push(client: Any, project: int, new_tasks: list[dict[str, Any]]) -> dict[str, int]:
    """Import the tasks the project does not hold yet (matched on ``data.granary_id``)."""
    held = {(t.get("data") or {}).get("granary_id") for t in tasks(client, project)}
    missing = [t for t in new_tasks if t["data"]["granary_id"] not in held]
    if missing:
        client.projects.import_tasks(id=project, request=missing)
    return {"sent": len(new_tasks), "imported": len(missing), "already_there": len(new_tasks)
            - len(missing)}


def progress(client: Any, project: int, ids: set[str]) -> tuple[int, int]:
    """(tasks among ``ids`` with at least one completed annotation, tasks among ``ids``)."""
    done = total = 0
    for t in tasks(client, project):
        if (t.get("data") or {}).get("granary_id") not in ids:
            continue
        total += 1
        if any(not a.get("was_cancelled") and a.get("result")
               for a in t.get("annotations") or []):
            done += 1
    return done, total


def _plain(task: Any) -> dict[str, Any]:
    if isinstance(task, dict):
        return task
    import warnings

    # the SDK's task model types some fields loosely (annotations as str for some roles):
    # the values are kept as the server sent them, without pydantic's warnings about it
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="pydantic")
        data: dict[str, Any] = task.model_dump(mode="json", exclude_none=True) \
            if hasattr(task, "model_dump") else dict(task)
    return data
