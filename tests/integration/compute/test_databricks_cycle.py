"""The churn belt on Databricks, against the Databricks emulator, through the DAG files
(`dag.test()`, not the scheduler): the code deployed to a volume, the refresh and training
as Databricks runs of the deployed jobs, the feature tables registered in Unity Catalog by
the refresh DAG, the champion pushed to a Model Serving endpoint by the promotion DAG."""

from __future__ import annotations

import uuid

import pytest
import yaml

from esteira.databricks import deploy, workspace
from tests.databricks_emulator.service import (
    UC_SCHEMA,
    VOLUME,
    WAREHOUSE_ID,
    cluster_env,
    small_churn,
)

from .test_databricks_backend import CANDIDATES, INTERVAL, _dag, _xcoms

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ENDPOINT = "churn-cycle"


@pytest.fixture(scope="module")
def cycle(tmp_path_factory, mlflow_server, emulator, airflow_db):
    from esteira.config import get_settings, load_usecase
    from esteira.features.generator import generate_landing

    home, usecases = tmp_path_factory.mktemp("cycle_home"), tmp_path_factory.mktemp("cycle_usecases")
    path = small_churn(usecases)
    data = yaml.safe_load(path.read_text())
    data["registry"] = {**data.get("registry", {}), "model_name": f"churn_cycle_{uuid.uuid4().hex[:8]}",
                        "require_approval": False}
    data["tables"] = {"catalog": UC_SCHEMA[0], "schema": UC_SCHEMA[1]}
    data["databricks_serving"] = {"endpoint": ENDPOINT, "timeout_minutes": 2}
    path.write_text(yaml.safe_dump(data))
    uc = load_usecase(path)
    wheel = deploy.build_wheel(tmp_path_factory.mktemp("cycle_dist"))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ESTEIRA_HOME", str(home))
        env.setenv("ESTEIRA_USECASES_DIR", str(usecases))
        env.setenv("ESTEIRA_DATABRICKS_WAREHOUSE_ID", WAREHOUSE_ID)
        env.setenv("ESTEIRA_MODEL_SERVER_URL", "off")  # the endpoint is the deploy target
        deployed = deploy.deploy(workspace.client(), VOLUME, wheel, [path])
        for key, value in cluster_env(home, deployed.usecases_dir, ESTEIRA_DATABRICKS_JOBS_PATH=deployed.jobs_path).items():
            env.setenv(key, value)
        generate_landing(uc, get_settings().landing_dir / uc.source.landing)
        submits_before = len(emulator.requests("/runs/submit"))
        refresh = _dag("feature_refresh", uc).test(run_conf={**INTERVAL, "compute_backend": "databricks"})
        training = _dag("model_training", uc).test(run_conf={"compute_backend": "databricks", "candidates": CANDIDATES})
        challenger = _xcoms(training, "register_challenger")[0]
        promotion = _dag("model_promotion", uc).test(run_conf={"version": int(challenger["version"]),
                                                               "require_approval": False})
        yield {"uc": uc, "deployed": deployed, "refresh": refresh, "training": training, "promotion": promotion,
               "challenger": challenger, "submits": emulator.requests("/runs/submit")[submits_before:]}


def test_the_belt_runs_on_databricks_with_unity_catalog_and_model_serving(cycle, emulator):
    from esteira.registry import transitions

    for run in (cycle["refresh"], cycle["training"], cycle["promotion"]):
        states = {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}
        assert run.state == "success", (run.dag_id, states)
    files = [s["params"]["tasks"][0]["spark_python_task"]["python_file"] for s in cycle["submits"]]
    assert files and all(f.startswith(cycle["deployed"].jobs_path + "/") for f in files)

    published = _xcoms(cycle["refresh"], "publish_features")[0]
    assert published["unity_catalog"][:2] == ["main.esteira.churn_features", "main.esteira.churn_features_labels"]
    features = emulator.tables()["main.esteira.churn_features"]
    assert features["location"] == published["table_uri"]
    assert features["constraints"]["churn_features_pk"]["primary_key"] == ["customer_id", "event_ts TIMESERIES"]

    version = str(cycle["challenger"]["version"])
    assert transitions.get_alias_version(cycle["uc"], "champion") == int(version)
    deployed = _xcoms(cycle["promotion"], "deploy_champion")[0]
    assert deployed["databricks_serving"]["model_version"] == version
    endpoint = workspace.client().serving_endpoints.get(ENDPOINT)
    assert endpoint.config.served_entities[0].entity_version == version
    assert endpoint.config.served_entities[0].entity_name == cycle["uc"].model_name
