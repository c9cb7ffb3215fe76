"""The lifecycle stages as plain Python (no Airflow import): each ``run(ctx, upstream)``."""

from lifecycle.context import StageContext, StageResult
from lifecycle.errors import (
    ConservationError,
    LifecycleError,
    PermanentError,
    QualityGateFailed,
    SourceError,
)
from lifecycle.spec import (
    STAGES,
    DatasetSpec,
    SpecError,
    SpecProblem,
    check_spec,
    discover,
    load_spec,
)

__all__ = [
    "STAGES",
    "ConservationError",
    "DatasetSpec",
    "LifecycleError",
    "PermanentError",
    "QualityGateFailed",
    "SourceError",
    "SpecError",
    "SpecProblem",
    "StageContext",
    "StageResult",
    "check_spec",
    "discover",
    "load_spec",
]
