"""Task processes start warm: the libraries the stages use are imported once, in the process
that task processes are forked from, instead of again in every task process.

Airflow 3's supervisor forks each task process from its worker. A LocalExecutor worker is
itself forked from the scheduler when the executor starts, and a Celery pool process from
the Celery worker after it has imported its ``imports``. Importing TASK_MODULES there means
every task process inherits them: in a cold task they cost 1-10 s each time (mlflow, sklearn
and skops for a candidate, Evidently for a monitoring window), several times the task's work.

- Embedded stack: ``AIRFLOW__CORE__EXECUTOR=esteira.orchestration.warm.WarmLocalExecutor``.
- Celery workers: ``AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS=esteira.orchestration.celery_config.CELERY_CONFIG``.

A module missing from the list costs time, never correctness: the task imports it itself.
"""

from __future__ import annotations

import importlib
import logging
import time

from airflow.executors.local_executor import LocalExecutor

log = logging.getLogger(__name__)

# What the stages' task bodies import, directly or lazily inside the functions they call.
TASK_MODULES = (
    "pandas",
    "pyarrow.compute",
    "pyarrow.dataset",
    "pyarrow.parquet",
    "deltalake",
    "mlflow",
    "mlflow.sklearn",
    "mlflow.pyfunc",
    "skops.io",
    "matplotlib.pyplot",
    "evidently",
    "evidently.presets",
    "esteira.tables",
    "esteira.tracking",
    "esteira.stages.feature_refresh",
    "esteira.features.refresh",
    "esteira.stages.model_training",
    "esteira.training.candidates",
    "esteira.training.fit",
    "esteira.training.runs",
    "esteira.evaluation.gate",
    "esteira.stages.model_promotion",
    "esteira.stages.model_rollback",
    "esteira.registry.transitions",
    "esteira.serving.deploy",
    "esteira.stages.batch_inference",
    "esteira.serving.batch",
    "esteira.stages.drift_monitoring",
    "esteira.monitoring.monitor",
    "esteira.monitoring.drift",
    "esteira.monitoring.quality",
    "esteira.serving.inference_log",
)


def import_task_libraries(modules: tuple[str, ...] = TASK_MODULES) -> float:
    """Import ``modules``; the seconds it took. A module that fails to import is logged and
    left to the task that needs it, which then fails with the real error."""
    started = time.perf_counter()
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a warm-up must never stop the scheduler
            log.warning("warm start: could not import %s", name, exc_info=True)
    seconds = time.perf_counter() - started
    log.info("warm start: imported %d modules for the task processes in %.1f s", len(modules), seconds)
    return seconds


class WarmLocalExecutor(LocalExecutor):
    """The LocalExecutor whose workers, and so every task process, start with TASK_MODULES
    imported: the scheduler imports them once before the executor forks its workers."""

    def start(self) -> None:
        if self.is_mp_using_fork:
            import_task_libraries()
        super().start()
