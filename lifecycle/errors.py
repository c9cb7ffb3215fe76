"""Lifecycle errors. ``PermanentError`` fails a task without retries; anything else retries."""

from __future__ import annotations


class LifecycleError(RuntimeError):
    """Root of the errors a stage raises on purpose."""


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
