"""The databricks_serving deploy target against the Databricks emulator's Serving Endpoints
API, whose endpoints load the registered versions from a real MLflow registry: a version is
pushed and answers its canary; a failed update leaves the previous version serving; a
failed canary puts the previous version back."""

from __future__ import annotations

import pandas as pd
import pytest

from esteira.databricks import serving, workspace
from tests.databricks_emulator.service import small_churn

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




def test_a_promotion_updates_the_endpoint_and_rolls_back_when_its_update_fails(emulator, mlflow_server,
                                                                             tmp_path, monkeypatch):
    import uuid

    import yaml
    from databricks.sdk.service.serving import ServedEntityInput

    from esteira.cli import registry_history
    from esteira.config import get_usecase
    from esteira.registry import transitions
    from esteira.stages import model_promotion
    from tests.integration.training.test_registry_decisions import CHURN, _challenger
    from tests.unit.training.synthetic import churn_frame, write_table

    data = yaml.safe_load(CHURN.read_text())
    data["registry"]["model_name"] = f"churn_endpoint_{uuid.uuid4().hex[:8]}"
    data["databricks_serving"] = {"endpoint": "churn-promotion", "timeout_minutes": 1}
    (tmp_path / "usecases").mkdir()
    (tmp_path / "usecases" / "churn.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.setenv("ESTEIRA_HOME", str(tmp_path))
    monkeypatch.setenv("ESTEIRA_USECASES_DIR", str(tmp_path / "usecases"))
    monkeypatch.setenv("ESTEIRA_MODEL_SERVER_URL", "off")  # the endpoint is the only target
    uc = get_usecase("churn")
    frame = churn_frame(uc)
    uri = str(tmp_path / "data" / "churn" / uc.features.table)
    lineage = {"table_uri": uri, "version": write_table(frame, uri)}

    first, _ = _challenger(uc, frame, lineage, 1.0, None)
    deployed = model_promotion.deploy(uc, model_promotion.promote(uc, first, None, "promotion-1"))
    v1 = str(first["version"])
    assert deployed["deployed"] and deployed["databricks_serving"]["model_version"] == v1
    assert _served("churn-promotion") == v1

    second, _ = _challenger(uc, frame, lineage, 2.0, first["version"])
    promoted = model_promotion.promote(uc, second, None, "promotion-2")
    v2 = str(second["version"])
    # Someone else's update holds the endpoint: Databricks refuses a second one (409).
    workspace.client().serving_endpoints.update_config(
        "churn-promotion", served_entities=[ServedEntityInput(name=f"churn-{v1}", entity_name=uc.model_name,
                                                              entity_version=v1, workload_size="Small")])
    with pytest.raises(serving.ServingDeployError,
                       match=rf"version {v2} did not finish \(Endpoint churn-promotion is currently being updated"
                             rf".*the champion alias rolled back from version {v2} to version {v1}"):
        model_promotion.deploy(uc, promoted)
    assert transitions.get_alias_version(uc, "champion") == first["version"]
    assert _served("churn-promotion") == v1
    failed = [e for e in registry_history("churn") if e["action"] == "deploy_failed"]
    assert failed and "serving endpoint churn-promotion" in failed[-1]["reason"]
