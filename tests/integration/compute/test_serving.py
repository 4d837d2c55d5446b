"""The databricks_serving deploy target against the Databricks emulator's Serving Endpoints
API, whose endpoints load the registered versions from a real MLflow registry: a version is
pushed and answers its canary; a failed update leaves the previous version serving; a
failed canary puts the previous version back."""

from __future__ import annotations

import pandas as pd
import pytest

from esteira.databricks import serving, workspace

from .conftest import small_churn

pytestmark = pytest.mark.integration

MODEL = "serving_check"
FRAME = pd.DataFrame({"a": [0.1, 0.5, 0.9], "b": [1.0, 0.0, 1.0]})
CANARY = {"dataframe_split": {"columns": ["a", "b"], "data": FRAME.values.tolist()}}


def _use_case(tmp_path, endpoint: str):
    import yaml

    from esteira.config import load_usecase

    path = small_churn(tmp_path / "usecases")
    data = yaml.safe_load(path.read_text())
    data["registry"] = {"model_name": MODEL}
    data["databricks_serving"] = {"endpoint": endpoint, "timeout_minutes": 1}
    path.write_text(yaml.safe_dump(data))
    return load_usecase(path)


def _register(model) -> str:
    import mlflow

    with mlflow.start_run():
        if isinstance(model, mlflow.pyfunc.PythonModel):
            info = mlflow.pyfunc.log_model(name="model", python_model=model, input_example=FRAME,
                                           registered_model_name=MODEL)
        else:
            info = mlflow.sklearn.log_model(model, name="model", input_example=FRAME, registered_model_name=MODEL)
    return str(info.registered_model_version)


def _broken_version() -> str:
    """A registered version whose artifacts are gone: the endpoint cannot build it."""
    import mlflow

    with mlflow.start_run() as run:
        pass
    return mlflow.MlflowClient().create_model_version(MODEL, f"runs:/{run.info.run_id}/no-model", run.info.run_id).version


@pytest.fixture(scope="module")
def versions(mlflow_server):
    import mlflow
    from sklearn.linear_model import LogisticRegression

    class OnePrediction(mlflow.pyfunc.PythonModel):  # loads, but answers one row whatever it is sent
        def predict(self, context, model_input, params=None):
            return [0.0]

    good = LogisticRegression().fit(FRAME, [0, 1, 1])
    return {"v1": _register(good), "v2": _register(good), "one_row": _register(OnePrediction()),
            "broken": _broken_version()}


def _served(name: str) -> str:
    endpoint = workspace.client().serving_endpoints.get(name)
    return endpoint.config.served_entities[0].entity_version


def test_a_version_is_pushed_and_answers_its_canary(emulator, versions, tmp_path):
    uc = _use_case(tmp_path, "churn-first")
    first = serving.deploy_version(uc, workspace.client(), versions["v1"], CANARY)
    assert first == {"endpoint": "churn-first", "model_version": versions["v1"], "previous_version": None,
                     "changed": True, "canary_rows": 3}
    second = serving.deploy_version(uc, workspace.client(), versions["v2"], CANARY)
    assert (second["previous_version"], second["changed"]) == (versions["v1"], True)
    assert _served("churn-first") == versions["v2"]
    puts = [r for r in emulator.requests("/serving-endpoints/churn-first/config") if r["method"] == "PUT"]
    assert puts[-1]["params"]["served_entities"][0]["entity_version"] == versions["v2"]
    again = serving.deploy_version(uc, workspace.client(), versions["v2"], CANARY)
    assert again["changed"] is False


def test_a_failed_update_leaves_the_previous_version_serving(emulator, versions, tmp_path):
    uc = _use_case(tmp_path, "churn-update-fails")
    serving.deploy_version(uc, workspace.client(), versions["v1"], CANARY)
    with pytest.raises(serving.ServingDeployError,
                       match=rf"update to {MODEL} version {versions['broken']} did not finish "
                             rf"\(Served entity .* failed to load: .*\); it still serves version {versions['v1']}"):
        serving.deploy_version(uc, workspace.client(), versions["broken"], CANARY)
    assert _served("churn-update-fails") == versions["v1"]


def test_a_failed_canary_puts_the_previous_version_back(emulator, versions, tmp_path):
    uc = _use_case(tmp_path, "churn-canary-fails")
    serving.deploy_version(uc, workspace.client(), versions["v1"], CANARY)
    with pytest.raises(serving.ServingDeployError,
                       match=rf"canary of {MODEL} version {versions['one_row']} failed \(expected 3 predictions, "
                             rf"got 1\); the endpoint serves version {versions['v1']} again"):
        serving.deploy_version(uc, workspace.client(), versions["one_row"], CANARY)
    assert _served("churn-canary-fails") == versions["v1"]


