"""The churn belt on Databricks through the real scheduler, against the Databricks emulator
(tests/databricks_emulator; not a workspace): the code shipped to a volume by `esteira
databricks deploy`, the embedded stack started with what it printed, the refresh and the
training as Databricks runs of the deployed jobs, the feature tables registered in Unity
Catalog, the champion served by a Model Serving endpoint (ESTEIRA_MODEL_SERVER_URL=off:
the endpoint is the only deploy target), the champion's batch scoring as a Databricks run with
the predictions table in Unity Catalog, and a monitoring window whose table is there too."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import httpx
import pytest
import yaml

from tests.databricks_emulator import service
from tests.e2e.conftest import esteira, make_stack_env

pytestmark = pytest.mark.e2e

ENDPOINT = "churn-champion"
INTERVAL = {"interval_start": "2026-01-01", "interval_end": "2026-03-01"}
CANDIDATES = [
    {"family": "logistic_regression", "params": {"C": [1.0]}},
    {"family": "random_forest", "params": {"n_estimators": [20], "max_depth": [5]}},
]
STAGES = ("feature_refresh", "model_training", "model_promotion", "batch_inference", "drift_monitoring")
MONITORED = {"interval_start": "2026-02-27", "interval_end": "2026-02-28"}


def _exported(output: str) -> dict[str, str]:
    """The ``export KEY=value`` lines `esteira databricks deploy` prints, as a dict."""
    lines = [line.removeprefix("export ") for line in output.splitlines() if line.startswith("export ")]
    return dict(shlex.split(line)[0].split("=", 1) for line in lines)


@pytest.fixture(scope="module")
def databricks_stack():
    """The emulator, the code deployed to its volume, and the embedded stack whose runs go
    to it: the churn use case computing and training on Databricks, its tables in Unity
    Catalog, its champion on a serving endpoint."""
    env = make_stack_env()
    home = Path(env["ESTEIRA_HOME"])
    mlflow = {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{env['ESTEIRA_MLFLOW_PORT']}",
              "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
    path = service.small_churn(home / "usecases")
    data = yaml.safe_load(path.read_text())
    data["training"]["candidates"] = CANDIDATES
    data["registry"]["require_approval"] = False
    data["compute"] = {"feature_refresh": "databricks", "training": "databricks", "batch_inference": "databricks"}
    data["tables"] = {"catalog": service.UC_SCHEMA[0], "schema": service.UC_SCHEMA[1]}
    data["databricks_serving"] = {"endpoint": ENDPOINT, "timeout_minutes": 2}
    path.write_text(yaml.safe_dump(data))
    (home / "databricks").mkdir()
    with service.running(home / "databricks", env=mlflow) as emulator:
        env |= {"ESTEIRA_USECASES_DIR": str(path.parent), "AIRFLOW_CONN_DATABRICKS_DEFAULT": emulator.connection_uri}
        # The cluster spec without the use cases: deploy adds where it put them.
        env |= service.cluster_env(home, None, environ=mlflow)
        shipped = esteira(env, "databricks", "deploy", "--volume", service.VOLUME)
        assert shipped.returncode == 0, shipped.stdout + shipped.stderr
        printed = _exported(shipped.stdout)
        env |= printed
        # The endpoint is the only deploy target: no Esteira model server.
        env |= {"ESTEIRA_DATABRICKS_WAREHOUSE_ID": service.WAREHOUSE_ID,
                "ESTEIRA_MODEL_SERVER_URL": "off", "ESTEIRA_SERVE_USECASE": ""}
        try:
            started = esteira(env, "up")
            assert started.returncode == 0, started.stdout + started.stderr
            with pytest.MonkeyPatch.context() as patch:
                for key, value in {**env, **mlflow}.items():
                    patch.setenv(key, value)
                from esteira.config import get_settings

                yield {"emulator": emulator, "settings": get_settings(), "printed": printed}
        finally:
            esteira(env, "down")
            import mlflow

            mlflow.set_tracking_uri(None)  # not this stopped stack's server for the next module


@pytest.fixture(scope="module")
def cycle(databricks_stack):
    """Refresh an interval, then the training, promotion and batch scoring its events start,
    each to success; then one monitoring window."""
    from esteira.config import get_usecase
    from esteira.demo import Belt
    from esteira.features.generator import generate_landing
    from esteira.stack.airflow_api import AirflowClient

    settings, emulator = databricks_stack["settings"], databricks_stack["emulator"]
    uc = get_usecase("churn", settings)
    generate_landing(uc, settings.landing_dir / uc.source.landing)
    client = AirflowClient.for_settings(settings)
    belt = Belt(client, "churn")
    for stage in STAGES:
        client.wait_for_dag(belt.dag(stage))
        client.unpause(belt.dag(stage))
    seen = {stage: belt.known_runs(stage) for stage in ("model_training", "model_promotion", "batch_inference")}
    refresh = belt.run("feature_refresh", INTERVAL)
    training = belt.follow("model_training", seen["model_training"])
    challenger = belt.xcom(training, "register_challenger")
    assert challenger, "the gate rejected the first model"
    promotion = belt.follow("model_promotion", seen["model_promotion"], approve=uc.registry.require_approval)
    scoring = belt.follow("batch_inference", seen["batch_inference"])  # started by the champion event
    monitoring = belt.run("drift_monitoring", MONITORED)
    return {"uc": uc, "belt": belt, "refresh": refresh, "training": training, "promotion": promotion,
            "scoring": scoring, "monitoring": monitoring, "challenger": challenger,
            "submits": emulator.requests("/runs/submit"), **databricks_stack}


def test_each_task_succeeded_or_skipped_at_its_first_try(cycle):
    """Retries would hide a Databricks path that fails under the scheduler and then recovers."""
    for run in (cycle["refresh"], cycle["training"], cycle["promotion"], cycle["scoring"], cycle["monitoring"]):
        tries = {(t["task_id"], t["map_index"]): (t["state"], t["try_number"]) for t in run.tasks}
        assert all((state, tried) in {("success", 1), ("skipped", 0), ("skipped", 1)}
                   for state, tried in tries.values()), (run.dag_id, tries)


def test_refresh_training_and_scoring_ran_as_databricks_runs_of_the_deployed_jobs(cycle):
    printed = cycle["printed"]
    assert set(printed) == {"ESTEIRA_DATABRICKS_LIBRARIES_JSON", "ESTEIRA_DATABRICKS_JOBS_PATH",
                            "ESTEIRA_DATABRICKS_CLUSTER_JSON"}
    jobs_path, cluster = printed["ESTEIRA_DATABRICKS_JOBS_PATH"], json.loads(printed["ESTEIRA_DATABRICKS_CLUSTER_JSON"])
    usecases = cluster["spark_env_vars"]["ESTEIRA_USECASES_DIR"]
    assert jobs_path.startswith(f"{service.VOLUME}/esteira/jobs/")
    assert usecases.startswith(f"{service.VOLUME}/esteira/usecases/")
    tasks = [submit["params"]["tasks"][0] for submit in cycle["submits"]]
    files = [task["spark_python_task"]["python_file"] for task in tasks]
    assert {f"{jobs_path}/{step}.py" for step in ("feature_refresh", "train_candidate", "batch_inference")} <= set(files)
    assert all(f.startswith(jobs_path + "/") for f in files), files
    assert files.count(f"{jobs_path}/train_candidate.py") >= len(CANDIDATES)
    wheel = json.loads(cycle["printed"]["ESTEIRA_DATABRICKS_LIBRARIES_JSON"])
    assert all(task["libraries"] == wheel for task in tasks)
    assert all(task["new_cluster"]["spark_env_vars"]["ESTEIRA_USECASES_DIR"] == usecases for task in tasks)
    refreshed = cycle["belt"].xcom(cycle["refresh"], "refresh_features")
    assert refreshed["rows_written"] > 0


def test_the_feature_tables_are_in_unity_catalog_with_their_primary_key(cycle):
    published = cycle["belt"].xcom(cycle["refresh"], "publish_features")
    assert published["unity_catalog"][:2] == ["main.esteira.churn_features", "main.esteira.churn_features_labels"]
    features = cycle["emulator"].tables()["main.esteira.churn_features"]
    assert features["location"] == published["table_uri"]
    assert features["constraints"]["churn_features_pk"]["primary_key"] == ["customer_id", "event_ts TIMESERIES"]


def test_the_champion_moved_and_the_serving_endpoint_answers_with_it(cycle):
    from esteira.databricks import workspace
    from esteira.registry import transitions
    from esteira.serving.deploy import serving_example

    uc, version = cycle["uc"], str(cycle["challenger"]["version"])
    assert transitions.get_alias_version(uc, "champion") == int(version)
    deployed = cycle["belt"].xcom(cycle["promotion"], "deploy_champion")
    assert deployed["databricks_serving"]["model_version"] == version
    assert deployed["databricks_serving"]["canary_rows"] > 0
    client = workspace.client()
    served = client.serving_endpoints.get(ENDPOINT).config.served_entities
    assert [(e.entity_name, e.entity_version) for e in served] == [(uc.model_name, version)]
    example = serving_example(cycle["settings"], uc.model_name, version)
    answer = httpx.post(f"{cycle['emulator'].url}/serving-endpoints/{ENDPOINT}/invocations",
                        content=json.dumps(example), headers={"Authorization": f"Bearer {service.TOKEN}",
                                                              "Content-Type": "application/json"})
    assert answer.status_code == 200, answer.text[:500]
    predictions = answer.json()["predictions"]
    assert len(predictions) == len(example["dataframe_split"]["data"]) and set(predictions) <= {0, 1}


def test_predictions_and_monitoring_are_in_unity_catalog(cycle):
    scored = cycle["belt"].xcom(cycle["scoring"], "score_batch")
    assert scored["rows"] > 0 and scored["model_version"] == str(cycle["challenger"]["version"])
    published = cycle["belt"].xcom(cycle["scoring"], "publish_predictions")
    assert published["unity_catalog"] == ["main.esteira.churn_predictions"]
    monitored = cycle["belt"].xcom(cycle["monitoring"], "monitor_window")
    assert monitored["unity_catalog"] == ["main.esteira.churn_monitoring"]
    registered = cycle["emulator"].tables()
    assert registered["main.esteira.churn_predictions"]["location"] == scored["table_uri"]
    assert "main.esteira.churn_monitoring" in registered
