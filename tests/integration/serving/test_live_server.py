"""The real server (uvicorn, one worker): hot swap under a concurrent stream, and deploy."""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
import time

import httpx
import mlflow
import pytest
import yaml

from esteira.config import get_settings
from esteira.serving.deploy import DeployError, deploy_champion
from esteira.stack import process
from tests.integration.serving import models

pytestmark = pytest.mark.integration

API_KEY = "test-key"


@pytest.fixture(scope="module")
def live(uc, settings, champion, tmp_path_factory):
    """The server as ``python -m esteira.serving.server`` starts it, polling only hourly."""
    usecases = tmp_path_factory.mktemp("usecases")
    raw = yaml.safe_load((get_settings().usecases_dir / "churn.yaml").read_text())
    raw["registry"]["model_name"] = uc.model_name
    (usecases / "churn.yaml").write_text(yaml.safe_dump(raw))
    port = process.free_port()
    url = f"http://127.0.0.1:{port}"
    service = process.Service(
        name="Esteira model server",
        argv=[sys.executable, "-m", "esteira.serving.server", "--usecase", "churn",
              "--port", str(port), "--poll-interval", "3600"],
        port=port,
        health_url=f"{url}/health",
        env={"ESTEIRA_HOME": str(settings.home), "ESTEIRA_USECASES_DIR": str(usecases),
             "ESTEIRA_MODEL_SERVER_API_KEY": API_KEY, "MLFLOW_TRACKING_URI": settings.tracking_uri},
    )
    log = settings.home / "model_server.log"
    pid = process.start(service, log)
    try:
        process.wait_healthy(service, pid, timeout=60, log_path=log)
        yield dataclasses.replace(settings, model_server_url=url, model_server_api_key=API_KEY)
    finally:
        process.stop_group(pid)


def test_hot_swap_under_a_concurrent_stream_drops_nothing(uc, champion, live):
    single = models.frame(uc, 1, seed=21)
    batch = models.frame(uc, 10, seed=22)
    bodies = [json.dumps({"dataframe_split": json.loads(f.to_json(orient="split", index=False))})
              for f in (single, batch)]
    expected = {champion: [mlflow.pyfunc.load_model(f"models:/{uc.model_name}/{champion}")
                           .predict(f).tolist() for f in (single, batch)]}
    answers: list[list[tuple[int, str, int, list]]] = [[] for _ in range(4)]
    stop = threading.Event()

    def stream(worker: int) -> None:
        with httpx.Client(base_url=live.model_server_url, timeout=30,
                          headers={"x-api-key": API_KEY, "content-type": "application/json"}) as c:
            i = 0
            while not stop.is_set():
                which = (i + worker) % 2
                r = c.post("/invocations", content=bodies[which])
                answers[worker].append((r.status_code, r.headers.get("x-model-version"), which,
                                        r.json().get("predictions")))
                i += 1

    threads = [threading.Thread(target=stream, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    new = models.register(uc, models.train(uc, seed=9, kind="linear"))
    expected[new] = [mlflow.pyfunc.load_model(f"models:/{uc.model_name}/{new}").predict(f).tolist()
                     for f in (single, batch)]
    models.set_champion(uc, new)
    reload = httpx.post(f"{live.model_server_url}/reload", headers={"x-api-key": API_KEY}, timeout=60)
    time.sleep(1.5)
    stop.set()
    for t in threads:
        t.join()

    assert reload.status_code == 200
    assert reload.json() == {"changed": True, "previous_version": champion, "model_version": new}
    assert expected[new] != expected[champion]
    for stream_answers in answers:
        assert stream_answers and all(status == 200 for status, *_ in stream_answers)
        versions = [version for _, version, _, _ in stream_answers]
        switch = versions.index(new)
        assert set(versions[:switch]) == {champion} and set(versions[switch:]) == {new}
        for _, version, which, predictions in stream_answers:
            assert predictions == expected[version][which]
    metrics = httpx.get(f"{live.model_server_url}/metrics").text
    assert f"esteira_model_version {float(new)}" in metrics
    assert 'esteira_model_reloads_total{result="changed"}' in metrics


def test_deploy_reloads_and_smoke_tests_the_new_champion(uc, live):
    version = models.register(uc, models.train(uc, seed=12))
    models.set_champion(uc, version)
    rolled_back = []

    result = deploy_champion(uc, live, version, on_failure=lambda: rolled_back.append(True))

    assert result["model_version"] == version
    assert result["canary_rows"] == 5
    assert result["previous_version"] != version
    assert not rolled_back
    assert httpx.get(f"{live.model_server_url}/version").json()["model_version"] == version


def test_deploy_of_a_version_the_server_does_not_show_rolls_back_and_fails(uc, live):
    live_version = httpx.get(f"{live.model_server_url}/version").json()["model_version"]
    stale = str(int(live_version) - 1)
    rolled_back = []

    with pytest.raises(DeployError, match=f"/version shows version {live_version}, expected {stale}"):
        deploy_champion(uc, live, stale, on_failure=lambda: rolled_back.append(True))

    assert rolled_back == [True]


def test_deploy_without_the_api_key_fails_loudly(uc, live):
    live_version = httpx.get(f"{live.model_server_url}/version").json()["model_version"]
    keyless = dataclasses.replace(live, model_server_api_key="")

    with pytest.raises(DeployError, match="POST /reload answered 401"):
        deploy_champion(uc, keyless, live_version)


def test_served_requests_reach_the_inference_log(uc, live):
    import datetime as dt

    from esteira.serving.inference_log import read_inference_log

    body = {"dataframe_records": json.loads(models.frame(uc, 3, seed=4).to_json(orient="records"))}
    request_id = "log-check-1"
    response = httpx.post(f"{live.model_server_url}/invocations", json=body,
                          headers={"x-api-key": API_KEY, "x-request-id": request_id})
    assert response.status_code == 200
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        log = read_inference_log(live, uc, now - dt.timedelta(hours=1), now + dt.timedelta(hours=1))
        mine = log[log["request_id"] == request_id]
        if len(mine) == 3:
            break
        time.sleep(0.3)
    assert mine["row"].tolist() == [0, 1, 2]
    assert mine["model_version"].unique().tolist() == [response.headers["x-model-version"]]
    assert mine["prediction"].tolist() == [float(p) for p in response.json()["predictions"]]
    assert mine["monthly_charges"].tolist() == [r["monthly_charges"] for r in body["dataframe_records"]]
