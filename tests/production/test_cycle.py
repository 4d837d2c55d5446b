"""The full belt on the production topology: Celery workers, Postgres, Redis, MLflow server."""

from __future__ import annotations

import json
import urllib.request

import pytest

from tests.production.conftest import model_versions, wait_until

pytestmark = pytest.mark.production


def test_full_cycle_runs_on_celery_and_postgres(cycle, usecase, topology):
    assert {stage: outcome.state for stage, outcome in cycle.items()} == {
        "feature_refresh": "success", "model_training": "success",
        "model_promotion": "success", "batch_inference": "success",
    }
    from mlflow import MlflowClient

    (version,) = model_versions(usecase.model_name)
    assert MlflowClient().get_model_version_by_alias(usecase.model_name, "champion").version == version.version
    from deltalake import DeltaTable

    from esteira.config import get_settings

    predictions = DeltaTable(get_settings().table_uri(usecase.name, "predictions")).to_pandas()
    assert len(predictions) > 0


def test_model_server_follows_the_champion_and_requires_its_key(cycle, usecase, topology):
    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"{topology.model_server_url}/health", timeout=5) as response:
                return json.loads(response.read()).get("status") == "ready"
        except OSError:
            return False

    wait_until(ready, 60, "the model server loads the champion")
    request = urllib.request.Request(f"{topology.model_server_url}/invocations", data=b"{}",
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 401


def test_a_request_by_key_is_served_from_the_topologys_redis(cycle, usecase, topology):
    """The refresh's publish task (on a Celery worker) materialized the online store into the
    topology's Redis; the model server fills a request carrying only the key from it."""
    from esteira.config import get_settings
    from esteira.features.online import RedisStore, open_store

    store = open_store(get_settings(), usecase)
    assert isinstance(store, RedisStore) and store.materialized_version() is not None
    key = sorted(store.digests())[0]
    body = json.dumps({"dataframe_records": [{usecase.entity: int(key)}]}).encode()
    request = urllib.request.Request(f"{topology.model_server_url}/invocations", data=body, headers={
        "Content-Type": "application/json", "X-API-Key": topology.model_server_api_key})
    with urllib.request.urlopen(request, timeout=10) as response:
        answer = json.loads(response.read())
    (looked_up,) = answer["online"]
    assert looked_up["key"] == key and looked_up["feature_ts"] == store.get_many([key])[0].feature_ts.isoformat()
    assert len(answer["predictions"]) == 1
