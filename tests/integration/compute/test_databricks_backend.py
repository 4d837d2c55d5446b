"""The training DAG with the `databricks` backend, end to end against the emulator, and
the same results from the local path on the same demo data.

`dag.test()` runs the real DAG files: the operator submits through the Databricks provider,
the provider's deferrable trigger runs inline, the emulator runs `esteira/jobs/<step>.py`
in a subprocess on the cluster's environment (``new_cluster.spark_env_vars``).
"""

from __future__ import annotations

import hashlib
import runpy
from pathlib import Path

import pandas as pd
import pytest

from esteira.compute.databricks import DatabricksBackend, DatabricksConfig
from esteira.compute.job import StepJob
from esteira.compute.local import LocalBackend
from tests.databricks_emulator.service import REPO, cluster_env, small_churn

pytestmark = [pytest.mark.integration, pytest.mark.slow]

INTERVAL = {"interval_start": "2026-01-01", "interval_end": "2026-03-01"}
CANDIDATES = [
    {"family": "logistic_regression", "params": {"C": [1.0]}},
    {"family": "random_forest", "params": {"n_estimators": [20], "max_depth": [5]}},
]


def _dag(stage: str, uc):
    return runpy.run_path(str(REPO / "dags" / f"{stage}.py"), run_name="dag_module")[stage](uc)


def _xcoms(run, task_id: str) -> list:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.scalars(
            XComModel.get_many(run_id=run.run_id, dag_ids=run.dag_id, task_ids=task_id, key="return_value")
        ).all()
        return [XComModel.deserialize_value(row) for row in sorted(rows, key=lambda r: r.map_index)]


def _content_hash(table_uri: str, keys: list[str]) -> str:
    from deltalake import DeltaTable

    frame = DeltaTable(table_uri).to_pandas().sort_values(keys).reset_index(drop=True)
    return hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).values.tobytes()).hexdigest()


@pytest.fixture(scope="module")
def remote_belt(tmp_path_factory, mlflow_server, emulator, airflow_db):
    """Feature refresh and training DAGs run with compute_backend=databricks."""
    from esteira.config import get_settings, load_usecase
    from esteira.features.generator import generate_landing

    home, usecases = tmp_path_factory.mktemp("remote_home"), tmp_path_factory.mktemp("usecases")
    uc = load_usecase(small_churn(usecases))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ESTEIRA_HOME", str(home))
        env.setenv("ESTEIRA_USECASES_DIR", str(usecases))
        for key, value in cluster_env(home, usecases).items():
            env.setenv(key, value)
        settings = get_settings()
        generate_landing(uc, settings.landing_dir / uc.source.landing)
        submits_before = len(emulator.requests("/runs/submit"))
        refresh = _dag("feature_refresh", uc).test(run_conf={**INTERVAL, "compute_backend": "databricks"})
        training = _dag("model_training", uc).test(run_conf={"compute_backend": "databricks", "candidates": CANDIDATES})
        yield {
            "uc": uc, "settings": settings, "usecases": usecases, "refresh": refresh, "training": training,
            "submits": emulator.requests("/runs/submit")[submits_before:],
        }


def test_the_training_dag_runs_end_to_end_on_databricks(remote_belt):
    for run in (remote_belt["refresh"], remote_belt["training"]):
        states = {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}
        assert run.state == "success", states
    files = [s["params"]["tasks"][0]["spark_python_task"]["python_file"] for s in remote_belt["submits"]]
    assert [Path(f).name for f in files] == ["feature_refresh.py", "train_candidate.py", "train_candidate.py"]
    refreshed = _xcoms(remote_belt["refresh"], "refresh_features")[0]
    assert refreshed["table_uri"] == remote_belt["settings"].table_uri("churn", "churn_features")
    candidates = _xcoms(remote_belt["training"], "train_candidate")
    assert sorted(c["name"] for c in candidates) == sorted(c["name"] for c in _xcoms(remote_belt["training"], "plan_candidates")[0])
    assert all(c["model_uri"] and c["metrics"]["test_roc_auc"] > 0.5 for c in candidates)
    challenger = _xcoms(remote_belt["training"], "register_challenger")[0]
    assert challenger["run_id"] in {c["run_id"] for c in candidates}


def test_local_and_databricks_paths_give_the_same_features_and_metrics(remote_belt, tmp_path, monkeypatch):
    from esteira.config import get_settings
    from esteira.features.generator import generate_landing
    from esteira.stages.model_training import TrainingOptions, TrainingTrigger, prepare_training
    from esteira.training.candidates import expand_candidates

    uc, remote = remote_belt["uc"], remote_belt["settings"]
    monkeypatch.setenv("ESTEIRA_HOME", str(tmp_path))
    monkeypatch.setenv("ESTEIRA_USECASES_DIR", str(remote_belt["usecases"]))
    local = get_settings()
    generate_landing(uc, local.landing_dir / uc.source.landing)
    airflow = {"dag_id": "local", "run_id": "local__1", "try_number": 1, "map_index": -1}
    refreshed = LocalBackend().run(StepJob("feature_refresh", "churn", {"params": INTERVAL, "airflow": airflow}))
    keys = [uc.entity, uc.timestamp]
    assert refreshed["rows_written"] == _xcoms(remote_belt["refresh"], "refresh_features")[0]["rows_written"]
    assert _content_hash(refreshed["table_uri"], keys) == _content_hash(remote.table_uri("churn", uc.features.table), keys)

    params = {"candidates": CANDIDATES}
    training = prepare_training(uc, TrainingOptions.from_params(params), TrainingTrigger(), airflow)
    remote_metrics = {c["name"]: c["metrics"] for c in _xcoms(remote_belt["training"], "train_candidate")}
    for candidate in CANDIDATES:
        (spec,) = expand_candidates(uc, [candidate])
        result = LocalBackend().run(
            StepJob("train_candidate", "churn",
                    {"params": params, "candidate": spec, "training": training, "airflow": airflow})
        )
        assert result["metrics"] == remote_metrics[result["name"]]


def test_the_blocking_databricks_backend_returns_what_the_job_printed(remote_belt, monkeypatch):
    """DatabricksBackend.run (outside Airflow's deferral): a rerun of the refresh reports the
    same rows and leaves the feature table as it was."""
    uc, settings = remote_belt["uc"], remote_belt["settings"]
    for key, value in cluster_env(settings.home, remote_belt["usecases"]).items():
        monkeypatch.setenv(key, value)
    table, keys = settings.table_uri("churn", uc.features.table), [uc.entity, uc.timestamp]
    before = _content_hash(table, keys)
    job = StepJob("feature_refresh", "churn", {"params": INTERVAL, "airflow": {"run_id": "rerun"}})
    again = DatabricksBackend(DatabricksConfig.from_env()).run(job)
    first = _xcoms(remote_belt["refresh"], "refresh_features")[0]
    assert (again["raw_rows"], again["rows_written"]) == (first["raw_rows"], first["rows_written"])
    assert _content_hash(table, keys) == before
