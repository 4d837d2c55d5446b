"""The model server fills rows sent by entity key from the real online stores (SQLite and
Redis): the same predictions as the full rows, overrides, the freshness rule's declared
behaviour, clear 4xx for bad keys, full rows as before, and the inference log sees the
looked-up inputs."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
import uuid

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from esteira import tables
from esteira.serving.batch import score_batch
from esteira.serving.inference_log import read_inference_log
from esteira.serving.server import ServerConfig, create_app
from esteira.stages.window import RunWindow
from esteira.usecase import OnlineSpec, RegistrySpec
from tests.helpers import TEST_START
from tests.integration.serving import models

from .conftest import refresh_and_publish

pytestmark = pytest.mark.integration

_WINDOW = RunWindow(TEST_START, TEST_START + dt.timedelta(days=10))


@pytest.fixture
def refreshed(mlflow_server, churn, settings):
    """Churn refreshed (and materialized), a model of its own registered as champion; the
    use case's latest feature rows."""
    uc = churn.model_copy(update={"registry": RegistrySpec(model_name=f"churn_{uuid.uuid4().hex[:8]}")})
    refresh_and_publish(uc, _WINDOW, run_id="lookup")
    models.set_champion(uc, models.register(uc, models.train(uc, seed=3)))
    table = tables.read_table(tables.table_uri(settings, uc, tables.FEATURES))
    latest = table.sort_values(uc.timestamp).drop_duplicates(uc.entity, keep="last")
    return uc, dataclasses.replace(settings, tracking_uri=mlflow_server, registry_uri=mlflow_server), latest


def _serve(uc, settings, **online):
    uc = uc.model_copy(update={"online": OnlineSpec(**online)})
    return TestClient(create_app(uc, settings, ServerConfig(poll_seconds=0, log_flush_seconds=0.05)))


def _post(client, rows: list[dict]):
    return client.post("/invocations", json={"dataframe_records": rows})


def _full(uc, rows: pd.DataFrame) -> list[dict]:
    values = rows[uc.feature_names].astype(object)
    return values.where(values.notna(), None).to_dict("records")


def _wait_ready(client):
    deadline = time.monotonic() + 60
    while client.get("/health").status_code != 200:
        assert time.monotonic() < deadline, client.get("/health").json()
        time.sleep(0.1)


def test_a_request_by_key_gets_the_prediction_of_the_latest_row(refreshed):
    uc, settings, latest = refreshed
    some = latest.head(5)
    with _serve(uc, settings, max_age="3650d") as client:
        _wait_ready(client)
        by_key = _post(client, [{uc.entity: int(k)} for k in some[uc.entity]])
        full = _post(client, _full(uc, some))
        csv_by_key = client.post("/invocations", headers={"content-type": "text/csv"},
                                 content=f"{uc.entity}\n" + "\n".join(str(int(k)) for k in some[uc.entity]))
    assert by_key.status_code == 200, by_key.json()
    assert by_key.json()["predictions"] == full.json()["predictions"]
    assert csv_by_key.json()["predictions"] == by_key.json()["predictions"]
    assert [r["feature_ts"] for r in csv_by_key.json()["online"]] == [
        r["feature_ts"] for r in by_key.json()["online"]]
    assert "online" not in full.json()  # rows sent in full are not looked up
    online = by_key.json()["online"]
    assert [row["key"] for row in online] == [str(int(k)) for k in some[uc.entity]]
    assert [row["feature_ts"] for row in online] == [t.isoformat() for t in some[uc.timestamp]]
    assert all(row["age_seconds"] > 0 and not row["stale"] for row in online)


def test_a_request_by_key_gets_what_batch_scoring_gave_the_latest_row(refreshed):
    uc, settings, latest = refreshed
    batch = score_batch(uc, settings, _WINDOW.start_at, _WINDOW.end_at, run_id="batch")
    scored = tables.read_table(batch["table_uri"]).merge(latest[[uc.entity, uc.timestamp]])
    scored = scored.sort_values(uc.entity).head(8)
    with _serve(uc, settings) as client:
        _wait_ready(client)
        answer = client.post("/invocations", json={
            "dataframe_split": {"columns": [uc.entity], "data": [[int(k)] for k in scored[uc.entity]]},
            "params": {"probabilities": True}})
    assert answer.status_code == 200, answer.json()
    records = answer.json()["predictions"]
    assert [r["prediction"] for r in records] == scored["prediction"].astype(int).tolist()
    assert np.allclose([r["probability"] for r in records], scored["probability"], atol=1e-6)


