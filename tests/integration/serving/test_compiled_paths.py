"""The compiled (ONNX) and sklearn paths answer alike through the server, for every family.

Each candidate family of both problem types is built as training builds it, registered,
compiled by the registration hook, and served twice from the same version: once from its
ONNX graph, once from its sklearn pipeline. The test set goes through both servers in every
request format; labels must be identical, probabilities and regression values within the
declared tolerances. A pipeline the converter cannot handle is served by sklearn, and the
version's tags say why.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from esteira import tracking
from esteira.serving.compilation import compile_version
from esteira.serving.compiled import CompiledRecord
from esteira.serving.conversion import PROBABILITY_TOLERANCE, REGRESSION_TOLERANCE
from esteira.serving.server import ServerConfig, create_app
from tests.integration.serving import models
from tests.integration.serving.conftest import fresh_usecase
from tests.integration.serving.test_server import wait_ready

pytestmark = pytest.mark.integration

FAMILIES = {  # small settings: the conversion is the same at any size
    "binary_classification": {
        "logistic_regression": {},
        "random_forest": {"n_estimators": 20, "max_depth": 8},
        "hist_gradient_boosting": {"max_iter": 30},
    },
    "regression": {
        "ridge": {},
        "random_forest_regressor": {"n_estimators": 20, "max_depth": 8},
        "hist_gradient_boosting_regressor": {"max_iter": 30},
    },
}
FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs_columns",
           "inputs_records", "csv", "parquet")


def bodies(rows, probabilities: bool) -> dict[str, tuple[str, bytes]]:
    records = json.loads(rows.to_json(orient="records"))
    split = json.loads(rows.to_json(orient="split", index=False))
    params = {"params": {"probabilities": True}} if probabilities else {}

    def as_json(payload) -> tuple[str, bytes]:
        return "application/json", json.dumps({**payload, **params}).encode()

    parquet = io.BytesIO()
    rows.to_parquet(parquet)
    return {
        "dataframe_split": as_json({"dataframe_split": split}),
        "dataframe_records": as_json({"dataframe_records": records}),
        "instances": as_json({"instances": records}),
        "inputs_columns": as_json({"inputs": {c: [r[c] for r in records] for c in rows.columns}}),
        "inputs_records": as_json({"inputs": records}),
        "csv": ("text/csv", rows.to_csv(index=False).encode()),
        "parquet": ("application/vnd.apache.parquet", parquet.getvalue()),
    }


def serve(uc, settings, compiled: bool) -> TestClient:
    config = ServerConfig(poll_seconds=0, inference_log=False, compiled=compiled, max_body_bytes=20_000_000)
    return TestClient(create_app(uc, settings, config))


def answers(client: TestClient, content_type: str, body: bytes) -> list:
    response = client.post("/invocations", content=body, headers={"content-type": content_type})
    assert response.status_code == 200, response.text[:500]
    return response.json()["predictions"]


@pytest.mark.parametrize(("problem_type", "family"),
                         [(p, f) for p, families in FAMILIES.items() for f in families])
def test_compiled_and_sklearn_paths_answer_alike_in_every_format(problem_type, family, settings):
    uc = fresh_usecase().model_copy(update={"problem_type": problem_type})
    version = models.register(uc, models.train_family(uc, family, seed=5, params=FAMILIES[problem_type][family]))
    models.set_champion(uc, version)
    test_set = models.frame(uc, 300, seed=6)

    record = compile_version(uc, settings, version, test_set)

    assert record.equivalent, record.reason
    classifier = problem_type == "binary_classification"
    with serve(uc, settings, compiled=True) as onnx, serve(uc, settings, compiled=False) as sklearn:
        assert wait_ready(onnx)["compiled"] == "onnx"
        wait_ready(sklearn)
        for fmt, (content_type, body) in bodies(test_set, probabilities=classifier).items():
            compiled, reference = answers(onnx, content_type, body), answers(sklearn, content_type, body)
            assert len(compiled) == len(reference) == 300, fmt
            if classifier and isinstance(reference[0], dict):
                assert [a["prediction"] for a in compiled] == [a["prediction"] for a in reference], fmt
                gap = np.abs(np.array([a["probability"] for a in compiled])
                             - np.array([a["probability"] for a in reference])).max()
                assert gap <= PROBABILITY_TOLERANCE, (fmt, gap)
            elif classifier:
                assert compiled == reference, fmt
            else:
                expected = np.array(reference)
                gap = (np.abs(np.array(compiled) - expected) / np.maximum(np.abs(expected), 1)).max()
                assert gap <= REGRESSION_TOLERANCE, (fmt, gap)


def test_a_pipeline_the_converter_cannot_handle_is_served_by_sklearn_with_the_reason(settings):
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder

    uc = fresh_usecase()
    x = models.frame(uc, 300, seed=8).fillna({"session_minutes": 0.0})
    y = (x["monthly_charges"] > x["monthly_charges"].median()).astype(int)
    numeric = [f.name for f in uc.features.definitions if f.type != "category"]
    categorical = [f.name for f in uc.features.definitions if f.type == "category"]
    pipeline = Pipeline([
        ("pre", ColumnTransformer([("log", FunctionTransformer(np.log1p), numeric),
                                   ("cat", OneHotEncoder(handle_unknown="ignore"), categorical)])),
        ("model", LogisticRegression(max_iter=500)),
    ]).fit(x, y)
    version = models.register(uc, (pipeline, x))
    models.set_champion(uc, version)

    record = compile_version(uc, settings, version, x)

    assert not record.equivalent and record.uri == ""
    assert "skl2onnx cannot convert this pipeline" in record.reason
    assert "FunctionTransformer" in record.reason or "log1p" in record.reason
    tags = tracking.client(settings).get_model_version(uc.model_name, version).tags
    assert CompiledRecord.from_tags(tags).reason == record.reason
    with serve(uc, settings, compiled=True) as client:
        health = wait_ready(client)
        assert health["compiled"] == "none" and health["compiled_reason"] == record.reason
        content_type, body = bodies(x.head(20), probabilities=True)["dataframe_split"]
        served = answers(client, content_type, body)
    assert [a["prediction"] for a in served] == pipeline.predict(x.head(20)).tolist()
    assert [a["probability"] for a in served] == pipeline.predict_proba(x.head(20))[:, 1].tolist()
