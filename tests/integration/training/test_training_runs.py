"""Training against a real MLflow server: child runs per candidate with everything needed
to compare experiments later, the best chosen by the primary metric, retries that leave
one finished run, and exact reproduction from the recorded Delta version."""

from __future__ import annotations

import json

import mlflow.sklearn
import pytest
from mlflow import MlflowClient

from esteira.tracking import create_child_run
from esteira.training.candidates import expand_candidates
from esteira.training.fit import select_best, train_candidate
from esteira.training.reproduce import reproduce
from esteira.training.runs import start_parent_run
from tests.unit.training.synthetic import (
    churn_frame,
    churn_usecase,
    demand_frame,
    demand_usecase,
    read_table,
    write_table,
)

pytestmark = pytest.mark.integration

AIRFLOW = {"dag_id": "x__model_training", "run_id": "manual__1", "try_number": 1}


def _setup(kind: str, home, experiment: str):
    uc = churn_usecase() if kind == "classification" else demand_usecase()
    frame = churn_frame(uc) if kind == "classification" else demand_frame(uc)
    uri = str(home / "data" / uc.name / uc.features.table)
    version = write_table(frame, uri)
    lineage = {"table_uri": uri, "version": version, "start": "2026-01-01", "end": "2026-01-31"}
    parent = start_parent_run(uc, experiment, lineage, {**AIRFLOW, "dag_id": uc.dag_id("model_training")})
    return uc, frame, lineage, parent


@pytest.mark.parametrize("kind", ["classification", "regression"])
def test_candidates_become_child_runs_and_the_best_is_chosen(kind, mlflow_server, esteira_home):
    uc, frame, lineage, parent = _setup(kind, esteira_home, f"train-{kind}")
    candidates = expand_candidates(uc)
    airflow = {**AIRFLOW, "dag_id": uc.dag_id("model_training")}
    results = [
        train_candidate(uc, c, frame, lineage, parent, {**airflow, "map_index": i})
        for i, c in enumerate(candidates)
    ]
    client = MlflowClient()
    experiment_id = client.get_run(parent).info.experiment_id
    children = client.search_runs(
        [experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'"
    )
    assert len(children) == len(candidates) >= 3
    primary = uc.training.primary_metric
    for child in children:
        assert child.info.status == "FINISHED"
        assert {f"val_{primary}", f"test_{primary}"} <= set(child.data.metrics)
        assert child.data.tags["airflow.dag_id"] == uc.dag_id("model_training")
        assert len(child.data.tags["esteira.config_sha256"]) == 64
        assert child.data.tags["mlflow.source.git.commit"]
        inputs = {
            next(t.value for t in d.tags if t.key == "mlflow.data.context"): d.dataset
            for d in child.inputs.dataset_inputs
        }
        assert set(inputs) == {"train", "validation", "test"}
        source = json.loads(inputs["test"].source)
        assert inputs["test"].source_type == "delta_table"
        assert source == {"path": lineage["table_uri"], "delta_table_version": lineage["version"]}
        assert inputs["test"].digest == child.data.tags["esteira.dataset_digest.test"]
        plots = {a.path for a in client.list_artifacts(child.info.run_id, "plots")}
        expected = (
            {"roc_curve", "precision_recall_curve", "confusion_matrix"}
            if kind == "classification"
            else {"residuals"}
        )
        assert plots == {f"plots/{p}.png" for p in expected | {"feature_importance"}}

    model = mlflow.sklearn.load_model(results[0].model_uri)
    raw = frame[uc.feature_names].head(3)
    if kind == "classification":
        assert model.predict_proba(raw).shape == (3, 2)
    else:
        assert model.predict(raw).shape == (3,)

    best = select_best(results, primary, uc.training.greater_is_better)
    values = [r.metrics[f"val_{primary}"] for r in results]
    assert best.metrics[f"val_{primary}"] == (max if uc.training.greater_is_better else min)(values)


def test_a_retried_candidate_leaves_one_finished_run(mlflow_server, esteira_home):
    uc, frame, lineage, parent = _setup("classification", esteira_home, "train-retry")
    candidate = expand_candidates(uc)[0]
    client = MlflowClient()
    # An earlier try that died mid-way: its run is still RUNNING.
    crashed = create_child_run(
        client, parent, candidate["name"], "candidate", {"esteira.candidate": candidate["name"]}
    )
    first = train_candidate(uc, candidate, frame, lineage, parent, {**AIRFLOW, "try_number": 2})
    again = train_candidate(uc, candidate, frame, lineage, parent, {**AIRFLOW, "try_number": 3})

    assert again == first
    runs = client.search_runs(
        [client.get_run(parent).info.experiment_id],
        filter_string=f"tags.`esteira.candidate` = '{candidate['name']}'",
    )
    statuses = sorted((r.info.run_id == crashed, r.info.status) for r in runs)
    assert statuses == [(False, "FINISHED"), (True, "KILLED")]


def test_a_retried_parent_run_is_the_same_run(mlflow_server, esteira_home):
    uc, _frame, lineage, parent = _setup("classification", esteira_home, "train-parent")
    again = start_parent_run(
        uc, "train-parent", lineage, {**AIRFLOW, "dag_id": uc.dag_id("model_training"), "try_number": 2}
    )
    assert again == parent


def test_reproduce_retrains_from_the_recorded_delta_version(mlflow_server, esteira_home):
    uc, frame, lineage, parent = _setup("classification", esteira_home, "train-reproduce")
    candidate = expand_candidates(uc)[1]
    result = train_candidate(uc, candidate, frame, lineage, parent, AIRFLOW)
    # The feature table moves on after training: reproduction must not see the new rows.
    write_table(churn_frame(uc, rows=200, seed=5), lineage["table_uri"], mode="append")

    report = reproduce(result.run_id, lambda uc, lin: read_table(lin["table_uri"], lin["version"]))
    assert report.matches, report.describe()
    assert report.reproduced == result.metrics
    assert report.version == lineage["version"]

    latest = reproduce(result.run_id, lambda uc, lin: read_table(lin["table_uri"], lin["version"] + 1))
    assert not latest.matches
    assert any("data digest" in m for m in latest.mismatches)
