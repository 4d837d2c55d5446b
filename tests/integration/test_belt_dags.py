"""The stages chained with `dag.test()`: refresh -> training + gate -> promotion -> batch
inference -> monitoring with drift -> retraining request. Real Delta files, a real MLflow
server, Airflow's own task runner."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from esteira.config import load_usecase

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def belt_env(tmp_path_factory, mlflow_server):
    """A small churn use case (fewer customers), its landing files and an Airflow DB."""
    import os

    home = tmp_path_factory.mktemp("belt_home")
    usecases = tmp_path_factory.mktemp("belt_usecases")
    data = yaml.safe_load((REPO / "include/usecases/churn.yaml").read_text())
    data["source"]["generator"]["entities"] = 500
    # Other tests share the session's MLflow server: a model name of its own keeps the
    # version numbers this test expects.
    data["registry"]["model_name"] = "churn_belt_test"
    (usecases / "churn.yaml").write_text(yaml.safe_dump(data))
    saved = {k: os.environ.get(k) for k in ("ESTEIRA_HOME", "ESTEIRA_USECASES_DIR", "ESTEIRA_MODEL_SERVER_URL")}
    os.environ.update(ESTEIRA_HOME=str(home), ESTEIRA_USECASES_DIR=str(usecases), ESTEIRA_MODEL_SERVER_URL="off")
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)
    uc = load_usecase(usecases / "churn.yaml")
    from esteira.config import get_settings
    from esteira.features.generator import generate_landing

    settings = get_settings()
    generate_landing(uc, settings.landing_dir / uc.source.landing)
    yield uc, settings
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _dag(stage: str, uc):
    module = runpy.run_path(str(REPO / "dags" / f"{stage}.py"), run_name="dag_module")
    return module[stage](uc)


def _test(stage: str, uc, **conf):
    run = _dag(stage, uc).test(run_conf=conf)
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    return run, states


def test_the_belt_end_to_end(belt_env):
    from deltalake import DeltaTable
    from mlflow import MlflowClient

    from esteira.registry.transitions import get_alias_version

    uc, settings = belt_env
    run, states = _test("feature_refresh", uc, interval_start="2025-12-01", interval_end="2026-03-01")
    assert run.state == "success", states
    features = DeltaTable(settings.table_uri(uc.name, uc.features.table))
    assert features.version() >= 0 and len(features.to_pyarrow_table(columns=[uc.entity])) > 1000

    run, states = _test("model_training", uc)
    assert run.state == "success", states
    assert states["register_challenger"] == "success"
    challenger = get_alias_version(uc, "challenger")
    assert challenger == 1
    tags = MlflowClient().get_model_version(uc.model_name, "1").tags
    assert tags["feature_table_version"] == str(features.version())
    assert tags["gate_compared_champion"] == "none"
    from esteira.training.reproduce import reproduce

    report = reproduce(tags["run_id"])  # from the recorded Delta versions, config and seed
    assert report.matches, report.describe()

    run, states = _test("model_promotion", uc, require_approval=False)
    assert run.state == "success", states
    assert states["approve_promotion"] == "skipped"
    assert get_alias_version(uc, "champion") == 1
    assert get_alias_version(uc, "challenger") is None

    run, states = _test("batch_inference", uc, interval_start="2026-02-01", interval_end="2026-03-01")
    assert run.state == "success", states
    predictions = DeltaTable(settings.table_uri(uc.name, "predictions")).to_pandas()
    assert set(predictions["model_version"].astype(str)) == {"1"}

    run, states = _test("feature_refresh", uc, interval_start="2026-03-01", interval_end="2026-04-01",
                        notify_downstream=False)
    assert states["publish_features"] == "skipped"
    _test("batch_inference", uc, interval_start="2026-03-01", interval_end="2026-04-01")

    retrain = []
    for day in ("2026-03-02", "2026-03-03", "2026-03-05", "2026-03-06", "2026-03-07"):
        end = f"2026-03-{int(day[-2:]) + 1:02d}"
        run, states = _test("drift_monitoring", uc, interval_start=day, interval_end=end)
        assert run.state == "success", states
        retrain.append(states["request_retraining"] == "success")
    history = DeltaTable(settings.table_uri(uc.name, "monitoring")).to_pandas().sort_values("window_start")
    shown = history[["window_start", "drift_share", "drifted_columns", "retrain"]].to_string()
    # No drift before 2026-03-05; the second breaching window (03-06) asks once; cooldown after.
    assert retrain == [False, False, False, True, False], shown
    drifted = [set(json.loads(cols)) for cols in history["drifted_columns"]]
    assert drifted[0] == drifted[1] == set(), shown
    shifted = set(uc.source.generator.drift.columns)
    assert all(shifted <= cols for cols in drifted[2:]), shown
    assert not any(cols & {"plan", "region", "payment_delay_30d_max"} for cols in drifted), shown
