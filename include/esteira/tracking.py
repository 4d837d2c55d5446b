"""The one MLflow seam: every tracking and registry call goes through ``client()``.

The client is built from ``Settings`` (``MLFLOW_TRACKING_URI``, ``MLFLOW_REGISTRY_URI``), so
a task, the CLI, the UI and the model server all reach the same server; there is no second
source of truth (a client built without URIs falls back to ``./mlruns``). Besides the client,
the helpers every stage shares: experiments, child runs, the lineage dict, and the Delta
dataset whose digest ties a training run to the gate's evaluations.

Use the client with explicit run ids: the fluent API keeps one global active run per process
and is not thread-safe, and candidate runs may be concurrent. mlflow is imported inside
functions, so importing this module stays cheap.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from functools import cache
from typing import TYPE_CHECKING, Any

from esteira.config import Settings, get_settings

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.data.pandas_dataset import PandasDataset

TAG_ROLE = "esteira.role"
TAG_CONFIG_SHA = "esteira.config_sha256"
DIGEST_PREFIX = "esteira.dataset_digest."
AIRFLOW_PREFIX = "airflow."
TAG_AIRFLOW_DAG_ID = f"{AIRFLOW_PREFIX}dag_id"
TAG_AIRFLOW_RUN_ID = f"{AIRFLOW_PREFIX}run_id"

# MLflow's defaults retry a refused connection for about four minutes. A task should fail
# in seconds with the server's name in the error and let Airflow's retries do the waiting;
# the embedded and production stacks set the same values, and the environment wins.
_FAIL_FAST = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}


def client(settings: Settings | None = None) -> MlflowClient:
    """The MLflow client for ``settings`` (``get_settings()`` when None), one per URI pair.

    Also points mlflow's fluent API (``register_model``, ``log_model``, ``evaluate``,
    ``mlflow.artifacts``) at the same URIs, which mlflow exports to the environment for
    subprocesses. A registry URI equal to the tracking URI lets MLflow pick the registry
    that goes with it (``databricks`` -> ``databricks-uc``), as a bare client would.
    """
    import mlflow

    settings = settings or get_settings()
    for name, value in _FAIL_FAST.items():
        os.environ.setdefault(name, value)
    registry = settings.registry_uri if settings.registry_uri != settings.tracking_uri else None
    mlflow.set_tracking_uri(settings.tracking_uri)
    if registry is not None:
        mlflow.set_registry_uri(registry)
    return _client(settings.tracking_uri, registry)


@cache
def _client(tracking_uri: str, registry_uri: str | None) -> MlflowClient:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)


def ensure_experiment(mlflow_client: MlflowClient, name: str) -> str:
    """The experiment's id, created if missing (tolerating a concurrent creator)."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

    found = mlflow_client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return mlflow_client.create_experiment(name)
    except MlflowException as exc:
        if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
        return mlflow_client.get_experiment_by_name(name).experiment_id


def create_child_run(
    mlflow_client: MlflowClient, parent_run_id: str, name: str, role: str, tags: Mapping[str, str]
) -> str:
    """A run nested under ``parent_run_id`` in its experiment; returns the new run id."""
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

    parent = mlflow_client.get_run(parent_run_id)
    run = mlflow_client.create_run(
        parent.info.experiment_id,
        run_name=name,
        tags={MLFLOW_PARENT_RUN_ID: parent_run_id, MLFLOW_RUN_NAME: name, TAG_ROLE: role, **tags},
    )
    return run.info.run_id


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


def delta_dataset(
    frame: pd.DataFrame, columns: list[str], target: str, lineage: Mapping[str, Any], name: str
) -> PandasDataset:
    """The model's view of one split (features + label) whose source is the Delta table
    at the recorded version; the digest is of exactly these columns, so the gate's test
    dataset and the training run's test dataset carry the same digest."""
    from mlflow.data.delta_dataset_source import DeltaDatasetSource
    from mlflow.data.pandas_dataset import from_pandas

    class _DeltaTableSource(DeltaDatasetSource):
        """MLflow's Delta source drops version 0 from its dict (``if version:``); keep it."""

        def to_dict(self) -> dict[str, Any]:
            return {"path": self.path, "delta_table_version": self.delta_table_version}

    source = _DeltaTableSource(
        path=str(lineage["table_uri"]), delta_table_version=int(lineage["version"])
    )
    data = frame[[*columns, target]].reset_index(drop=True)
    return from_pandas(data, source=source, targets=target, name=name)
