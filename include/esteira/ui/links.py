"""URLs into the MLflow UI and the Airflow UI, and which XCom holds the MLflow run of a task.

MLflow's UI routes live after ``#``; ``/#/runs/<run_id>`` redirects to the run's experiment,
so a link can be built without asking the server for the experiment id.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

ESTEIRA_TAG = "esteira"

# task id -> (task whose return value holds the run id, key of that value). The gate's
# comparison and result are logged on the parent run, which build_training_set returns.
RUN_XCOM: dict[str, tuple[str, str]] = {
    "build_training_set": ("build_training_set", "parent_run_id"),
    "train_candidate": ("train_candidate", "run_id"),
    "select_best": ("select_best", "run_id"),
    "evaluate_gate": ("build_training_set", "parent_run_id"),
    "register_challenger": ("register_challenger", "run_id"),
    "read_challenger": ("read_challenger", "run_id"),
    "promote_challenger": ("promote_challenger", "run_id"),
    "monitor_window": ("monitor_window", "report_run_id"),
}

# Tasks whose return value names a model version (``model_name`` and ``version``).
MODEL_XCOM = frozenset({"register_challenger", "read_challenger", "promote_challenger", "rollback_champion"})


def mlflow_run_url(mlflow_ui: str, run_id: str, experiment_id: str | None = None) -> str:
    base = mlflow_ui.rstrip("/")
    if experiment_id:
        return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"
    return f"{base}/#/runs/{run_id}"


def mlflow_artifact_url(mlflow_ui: str, experiment_id: str, run_id: str, path: str) -> str:
    return f"{mlflow_run_url(mlflow_ui, run_id, experiment_id)}/artifacts/{path}"


def mlflow_model_url(mlflow_ui: str, model_name: str, version: int | str | None = None) -> str:
    base = f"{mlflow_ui.rstrip('/')}/#/models/{quote(model_name, safe='')}"
    return base if version is None else f"{base}/versions/{version}"


def airflow_dag_url(airflow_base: str, dag_id: str) -> str:
    return f"{airflow_base.rstrip('/')}/dags/{quote(dag_id, safe='')}"


def airflow_run_url(airflow_base: str, dag_id: str, run_id: str) -> str:
    """The DAG run page; run ids hold ':' and '+', so they are percent-encoded."""
    return f"{airflow_dag_url(airflow_base, dag_id)}/runs/{quote(run_id, safe='')}"


def run_source(task_id: str, dag_tags: set[str] | list[str]) -> tuple[str, str] | None:
    """Where the MLflow run of an Esteira task is: (task id of the XCom, key); None for
    tasks that have no MLflow run and for DAGs that are not Esteira's."""
    if ESTEIRA_TAG not in set(dag_tags):
        return None
    return RUN_XCOM.get(task_id)


def has_model_version(task_id: str, dag_tags: set[str] | list[str]) -> bool:
    return ESTEIRA_TAG in set(dag_tags) and task_id in MODEL_XCOM


def model_version_from(value: Any) -> tuple[str, str] | None:
    """(model name, version) in a task's return value, or None when it names none."""
    if not isinstance(value, Mapping) or not value.get("model_name") or value.get("version") is None:
        return None
    return str(value["model_name"]), str(value["version"])


def run_id_from(value: Any, key: str) -> str | None:
    """The run id in a task's return value (a mapping), or None when it holds none."""
    if not isinstance(value, Mapping):
        return None
    run_id = value.get(key)
    return run_id if isinstance(run_id, str) and run_id else None
