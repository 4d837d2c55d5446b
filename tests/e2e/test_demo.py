"""The shortened demo through the real scheduler closes the retraining loop, and the
approval path runs through Airflow's HITL REST API as a person's click in the UI would."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.e2e


def test_demo_closes_the_retraining_loop(demo_cycle):
    output = demo_cycle["output"]
    assert "retraining requested after window" in output
    assert "demo finished" in output
    assert ("passed the gate; promoting" in output) or ("the gate rejected the retrained model" in output)


def test_promotion_waited_for_an_approval_given_through_the_rest_api(demo_cycle):
    from mlflow import MlflowClient

    from esteira.config import get_usecase
    from esteira.registry.transitions import get_alias_version, history

    uc = get_usecase("churn")
    # The stack's own URI: the fluent default may still name an earlier module's stopped stack.
    first = MlflowClient(demo_cycle["settings"].tracking_uri).get_model_version(uc.model_name, "1").tags
    assert first["approval_decision"] == "approved"
    assert first["approved_by"] == "admin"
    assert first["approval_reason"] == "demo mode: approved automatically"
    actions = [event["action"] for event in history(uc)]
    assert actions[:3] == ["register_challenger", "approval_approved", "promote"]
    assert get_alias_version(uc, "champion") is not None


def test_model_server_serves_the_champion(demo_cycle):
    from esteira.config import get_usecase
    from esteira.registry.transitions import get_alias_version

    settings = demo_cycle["settings"]
    live = httpx.get(f"{settings.model_server_url}/models/churn/version").json()
    assert live["model_version"] == str(get_alias_version(get_usecase("churn"), "champion"))
    bad = httpx.post(f"{settings.model_server_url}/invocations", content=b"{not json",
                     headers={"Content-Type": "application/json"})
    assert bad.status_code == 400 and "json" in json.dumps(bad.json()).lower()


def test_training_trigger_form_is_typed_and_airflow_refuses_bad_values(demo_stack):
    from esteira.stack.airflow_api import AirflowApiError, AirflowClient

    client = AirflowClient(demo_stack["base"], "admin", demo_stack["password"])
    params = client.request("GET", "dags/churn__model_training/details")["params"]
    fraction = params["test_fraction"]
    assert fraction["schema"]["type"] == "number" and fraction["schema"]["maximum"] == 0.5
    assert fraction["schema"]["title"] == "Test fraction"
    assert params["candidates"]["schema"]["type"] == "array"
    assert params["gate_mode"]["schema"]["enum"] == ["enabled", "dry_run", "disabled"]
    with pytest.raises(AirflowApiError) as refused:
        client.trigger("churn__model_training", {"test_fraction": 2.0})
    assert "400" in str(refused.value) and "test_fraction" in str(refused.value)


def test_a_request_carrying_only_customer_id_gets_what_batch_scoring_gave(demo_cycle):
    """After the demo's refreshes (each materializing the online store in its publish task)
    and promotions, batch scoring of the newest day through the scheduler and a request by
    key to the model server give each customer's latest row the same prediction."""
    from esteira import tables
    from esteira.config import get_usecase
    from esteira.features.online import latest_rows
    from esteira.registry.transitions import get_alias_version
    from esteira.stack.airflow_api import AirflowClient

    settings, uc = demo_cycle["settings"], get_usecase("churn")
    features = tables.table_uri(settings, uc, tables.FEATURES)
    latest = latest_rows(uc, features, tables.current_version(features))
    day = latest[uc.timestamp].max().normalize()
    newest = latest[latest[uc.timestamp] >= day].head(25)
    assert len(newest) > 5

    client = AirflowClient(demo_cycle["base"], "admin", demo_cycle["password"])
    conf = {"interval_start": day.date().isoformat(), "interval_end": (day + pd.Timedelta(days=1)).date().isoformat()}
    scored = client.wait("churn__batch_inference", client.trigger("churn__batch_inference", conf), timeout=600)
    assert scored.state == "success", scored.tasks
    champion = str(get_alias_version(uc, "champion"))
    predictions = tables.read_table(tables.table_uri(settings, uc, tables.PREDICTIONS))
    batch = newest[[uc.entity, uc.timestamp]].merge(
        predictions[predictions["model_version"] == champion], on=[uc.entity, uc.timestamp], how="left")
    assert batch["probability"].notna().all(), "batch scoring left a latest row unscored"

    answer = httpx.post(f"{settings.model_server_url}/models/churn/invocations", timeout=30, json={
        "dataframe_records": [{uc.entity: int(key)} for key in batch[uc.entity]],
        "params": {"probabilities": True}})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert httpx.get(f"{settings.model_server_url}/models/churn/version").json()["model_version"] == champion
    assert [row["feature_ts"] for row in body["online"]] == [ts.isoformat() for ts in batch[uc.timestamp]]
    served = pd.DataFrame(body["predictions"])
    assert np.allclose(served["probability"], batch["probability"], atol=1e-5)
    clear = (batch["probability"] - 0.5).abs() > 1e-4  # a label is the same unless it sits on the threshold
    assert (served["prediction"][clear].to_numpy() == batch["prediction"][clear].to_numpy()).all()
