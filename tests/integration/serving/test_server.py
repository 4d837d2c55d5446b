"""The online server speaks MLflow's protocol, gives MLflow's answers, and rejects bad input clearly."""

from __future__ import annotations

import json
import time

import mlflow
import pytest
from fastapi.testclient import TestClient

from esteira.config import get_usecase
from esteira.serving.server import ServerConfig, create_app
from tests.integration.serving import models

pytestmark = pytest.mark.integration


def wait_ready(client: TestClient, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get("/health")
        if response.status_code == 200:
            return response.json()
        time.sleep(0.1)
    raise AssertionError(f"server not ready: {response.json()}")


@pytest.fixture(scope="module")
def client(uc, settings, champion):
    app = create_app(uc, settings, ServerConfig(poll_seconds=0, max_body_bytes=20_000, max_rows=30))
    with TestClient(app) as client:
        wait_ready(client)
        yield client


@pytest.fixture(scope="module")
def mlflow_client(uc, champion):
    """MLflow's own scoring server for the same model version: the drop-in reference."""
    from mlflow.pyfunc import scoring_server

    model = mlflow.pyfunc.load_model(f"models:/{uc.model_name}/{champion}")
    with TestClient(scoring_server.init(model)) as client:
        yield client


def payloads(rows):
    records = json.loads(rows.to_json(orient="records"))
    split = json.loads(rows.to_json(orient="split", index=False))
    columns = {c: [r[c] for r in records] for c in rows.columns}
    return {
        "dataframe_split": ("application/json", json.dumps({"dataframe_split": split})),
        "dataframe_records": ("application/json", json.dumps({"dataframe_records": records})),
        "instances": ("application/json", json.dumps({"instances": records})),
        "inputs_columns": ("application/json", json.dumps({"inputs": columns})),
        "inputs_records": ("application/json", json.dumps({"inputs": records})),
        "csv": ("text/csv", rows.to_csv(index=False)),
    }


@pytest.mark.parametrize(
    "fmt",
    ["dataframe_split", "dataframe_records", "instances", "inputs_columns", "inputs_records", "csv"],
)
def test_each_format_answers_like_pyfunc_and_mlflow_serve(fmt, uc, champion, client, mlflow_client):
    rows = models.frame(uc, 25, seed=5)
    expected = mlflow.pyfunc.load_model(f"models:/{uc.model_name}@champion").predict(rows).tolist()
    content_type, body = payloads(rows)[fmt]

    ours = client.post("/invocations", content=body, headers={"content-type": content_type})
    theirs = mlflow_client.post("/invocations", content=body, headers={"content-type": content_type})

    assert ours.status_code == 200, ours.text
    assert ours.json() == {"predictions": expected}
    assert theirs.json() == ours.json()
    assert ours.headers["x-model-version"] == champion


def one_row(uc) -> dict:
    return json.loads(models.frame(uc, 1, seed=3).to_json(orient="records"))[0]


def bad_requests(uc):
    row = one_row(uc)
    without_device = {k: v for k, v in row.items() if k != "device"}
    split = {"columns": list(row), "data": [list(row.values())]}
    csv_header = ",".join(row)
    j = "application/json"
    return {
        "missing column": (j, json.dumps({"dataframe_records": [without_device]}), 400,
                           "missing column(s): device"),
        "wrong type (text in a number column)": (
            j, json.dumps({"dataframe_records": [{**row, "monthly_charges": "abc"}]}), 400,
            "column 'monthly_charges' (double) row 0: expected a number or null, got a string"),
        "malformed JSON": (j, '{"dataframe_records": [', 400, "malformed JSON body"),
        "invalid UTF-8": (j, b'{"inputs": "\xff"}', 400, "malformed JSON body"),
        "empty body": (j, "", 400, "empty request body"),
        "oversized body": (j, json.dumps({"dataframe_records": [row] * 200}), 413,
                           "exceeds the limit of 20000 bytes"),
        "no format key": (j, json.dumps({"data": [row]}), 400, "exactly one of dataframe_split"),
        "two format keys": (j, json.dumps({"inputs": [row], "instances": [row]}), 400,
                            "exactly one of dataframe_split"),
        "top-level list": (j, json.dumps([row]), 400, "must be an object"),
        "no rows": (j, json.dumps({"dataframe_records": []}), 400, "no rows"),
        "ragged split": (j, json.dumps({"dataframe_split": {**split, "data": [[1.0]]}}), 400,
                         "row 0 must be a list of 9 values"),
        "unequal columns": (j, json.dumps({"inputs": {**{k: [v] for k, v in row.items()},
                                                       "plan": ["basic", "premium"]}}), 400,
                            "columns have different lengths"),
        "records differ": (j, json.dumps({"instances": [row, without_device]}), 400,
                           "row 1 has different columns than row 0; missing: device"),
        "CSV wrong type": ("text/csv", csv_header + "\n" + ",".join(
            "abc" if k == "monthly_charges" else str(v if v is not None else "") for k, v in row.items()),
            400, "column 'monthly_charges' (double) row 0: expected a number, got a string 'abc'"),
        "too many rows": (j, json.dumps({"dataframe_records": [row] * 40}), 413,
                          "the request has 40 rows; the limit is 30 (--max-rows)"),
        "CSV missing column": ("text/csv", "plan,region\nbasic,north\n", 400, "missing column(s): device"),
        "unsupported content type": ("text/plain", json.dumps({"inputs": [row]}), 415,
                                     "unsupported Content-Type 'text/plain'"),
        "unsupported charset": ("application/json; charset=latin-1", json.dumps({"inputs": [row]}),
                                415, "unsupported charset"),
        "number beyond float range": (
            j, json.dumps({"dataframe_records": [{**row, "monthly_charges": 7}]}).replace(
                '"monthly_charges": 7', '"monthly_charges": 1' + "0" * 400),
            400, "column 'monthly_charges' (double): int too large to convert to float"),
        "deep nesting": (j, "[" * 19_000, 400, "malformed JSON body"),
    }


@pytest.mark.parametrize("case", list(bad_requests(get_usecase("churn"))))
def test_each_bad_request_gets_its_4xx_with_a_message(case, uc, client):
    content_type, body, status, message = bad_requests(uc)[case]

    response = client.post("/invocations", content=body, headers={"content-type": content_type})

    assert response.status_code == status, response.text
    assert message in response.json()["message"]
    assert response.json()["error_code"]


def test_a_good_request_after_bad_ones_still_answers(uc, client):
    response = client.post("/invocations", json={"dataframe_records": [one_row(uc)]})
    assert response.status_code == 200
    assert len(response.json()["predictions"]) == 1


def test_a_model_error_on_valid_types_is_a_client_error(uc, client):
    row = {**one_row(uc), "monthly_charges": float("inf")}
    response = client.post(
        "/invocations", content=json.dumps({"dataframe_records": [row]}),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert "the model could not score these rows" in response.json()["message"]


def test_version_is_mlflows_and_the_model_details_have_their_own_path(uc, champion, client):
    assert client.get("/version").text == mlflow.__version__  # ScoringServerClient.get_version()
    version = client.get(f"/models/{uc.name}/version").json()
    assert client.get("/models/other/version").status_code == 404
    assert version["model_name"] == uc.model_name
    assert version["model_version"] == champion
    assert version["run_id"]
    assert version["loaded_at"]
    assert client.get("/health").json()["status"] == "ready"
    assert client.get("/ping").status_code == 200


def test_metrics_count_requests_errors_latency_and_version(uc, champion, client):
    client.post("/invocations", json={"dataframe_records": [one_row(uc)]})
    client.post("/invocations", content="{", headers={"content-type": "application/json"})

    text = client.get("/metrics").text

    assert 'esteira_requests_total{path="/invocations",status="200"}' in text
    assert 'esteira_request_errors_total{path="/invocations",status="400"}' in text
    assert 'esteira_request_latency_seconds_bucket{le="0.005",path="/invocations"}' in text
    assert f"esteira_model_version {float(champion)}" in text
    assert f'model_version="{champion}"' in text


def test_api_key_guards_invocations_and_reload_only(uc, settings, champion):
    app = create_app(uc, settings, ServerConfig(poll_seconds=0, api_key="s3cret", inference_log=False))
    body = {"dataframe_records": [one_row(uc)]}
    with TestClient(app) as client:
        wait_ready(client)
        assert client.post("/invocations", json=body).status_code == 401
        assert client.post("/invocations", json=body, headers={"x-api-key": "nope"}).status_code == 403
        assert client.post("/reload").status_code == 401
        assert client.post("/invocations", json=body, headers={"x-api-key": "s3cret"}).status_code == 200
        bearer = {"authorization": "Bearer s3cret"}
        assert client.post("/reload", headers=bearer).json()["changed"] is False
        assert client.get("/health").status_code == 200


def test_starts_without_a_champion_and_picks_it_up_by_polling(settings):
    from tests.integration.serving.conftest import fresh_usecase

    uc = fresh_usecase()
    app = create_app(uc, settings, ServerConfig(poll_seconds=0.5, inference_log=False))
    with TestClient(app) as client:
        time.sleep(1)
        health = client.get("/health")
        assert health.status_code == 503
        assert "no version of registered model" in health.json()["reason"]
        refused = client.post("/invocations", json={"dataframe_records": [one_row(uc)]})
        assert refused.status_code == 503
        assert "no model is loaded" in refused.json()["message"]
        assert client.get(f"/models/{uc.name}/version").json()["model_version"] is None
        assert client.post("/reload").status_code == 503

        version = models.register(uc, models.train(uc, seed=2))
        models.set_champion(uc, version)

        assert wait_ready(client)["model_version"] == version
        answered = client.post("/invocations", json={"dataframe_records": [one_row(uc)]})
        assert answered.status_code == 200


def test_fuzzing_the_openapi_schema_finds_no_server_error(client):
    import schemathesis
    from hypothesis import HealthCheck, given
    from hypothesis import settings as run_settings
    from hypothesis import strategies as st
    from schemathesis.checks import not_a_server_error

    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    cases = st.one_of(
        schema.as_strategy(schemathesis.GenerationMode.POSITIVE),
        schema.as_strategy(schemathesis.GenerationMode.NEGATIVE),
    )
    statuses = []

    @run_settings(max_examples=100, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
    @given(case=cases)
    def no_5xx(case):
        response = case.call_and_validate(checks=[not_a_server_error])
        statuses.append((case.operation.label, response.status_code))

    no_5xx()
    invocations = {s for label, s in statuses if label == "POST /invocations"}
    assert 200 in invocations and 400 in invocations  # both the model and the checks were reached
