"""One model server for every champion: a classifier (churn) and a regressor (demand) in one
real server process, each at ``/models/<uc>/...`` with its own version and inference log;
reloading or deploying one leaves the other's answers alone; deploying a use case the server
does not serve ends NothingToDo with the reason; a failed deploy says exactly what it undid."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sys
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml

from esteira.config import load_usecase
from esteira.results import NothingToDo
from esteira.serving.deploy import DeployError, deploy_champion
from esteira.serving.inference_log import read_inference_log
from esteira.serving.model_loader import served_usecases
from esteira.stack import process
from esteira.usecase import UseCase
from tests.integration.serving import models

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
API_KEY = "multi-key"


def _rows(uc: UseCase, count: int, seed: int) -> pd.DataFrame:
    """Raw feature columns of any use case: allowed categories, positive numbers."""
    rng = np.random.default_rng(seed)
    data = {}
    for feature in uc.features.definitions:
        if feature.type == "category":
            data[feature.name] = rng.choice(uc.schema_.columns[feature.source].allowed, count).astype(object)
        else:
            data[feature.name] = rng.gamma(2.0, 10.0, count).round(2)
    return pd.DataFrame(data)


def _register(uc: UseCase, seed: int) -> str:
    """A regression pipeline as training builds it (demand), or churn's test classifier."""
    if uc.problem_type != "regression":
        return models.register(uc, models.train(uc, seed=seed))
    from esteira.training.candidates import build_pipeline

    x = _rows(uc, 300, seed)
    y = x["price"] * (1 + seed / 10) + x["footfall_prev_day"] / 5
    pipeline = build_pipeline(uc, {"name": "ridge", "family": "ridge", "params": {}}, seed)
    return models.register(uc, (pipeline.fit(x, y), x))


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """churn and demand under model names of this module's own, in a folder of their own."""
    folder = tmp_path_factory.mktemp("usecases")
    suffix = uuid.uuid4().hex[:8]
    for source in (REPO / "include" / "usecases" / "churn.yaml", REPO / "tests" / "usecases" / "demand.yaml"):
        raw = yaml.safe_load(source.read_text())
        raw.setdefault("registry", {})["model_name"] = f"{raw['name']}_{suffix}"
        (folder / source.name).write_text(yaml.safe_dump(raw))
    return folder


@pytest.fixture(scope="module")
def usecases(folder) -> dict[str, UseCase]:
    return {p.stem: load_usecase(p) for p in sorted(folder.glob("*.yaml"))}


@pytest.fixture(scope="module")
def both(settings, folder, usecases):
    """Settings pointing at one server process started with ``--usecase churn,demand``,
    each use case with a champion."""
    champions = {}
    for name, uc in usecases.items():
        champions[name] = _register(uc, seed=1)
        models.set_champion(uc, champions[name])
    port = process.free_port()
    url = f"http://127.0.0.1:{port}"
    service = process.Service(
        name="Esteira model server (two use cases)",
        argv=[sys.executable, "-m", "esteira.serving.server", "--usecase", "churn,demand",
              "--port", str(port), "--poll-interval", "3600"],
        port=port,
        health_url=f"{url}/health",
        env={"ESTEIRA_HOME": str(settings.home), "ESTEIRA_USECASES_DIR": str(folder),
             "ESTEIRA_MODEL_SERVER_API_KEY": API_KEY, "MLFLOW_TRACKING_URI": settings.tracking_uri},
    )
    log = settings.home / f"model_server_{port}.log"
    pid = process.start(service, log)
    try:
        process.wait_healthy(service, pid, timeout=90, log_path=log)
        live = dataclasses.replace(settings, model_server_url=url, model_server_api_key=API_KEY,
                                   usecases_dir=folder)
        _wait_versions(live, champions)
        yield live, champions
    finally:
        process.stop_group(pid)


def _version(live, name: str) -> dict:
    return httpx.get(f"{live.model_server_url}/models/{name}/version").json()


