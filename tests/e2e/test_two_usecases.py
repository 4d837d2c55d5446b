"""Two use cases of different problem types on one embedded stack, through the real scheduler:
churn (a classifier, promoted after a human approval) and demand (a regressor, promoted by its
gate). Both are promoted; the stack's one model server answers each at its own path with its
own version, and promoting the second leaves the first's answers as they were."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import yaml

from tests.e2e.conftest import REPO, esteira, make_stack_env

pytestmark = pytest.mark.e2e

# Each use case's history, and the smallest belt that still trains and promotes a model.
INTERVALS = {
    "churn": {"interval_start": "2025-12-01", "interval_end": "2026-03-01"},
    "demand": {"interval_start": "2026-01-01", "interval_end": "2026-02-15"},
}
STAGES = ("feature_refresh", "model_training", "model_promotion")


def _shortened(source: Path, generator: dict, candidates: int) -> dict:
    data = yaml.safe_load(source.read_text())
    data["source"]["generator"].update(generator)
    data["training"]["candidates"] = data["training"]["candidates"][:candidates]
    return data


@pytest.fixture(scope="module")
def two_usecase_stack():
    """The embedded stack with churn and demand, and one model server for both."""
    env = make_stack_env()
    usecases = Path(env["ESTEIRA_HOME"]) / "usecases"
    usecases.mkdir()
    churn = _shortened(REPO / "include/usecases/churn.yaml", {"entities": 600}, candidates=1)
    demand = _shortened(REPO / "tests/usecases/demand.yaml", {"days": 45}, candidates=1)
    for data in (churn, demand):
        (usecases / f"{data['name']}.yaml").write_text(yaml.safe_dump(data))
    env |= {"ESTEIRA_USECASES_DIR": str(usecases), "ESTEIRA_SERVE_USECASE": "churn,demand"}
    try:
        started = esteira(env, "up")
        assert started.returncode == 0, started.stdout + started.stderr
        with pytest.MonkeyPatch.context() as patch:
            for key, value in env.items():
                patch.setenv(key, value)
            from esteira.config import get_settings

            settings = get_settings()
            patch.setenv("MLFLOW_TRACKING_URI", settings.tracking_uri)
            yield settings
    finally:
        esteira(env, "down")


def _score(settings, name: str, example: dict) -> tuple[str, list]:
    answer = httpx.post(f"{settings.model_server_url}/models/{name}/invocations",
                        content=json.dumps(example), headers={"content-type": "application/json"})
    assert answer.status_code == 200, answer.text[:500]
    return answer.headers["x-model-version"], answer.json()["predictions"]


def test_one_server_answers_both_promoted_use_cases_at_their_own_paths(two_usecase_stack):
    from esteira.config import get_usecase
    from esteira.demo import Belt
    from esteira.features.generator import generate_landing
    from esteira.serving.deploy import serving_example
    from esteira.stack.airflow_api import AirflowClient

    settings = two_usecase_stack
    client = AirflowClient.for_settings(settings)
    answers: dict[str, tuple[str, list]] = {}
    examples: dict[str, dict] = {}
    for name, interval in INTERVALS.items():
        uc = get_usecase(name, settings)
        generate_landing(uc, settings.landing_dir / uc.source.landing)
        belt = Belt(client, name)
        for stage in STAGES:
            client.wait_for_dag(belt.dag(stage))
            client.unpause(belt.dag(stage))
        seen = {s: belt.known_runs(s) for s in ("model_training", "model_promotion")}

        belt.run("feature_refresh", interval)
        challenger = belt.xcom(belt.follow("model_training", seen["model_training"]), "register_challenger")
        assert challenger, f"{name}: the gate rejected the first model"
        promotion = belt.follow("model_promotion", seen["model_promotion"],
                                approve=uc.registry.require_approval)

        version = str(challenger["version"])
        deployed = belt.xcom(promotion, "deploy_champion")
        assert deployed["path"] == f"/models/{name}/invocations"
        assert deployed["model_version"] == version
        details = httpx.get(f"{settings.model_server_url}/models/{name}/version").json()
        assert (details["model_name"], details["model_version"]) == (uc.model_name, version)
        examples[name] = serving_example(settings, uc.model_name, version)
        answers[name] = _score(settings, name, examples[name])
        assert answers[name][0] == version
        for earlier in answers:  # the use case promoted before answers as it did
            assert _score(settings, earlier, examples[earlier]) == answers[earlier], earlier

    churn, demand = answers["churn"][1], answers["demand"][1]
    assert set(churn) <= {0, 1}  # a classifier's labels
    assert any(p not in (0, 1) for p in demand)  # a regressor's numbers
    plain = httpx.post(f"{settings.model_server_url}/invocations", json={"inputs": []})
    assert plain.status_code == 404 and "churn, demand" in plain.json()["message"]
