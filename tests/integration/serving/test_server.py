"""The online server speaks MLflow's protocol, gives MLflow's answers, and rejects bad input clearly."""

from __future__ import annotations

import json
import time

import mlflow
import pytest
from fastapi.testclient import TestClient

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
    app = create_app(uc, settings, ServerConfig(poll_seconds=0, max_body_bytes=20_000))
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
