"""A sequence of monitoring windows against a real MLflow server and Delta on disk."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from mlflow import MlflowClient

from esteira.config import get_settings
from esteira.monitoring.drift import compute_drift
from esteira.monitoring.monitor import run_monitoring
from esteira.monitoring.report import experiment_name
from esteira.monitoring.results import read_history
from tests.unit.monitoring.frames import SHIFTED, churn_frame, churn_usecase, labeled_predictions

pytestmark = pytest.mark.integration

START = dt.datetime(2026, 3, 20, tzinfo=dt.UTC)
TEST_METRICS = {"test_roc_auc": 0.8, "test_log_loss": 0.45}


def _window(uc, settings, day: int, shifted: bool, reference, labels=None, version="3"):
    start = START + dt.timedelta(days=day)
    current = churn_frame(2500, seed=100 + day, shifted=SHIFTED if shifted else ())
    return run_monitoring(
        uc,
        settings,
        compute_drift(reference, current, uc),
        window_start=start,
        window_end=start + dt.timedelta(days=1),
        model_version=version,
        test_metrics=TEST_METRICS,
        labels=labels,
        run_label=f"scheduled__{start:%Y-%m-%d}",
    )


def test_drift_windows_give_one_retraining_and_reports_on_mlflow(mlflow_server, esteira_home):
    uc, settings = churn_usecase(sample_size=3000), get_settings()
    reference = churn_frame(8000, seed=1)
    shifts = [False, True, True, True, False]
    outcomes = [
        _window(uc, settings, day, shifted, reference) for day, shifted in enumerate(shifts)
    ]

    assert [o.drift.dataset_drift for o in outcomes] == shifts
    assert [set(o.drift.drifted_columns) for o in outcomes] == [
        set(SHIFTED) if s else set() for s in shifts
    ]
    assert [o.decision.retrain for o in outcomes] == [False, False, True, False, False]
    assert "cooldown" in outcomes[3].decision.reason

    history = read_history(settings, uc)
    assert len(history) == 5
    assert history["retrain"].tolist() == [False, False, True, False, False]
    assert history["window_start"].iloc[0] == dt.datetime(2026, 3, 20)  # naive UTC
    assert set(json.loads(history["drifted_columns"].iloc[2])) == set(SHIFTED)
    assert history[["reference_rows", "reference_sampled", "current_sampled"]].iloc[0].tolist() == [
        8000,
        3000,
        2500,
    ]

    client = MlflowClient(mlflow_server)
    run = client.get_run(outcomes[2].report.run_id)
    assert run.data.tags["esteira.model_version"] == "3"
    assert run.data.tags["esteira.window_start"] == "2026-03-22T00:00:00"
    assert run.data.metrics["retrain"] == 1.0
    assert client.get_experiment(run.info.experiment_id).name == experiment_name(uc)
    html = client.download_artifacts(run.info.run_id, "monitoring/drift.html", str(esteira_home))
    assert "monthly_charges" in open(html, encoding="utf-8").read()
    assert outcomes[2].report.artifact_uri.endswith("/monitoring/drift.html")
    assert history["report_run_id"].iloc[2] == run.info.run_id

    rerun = _window(uc, settings, 2, True, reference)
    assert rerun.decision.retrain  # its own earlier request does not put it in cooldown
    assert rerun.report.run_id == outcomes[2].report.run_id
    again = read_history(settings, uc)
    assert len(again) == 5
    assert again.drop(columns="run_label").equals(history.drop(columns="run_label"))


def test_no_drift_no_retraining_and_quality_once_labels_arrive(mlflow_server, esteira_home):
    uc, settings = churn_usecase(sample_size=3000), get_settings()
    reference = churn_frame(8000, seed=1)
    weak = labeled_predictions(1500, seed=7, skill=0.2)
    outcomes = [
        _window(uc, settings, day, False, reference, labels=weak if day >= 2 else None, version="4")
        for day in range(4)
    ]
    assert [o.drift.dataset_drift for o in outcomes] == [False] * 4
    assert [o.quality is None for o in outcomes] == [True, True, False, False]
    assert all(o.quality.breach for o in outcomes[2:])
    assert [o.decision.retrain for o in outcomes] == [False, False, False, True]
    assert outcomes[3].decision.reason.startswith("quality breach")

    row = read_history(settings, uc).iloc[3]
    assert row["quality_metric"] == "roc_auc"
    assert row["quality_drop"] == pytest.approx(0.8 - row["quality_value"])
    assert row["labeled_rows"] == 1500 and row["quality_breach"] and not row["drift_breach"]
    artifacts = {
        a.path
        for a in MlflowClient(mlflow_server).list_artifacts(outcomes[3].report.run_id, "monitoring")
    }
    assert artifacts == {"monitoring/drift.html", "monitoring/quality.html"}
