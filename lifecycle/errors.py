"""Lifecycle errors. ``PermanentError`` fails a task without retries; anything else retries.

An error may say where it happened (``source``, ``file``, ``line``, ``record_id``,
``field``): the run's failure cause in the catalog carries them (:func:`failure_facts`), so
the CLI and the dataset page can name the record or field without anyone reading a log.
"""

from __future__ import annotations

import contextlib
from typing import Any

WHERE = ("source", "file", "line", "record_id", "field")
"""The context attributes an error may carry."""
MAX_MESSAGE = 2000
"""Characters of an error message kept in the catalog (the start and the end of longer ones)."""


class LifecycleError(RuntimeError):
    """Root of the errors a stage raises on purpose; keywords say where, when known."""

    def __init__(self, *args: Any, source: str | None = None, file: str | None = None,
                 line: int | None = None, record_id: str | None = None,
                 field: str | None = None) -> None:
        super().__init__(*args)
        self.source, self.file, self.line = source, file, line
        self.record_id, self.field = record_id, field


class PermanentError(LifecycleError):
    """Retrying cannot help (bad input, a failed quality gate, a broken invariant)."""


class SourceError(PermanentError):
    """A source cannot be read; the message names the source, the file and what to do."""


class SourceUnreachable(LifecycleError):
    """A source did not answer after its own retries; the task is retried by Airflow."""


class ConservationError(PermanentError):
    """Records were lost or invented: in != kept + quarantined + merged."""


class QualityGateFailed(PermanentError):
    """The version does not meet the spec's quality gate and will not be published."""


def mark_stage(error: BaseException, stage: str) -> None:
    """Note on ``error`` the stage it escaped from (a task that runs several stages fails in
    one of them), unless an inner stage noted it first."""
    if getattr(error, "granary_stage", None) is None:
        # (an exception type without a __dict__ cannot carry the note)
        with contextlib.suppress(AttributeError):
            error.granary_stage = stage  # type: ignore[attr-defined]


def bounded(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` cut to about ``limit`` characters, keeping its start (what failed) and its
    end (often the innermost reason)."""
    if len(text) <= limit:
        return text
    tail = limit // 5
    head = limit - tail
    return f"{text[:head]} ... [{len(text) - head - tail} characters cut] ... {text[-tail:]}"


def _chain(error: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in out and len(out) < 20:
        out.append(current)
        current = current.__cause__ or (None if current.__suppress_context__
                                        else current.__context__)
    return out


def _message(error: BaseException) -> str:
    if isinstance(error, KeyError) and len(error.args) == 1:
        return f"no key {error.args[0]!r}"
    return str(error).strip() or type(error).__name__


def failure_facts(error: BaseException) -> dict[str, Any]:
    """What a failure record says about ``error``: its type and message (bounded), the
    stage it escaped from, and where, gathered along its chain of causes. Airflow's own
    wrappers (AirflowFailException and the like) give way to the error they wrap."""
    chain = _chain(error)
    principal = next((e for e in chain if not type(e).__module__.startswith("airflow")),
                     chain[0])
    facts: dict[str, Any] = {"error_type": type(principal).__name__,
                             "message": bounded(_message(principal))}
    for name in WHERE:
        facts[name] = next((getattr(e, name) for e in chain
                            if getattr(e, name, None) not in (None, "")), None)
    if facts["field"] is None and isinstance(principal, KeyError) and \
            len(principal.args) == 1 and isinstance(principal.args[0], str):
        facts["field"] = principal.args[0]  # a column or key the code expected
    facts["stage"] = next((getattr(e, "granary_stage", None) for e in chain
                           if getattr(e, "granary_stage", None)), None)
    root = chain[-1]
    if root is not principal and _message(root) not in facts["message"]:
        facts["cause"] = bounded(f"{type(root).__name__}: {_message(root)}", 500)
    return facts
