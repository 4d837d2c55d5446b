"""MLflow bookkeeping shared by training, the gate and reproduction.

Everything goes through ``MlflowClient`` with explicit run ids: the fluent API keeps one
global active run per process and is not thread-safe, and candidate runs may be concurrent.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow import MlflowClient
from mlflow.data.delta_dataset_source import DeltaDatasetSource
from mlflow.data.pandas_dataset import PandasDataset, from_pandas
from mlflow.entities import DatasetInput, InputTag
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.utils.mlflow_tags import (
    MLFLOW_DATASET_CONTEXT,
    MLFLOW_GIT_COMMIT,
    MLFLOW_PARENT_RUN_ID,
    MLFLOW_RUN_NAME,
)

from esteira.usecase import UseCase

TAG_ROLE = "esteira.role"
TAG_USECASE = "esteira.usecase"
TAG_CANDIDATE = "esteira.candidate"
TAG_CONFIG_SHA = "esteira.config_sha256"
TAG_MODEL_URI = "esteira.model_uri"
TAG_SEED = "esteira.seed"
LINEAGE_PREFIX = "lineage."
DIGEST_PREFIX = "esteira.dataset_digest."
AIRFLOW_KEYS = ("dag_id", "run_id", "try_number", "map_index")
CONFIG_ARTIFACT = "esteira/usecase.json"
CANDIDATE_ARTIFACT = "esteira/candidate.json"
LINEAGE_ARTIFACT = "esteira/lineage.json"


def lineage_dict(lineage: Any) -> dict[str, Any]:
    """A TrainingSetRef (dataclass), a pydantic model or a mapping, as a JSON-able dict.

    It must name the feature table: ``table_uri`` and ``version`` (its Delta version).
    """
    if dataclasses.is_dataclass(lineage):
        raw = dataclasses.asdict(lineage)
    elif hasattr(lineage, "model_dump"):
        raw = lineage.model_dump()
    else:
        raw = dict(lineage)
    missing = [key for key in ("table_uri", "version") if raw.get(key) is None]
    if missing:
        raise ValueError(f"lineage lacks {', '.join(missing)}: got keys {sorted(raw)}")
    return {
        key: value if isinstance(value, int | float | str | bool) or value is None else str(value)
        for key, value in raw.items()
    }


def lineage_tags(lineage: Mapping[str, Any]) -> dict[str, str]:
    return {f"{LINEAGE_PREFIX}{key}": str(value) for key, value in lineage.items()}


def airflow_tags(airflow: Mapping[str, Any] | None) -> dict[str, str]:
    """``{"dag_id", "run_id", "try_number", "map_index"}`` -> ``airflow.<key>`` tags."""
    return {f"airflow.{k}": str(v) for k, v in (airflow or {}).items() if v is not None}


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


def ensure_experiment(client: MlflowClient, name: str) -> str:
    """The experiment's id, created if missing (tolerating a concurrent creator)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException as exc:
        if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
        return client.get_experiment_by_name(name).experiment_id


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
    client = MlflowClient()
    experiment_id = ensure_experiment(client, experiment)
    lineage = lineage_dict(lineage)
    airflow = dict(airflow or {})
    if airflow.get("dag_id") and airflow.get("run_id"):
        existing = client.search_runs(
            [experiment_id],
            filter_string=(
                f"tags.`{TAG_ROLE}` = 'parent' "
                f"and tags.`airflow.dag_id` = '{airflow['dag_id']}' "
                f"and tags.`airflow.run_id` = '{airflow['run_id']}'"
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
    MlflowClient().set_terminated(run_id, status)


def create_child_run(
    client: MlflowClient, parent_run_id: str, name: str, role: str, tags: Mapping[str, str]
) -> str:
    parent = client.get_run(parent_run_id)
    run = client.create_run(
        parent.info.experiment_id,
        run_name=name,
        tags={MLFLOW_PARENT_RUN_ID: parent_run_id, MLFLOW_RUN_NAME: name, TAG_ROLE: role, **tags},
    )
    return run.info.run_id


class _DeltaTableSource(DeltaDatasetSource):
    """MLflow's Delta source drops version 0 from its dict (``if version:``); keep it."""

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "delta_table_version": self.delta_table_version}


def delta_dataset(
    frame: pd.DataFrame, columns: list[str], target: str, lineage: Mapping[str, Any], name: str
) -> PandasDataset:
    """The model's view of one split (features + label) whose source is the Delta table
    at the recorded version; the digest is of exactly these columns, so the gate's test
    dataset and the training run's test dataset carry the same digest."""
    source = _DeltaTableSource(
        path=str(lineage["table_uri"]), delta_table_version=int(lineage["version"])
    )
    data = frame[[*columns, target]].reset_index(drop=True)
    return from_pandas(data, source=source, targets=target, name=name)


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
