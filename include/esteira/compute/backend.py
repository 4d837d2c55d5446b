"""Choosing the backend of a step, and the interface both backends offer."""

from __future__ import annotations

from typing import Protocol

from esteira.compute.job import StepJob
from esteira.config import ConfigError, Settings
from esteira.results import StageResult
from esteira.usecase import UseCase

BACKENDS = ("local", "databricks")

# step (entry point in esteira.jobs) -> its key under `compute:` in the use-case YAML
STEP_COMPUTE_KEY = {"feature_refresh": "feature_refresh", "train_candidate": "training",
                    "batch_inference": "batch_inference"}


class ComputeBackend(Protocol):
    """Runs one step's entry point to completion and returns its result reference."""

    def run(self, job: StepJob) -> StageResult: ...


def resolve_backend(step: str, uc: UseCase, param: str | None, settings: Settings) -> str:
    """The run's Param wins unless it is empty or 'default'; then the YAML
    ``compute.<step>``; then ESTEIRA_COMPUTE_BACKEND."""
    if step not in STEP_COMPUTE_KEY:
        raise ConfigError(f"no compute step '{step}' (known: {', '.join(STEP_COMPUTE_KEY)})")
    if param and param != "default":
        if param not in BACKENDS:
            raise ConfigError(f"param compute_backend={param!r}: use 'default', 'local' or 'databricks'")
        return param
    return getattr(uc.compute, STEP_COMPUTE_KEY[step]) or settings.compute_backend
