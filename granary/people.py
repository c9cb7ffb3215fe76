"""Waiting for people: a deferrable sensor that holds the annotate stage until the records
sent to Label Studio are labelled (or a timeout passes), without holding a worker slot.

The sensor hands the wait to a trigger that runs in Airflow's triggerer and polls the
project's tasks every ``poke_seconds``; the task resumes with the outcome, and the annotate
stage's second pass pulls the completions in.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator
from airflow.triggers.base import BaseTrigger, TriggerEvent


class LabelStudioTrigger(BaseTrigger):
    """Fires when ``min_share`` of the tasks ``ids`` in ``project`` carry a completed
    annotation, or when ``deadline`` passes."""

    def __init__(self, conn_id: str, project: int, ids: list[str], min_share: float,
                 poke_seconds: float, deadline: str) -> None:
        super().__init__()
        self.conn_id, self.project, self.ids = conn_id, project, ids
        self.min_share, self.poke_seconds, self.deadline = min_share, poke_seconds, deadline

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"conn_id": self.conn_id, "project": self.project, "ids": self.ids,
                 "min_share": self.min_share, "poke_seconds": self.poke_seconds,
                 "deadline": self.deadline})

    def _progress(self) -> tuple[int, int]:
        from lifecycle.annotate import labelstudio

        client = labelstudio.server(self.conn_id).client()
        return labelstudio.progress(client, self.project, set(self.ids))

    async def run(self) -> AsyncIterator[TriggerEvent]:
        deadline = datetime.fromisoformat(self.deadline)
        while True:
            try:
                done, total = await asyncio.to_thread(self._progress)
                error = ""
            except Exception as e:  # a server that is down for a while is waited out
                done, total, error = 0, len(self.ids), f"{type(e).__name__}: {e}"
                self.log.warning("label studio not reachable: %s", error)
            if total and done / total >= self.min_share:
                yield TriggerEvent({"status": "done", "done": done, "total": total})
                return
            if datetime.now(UTC) >= deadline:
                yield TriggerEvent({"status": "timeout", "done": done, "total": total,
                                    "error": error})
                return
            self.log.info("label studio project %s: %d of %d tasks labelled", self.project,
                          done, total)
            await asyncio.sleep(self.poke_seconds)


class WaitForPeople(BaseSensorOperator):
    """Defers until people have labelled what annotate sent to Label Studio; passes the
    annotate output through (with the outcome) when nothing was sent."""

    template_fields = ("upstream",)

    def __init__(self, *, upstream: Any, conn_id: str, min_share: float, poke_seconds: float,
                 timeout_minutes: float, on_timeout: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.upstream, self.conn_id = upstream, conn_id
        self.min_share, self.poke_seconds = min_share, poke_seconds
        self.timeout_minutes, self.on_timeout = timeout_minutes, on_timeout

    def poke(self, context: Any) -> bool:  # not used: the wait happens in the trigger
        return True

    def execute(self, context: Any) -> Any:
        sent = (self.upstream or {}).get("label_studio") or {}
        if not sent.get("ids"):
            return {**self.upstream, "people": {"status": "nothing sent"}}
        deadline = datetime.now(UTC) + timedelta(minutes=self.timeout_minutes)
        self.defer(trigger=LabelStudioTrigger(self.conn_id, int(sent["project"]),
                                              list(sent["ids"]), self.min_share,
                                              self.poke_seconds, deadline.isoformat()),
                   method_name="execute_complete")
        return None  # not reached: defer raises

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        from airflow.sdk.exceptions import AirflowFailException

        if event["status"] == "timeout" and self.on_timeout == "fail":
            raise AirflowFailException(
                f"people labelled {event['done']} of {event['total']} tasks in Label Studio "
                f"project {self.upstream['label_studio']['project']} within "
                f"{self.timeout_minutes:g} minutes (needed {self.min_share:.0%})"
                + (f"; last error: {event['error']}" if event.get("error") else "")
                + ". Rerun the annotate stage when they are done, or set "
                "annotate.people.label_studio.on_timeout: continue")
        self.log.info("people: %s", event)
        return {**self.upstream, "people": event}