def _wait_versions(live, expected: dict[str, str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(_version(live, n).get("model_version") == v for n, v in expected.items()):
            return
        time.sleep(0.3)
    raise AssertionError({n: _version(live, n) for n in expected})


def _score(live, uc: UseCase, seed: int = 7, request_id: str = "") -> httpx.Response:
    body = {"dataframe_records": json.loads(_rows(uc, 4, seed).to_json(orient="records"))}
    headers = {"x-api-key": API_KEY, **({"x-request-id": request_id} if request_id else {})}
    return httpx.post(f"{live.model_server_url}/models/{uc.name}/invocations", json=body, headers=headers)


def test_star_names_every_use_case_of_the_folder(settings, both):
    live, _ = both
    assert [uc.name for uc in served_usecases("*", live)] == ["churn", "demand"]
    assert [uc.name for uc in served_usecases("demand, churn,demand", live)] == ["demand", "churn"]


def test_each_use_case_answers_at_its_own_path_with_its_own_model(usecases, both):
    live, champions = both
    churn, demand = _score(live, usecases["churn"]), _score(live, usecases["demand"])

    assert churn.status_code == demand.status_code == 200, (churn.text, demand.text)
    assert churn.headers["x-model-version"] == champions["churn"]
    assert demand.headers["x-model-version"] == champions["demand"]
    assert set(churn.json()["predictions"]) <= {0, 1}  # a classifier's labels
    assert any(p not in (0, 1) for p in demand.json()["predictions"])  # a regressor's numbers
    for name, uc in usecases.items():
        details = _version(live, name)
        assert (details["model_name"], details["model_version"]) == (uc.model_name, champions[name])
    listed = httpx.get(f"{live.model_server_url}/models").json()["models"]
    assert sorted(listed) == ["churn", "demand"]
    plain = httpx.post(f"{live.model_server_url}/invocations", json={"inputs": []},
                       headers={"x-api-key": API_KEY})
    assert plain.status_code == 404 and "/models/<uc>/invocations" in plain.json()["message"]
    assert httpx.get(f"{live.model_server_url}/models/absent/version").status_code == 404


def test_each_use_case_keeps_its_own_inference_log(usecases, both):
    live, _ = both
    ids = {name: f"multi-log-{name}" for name in usecases}
    for name, uc in usecases.items():
        assert _score(live, uc, request_id=ids[name]).status_code == 200
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    window = (now - dt.timedelta(hours=1), now + dt.timedelta(hours=1))
    deadline = time.monotonic() + 15
    while True:
        logs = {name: read_inference_log(live, uc, *window) for name, uc in usecases.items()}
        if all((log["request_id"] == ids[n]).sum() == 4 for n, log in logs.items()) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    for name, log in logs.items():
        assert (log["request_id"] == ids[name]).sum() == 4
        assert set(log["model_name"]) == {usecases[name].model_name}  # nothing of the other


def test_reloading_one_use_case_leaves_the_other_answering_as_before(usecases, both):
    live, champions = both
    demand_before = _score(live, usecases["demand"]).json()
    churn = usecases["churn"]
    newer = _register(churn, seed=2)
    models.set_champion(churn, newer)

    reloaded = httpx.post(f"{live.model_server_url}/models/churn/reload", headers={"x-api-key": API_KEY})

    assert reloaded.status_code == 200, reloaded.text
    assert reloaded.json()["model_version"] == newer and reloaded.json()["changed"] is True
    assert _version(live, "churn")["model_version"] == newer
    assert _version(live, "demand")["model_version"] == champions["demand"]
    assert _score(live, usecases["demand"]).json() == demand_before
    champions["churn"] = newer


def test_deploy_reloads_only_its_use_case_on_the_shared_server(usecases, both):
    live, champions = both
    demand = usecases["demand"]
    demand_before = _score(live, demand).json()
    churn_before = _version(live, "churn")["model_version"]
    newer = _register(demand, seed=3)
    models.set_champion(demand, newer)
    undone = []

    result = deploy_champion(demand, live, newer, on_failure=lambda: undone.append(True))

    assert not isinstance(result, NothingToDo)
    assert (result["model_version"], result["path"]) == (newer, "/models/demand/invocations")
    assert result["previous_version"] == champions["demand"] and not undone
    assert _version(live, "churn")["model_version"] == churn_before
    assert _score(live, demand).json() != demand_before  # the new regressor answers
    champions["demand"] = newer


def test_deploy_of_a_use_case_the_server_does_not_serve_is_nothing_to_do(usecases, both):
    live, _ = both
    absent = usecases["churn"].model_copy(update={"name": "absent"})
    undone = []

    result = deploy_champion(absent, live, 1, on_failure=lambda: undone.append(True))

    assert isinstance(result, NothingToDo)
    assert f"no model server at {live.model_server_url} serves use case 'absent'" in result.reason
    assert "churn, demand" in result.reason  # what it does serve
    assert not undone


def test_a_failed_deploy_says_exactly_what_it_undid(usecases, both):
    live, _ = both
    churn = usecases["churn"]
    served = _version(live, "churn")["model_version"]
    stale = str(int(served) - 1)

    with pytest.raises(DeployError) as failed:
        deploy_champion(churn, live, stale, on_failure=lambda: "the champion alias moved back (test)")

    message = str(failed.value)
    assert f"/models/churn/version shows version {served}, expected {stale}" in message
    assert "the champion alias moved back (test)" in message
    assert f"the server at {live.model_server_url}/models/churn was not changed (serves version {served})" in message
    assert "rolled back" not in message


def test_the_promotion_deploy_step_skips_a_use_case_no_server_serves(usecases, both, monkeypatch):
    from esteira.stages import model_promotion

    live, _ = both
    absent = usecases["churn"].model_copy(update={"name": "absent"})
    monkeypatch.setenv("ESTEIRA_MODEL_SERVER_URL", live.model_server_url)
    monkeypatch.setenv("ESTEIRA_MODEL_SERVER_API_KEY", API_KEY)

    result = model_promotion.deploy(absent, {"version": 1, "previous_champion": None})

    assert isinstance(result, NothingToDo) and "serves use case 'absent'" in result.reason