def test_values_sent_with_the_key_override_the_stored_ones(refreshed):
    uc, settings, latest = refreshed
    row = latest.head(1)
    changed = row.assign(monthly_charges=499.0, plan="premium")
    with _serve(uc, settings) as client:
        _wait_ready(client)
        by_key = client.post("/invocations", json={"inputs": [
            {uc.entity: str(int(row[uc.entity].iloc[0])), "monthly_charges": 499.0, "plan": "premium"}]})
        full = _post(client, _full(uc, changed))
    assert by_key.status_code == 200, by_key.json()
    assert by_key.json()["predictions"] == full.json()["predictions"]


def test_stale_and_unknown_keys_are_refused_with_the_rows_named(refreshed):
    uc, settings, latest = refreshed
    key = int(latest[uc.entity].iloc[0])
    with _serve(uc, settings, max_age="2d", stale="refuse") as client:
        _wait_ready(client)
        stale = _post(client, [{uc.entity: key}])
        unknown = _post(client, [{uc.entity: 99_999_999}])
        bad = _post(client, [{uc.entity: "abc"}])
    assert stale.status_code == 422
    assert f"row 0 ({uc.entity} {key})" in stale.json()["message"]
    assert "older than online.max_age 2d" in stale.json()["message"]
    assert unknown.status_code == 422 and "no stored features" in unknown.json()["message"]
    assert bad.status_code == 400 and "must be an integer" in bad.json()["message"]


def test_flagged_rows_are_scored_and_flagged(refreshed):
    uc, settings, latest = refreshed
    key = int(latest[uc.entity].iloc[0])
    with _serve(uc, settings, max_age="2d", stale="flag") as client:
        _wait_ready(client)
        answer = _post(client, [{uc.entity: key}, {uc.entity: 99_999_999}])
        metrics = client.get("/metrics").text
    assert answer.status_code == 200, answer.json()
    for outcome in ("stale", "missing"):
        assert f'esteira_online_rows_total{{outcome="{outcome}",usecase="{uc.name}"}} 1.0' in metrics
    assert len(answer.json()["predictions"]) == 2
    stale, unknown = answer.json()["online"]
    assert stale["stale"] and not stale["missing"] and stale["age_seconds"] > 2 * 86_400
    assert unknown["stale"] and unknown["missing"] and unknown["feature_ts"] is None


def test_the_inference_log_records_the_looked_up_inputs(refreshed):
    uc, settings, latest = refreshed
    row = latest.head(1)
    start = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(minutes=1)
    with _serve(uc, settings) as client:
        _wait_ready(client)
        assert _post(client, [{uc.entity: int(row[uc.entity].iloc[0])}]).status_code == 200
    served = uc.model_copy(update={"online": OnlineSpec()})
    log = read_inference_log(settings, served, start, start + dt.timedelta(hours=1))
    assert len(log) == 1
    for name in uc.feature_names:
        expected = row[name].iloc[0]
        if pd.isna(expected):
            assert pd.isna(log[name].iloc[0]) or log[name].iloc[0] in ("None", "nan")
        elif isinstance(expected, str):
            assert log[name].iloc[0] == expected
        else:
            assert np.isclose(log[name].iloc[0], expected), name


def test_fuzzing_requests_by_key_finds_no_server_error(refreshed):
    import schemathesis
    from hypothesis import HealthCheck, given
    from hypothesis import settings as run_settings
    from hypothesis import strategies as st
    from schemathesis.checks import not_a_server_error

    uc, settings, _ = refreshed
    with _serve(uc, settings, max_age="2d", stale="flag") as client:
        _wait_ready(client)
        schema = schemathesis.openapi.from_asgi("/openapi.json", client.app).include(
            path="/invocations", method="POST")
        cases = st.one_of(schema.as_strategy(schemathesis.GenerationMode.POSITIVE),
                          schema.as_strategy(schemathesis.GenerationMode.NEGATIVE))
        statuses, looked_up = [], []

        @run_settings(max_examples=80, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
        @given(case=cases)
        def no_5xx(case):
            response = case.call_and_validate(checks=[not_a_server_error])
            statuses.append(response.status_code)
            looked_up.append(response.status_code == 200 and b'"online"' in response.content)

        no_5xx()
        by_key = _post(client, [{uc.entity: "abc"}, {uc.entity: 2**70}, {uc.entity: None}])
    assert 200 in statuses and 400 in statuses and any(looked_up)  # the lookup was reached
    assert by_key.status_code == 400
