"""The training runs in MLflow: one parent run per DAG run, what every candidate run is
tagged with, and the datasets each logs. Reproduction reads back what these write.

Shared MLflow plumbing (the client, experiments, child runs, the Delta dataset) is in
``esteira.tracking``.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.data.pandas_dataset import PandasDataset
from mlflow.entities import DatasetInput, InputTag
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT, MLFLOW_GIT_COMMIT

from esteira import tracking
from esteira.tracking import (
    AIRFLOW_PREFIX,
    DIGEST_PREFIX,
    TAG_AIRFLOW_DAG_ID,
    TAG_AIRFLOW_RUN_ID,
    TAG_CONFIG_SHA,
    TAG_ROLE,
    ensure_experiment,
    lineage_dict,
)
from esteira.usecase import UseCase

TAG_USECASE = "esteira.usecase"
TAG_CANDIDATE = "esteira.candidate"
TAG_MODEL_URI = "esteira.model_uri"
TAG_SEED = "esteira.seed"
LINEAGE_PREFIX = "lineage."
CONFIG_ARTIFACT = "esteira/usecase.json"
CANDIDATE_ARTIFACT = "esteira/candidate.json"
LINEAGE_ARTIFACT = "esteira/lineage.json"


def lineage_tags(lineage: Mapping[str, Any]) -> dict[str, str]:
    """``lineage.<key>`` tags; a key without a value (a source without versions) is left out."""
    return {f"{LINEAGE_PREFIX}{key}": str(value) for key, value in lineage.items() if value is not None}


def airflow_tags(airflow: Mapping[str, Any] | None) -> dict[str, str]:
    """``{"dag_id", "run_id", "try_number", "map_index"}`` -> ``airflow.<key>`` tags."""
    return {f"{AIRFLOW_PREFIX}{k}": str(v) for k, v in (airflow or {}).items() if v is not None}


def config_json(uc: UseCase) -> str:
    return json.dumps(uc.model_dump(mode="json", by_alias=True), sort_keys=True)


def config_sha256(uc: UseCase) -> str:
    return hashlib.sha256(config_json(uc).encode()).hexdigest()


@cache
def git_commit() -> str:
    """The checkout's commit, or 'unknown' where there is no git (a Databricks job, a wheel)."""
    root = Path(__file__).resolve().parents[3]
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else "unknown"


def common_tags(uc: UseCase) -> dict[str, str]:
    return {
        TAG_USECASE: uc.name,
        TAG_CONFIG_SHA: config_sha256(uc),
        MLFLOW_GIT_COMMIT: git_commit(),
    }


def start_parent_run(
    uc: UseCase,
    experiment: str,
    lineage: Any,
    airflow: Mapping[str, Any] | None = None,
) -> str:
    """The parent run of one training DAG run; returns its run id.

    A retried task with the same Airflow dag_id and run_id gets the same parent back, so
    the candidates of one DAG run never spread over two parents.
    """
    client = tracking.client()
    experiment_id = ensure_experiment(client, experiment)
    lineage = lineage_dict(lineage)
    airflow = dict(airflow or {})
    if airflow.get("dag_id") and airflow.get("run_id"):
        existing = client.search_runs(
            [experiment_id],
            filter_string=(
                f"tags.`{TAG_ROLE}` = 'parent' "
                f"and tags.`{TAG_AIRFLOW_DAG_ID}` = '{airflow['dag_id']}' "
                f"and tags.`{TAG_AIRFLOW_RUN_ID}` = '{airflow['run_id']}'"
            ),
            max_results=1,
        )
        if existing:
            return existing[0].info.run_id
    airflow.pop("try_number", None)
    run = client.create_run(
        experiment_id,
        run_name=f"{uc.name}-training-{airflow.get('run_id', 'manual')}",
        tags={
            TAG_ROLE: "parent",
            **common_tags(uc),
            **airflow_tags(airflow),
            **lineage_tags(lineage),
        },
    )
    run_id = run.info.run_id
    client.log_text(run_id, config_json(uc), CONFIG_ARTIFACT)
    client.log_dict(run_id, lineage, LINEAGE_ARTIFACT)
    return run_id


def finish_run(run_id: str, status: str = "FINISHED") -> None:
    """End a run (the parent after the gate): FINISHED, FAILED or KILLED."""
    tracking.client().set_terminated(run_id, status)


def log_datasets(client: MlflowClient, run_id: str, datasets: Mapping[str, PandasDataset]) -> None:
    """Dataset inputs with their context (train, validation, test) and digests as tags."""
    client.log_inputs(
        run_id,
        datasets=[
            DatasetInput(ds._to_mlflow_entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])
            for context, ds in datasets.items()
        ],
    )
    for context, ds in datasets.items():
        client.set_tag(run_id, f"{DIGEST_PREFIX}{context}", ds.digest)
