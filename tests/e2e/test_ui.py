"""The Esteira page inside the Airflow UI of the running embedded stack, in headless Chromium:
it needs a login, shows the champion's version and lineage; tasks link to their MLflow runs.

The registry and monitoring state comes from one fixture, ``belt_state``: today it seeds the
stack's MLflow and monitoring table (tests/unit/ui/seed.py); it can be swapped for a fixture
that runs the demo cycle and returns the same keys.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import httpx
import pytest

from esteira.config import get_usecase
from esteira.stack.airflow_api import AirflowClient

pytestmark = pytest.mark.e2e

OUTPUT = Path(__file__).resolve().parents[2] / "test-output"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]


@pytest.fixture(scope="module")
def stack(demo_cycle):
    """The embedded stack after the shortened demo has run the whole belt through it."""
    return demo_cycle


@pytest.fixture(scope="module")
def belt_state(stack):
    """What the belt cycle left behind: the champion, with its lineage and monitoring."""
    from esteira.registry.transitions import get_alias_version

    uc = get_usecase("churn")
    return {"usecase": uc.name, "model_name": uc.model_name,
            "champion": get_alias_version(uc, "champion")}


@pytest.fixture(scope="module")
def airflow(stack) -> AirflowClient:
    return AirflowClient(stack["base"], "admin", stack["password"])


def test_plugin_api_needs_a_login(stack, belt_state, airflow):
    api = f"{stack['base']}/esteira/api/usecases/{belt_state['usecase']}"
    assert httpx.get(api).status_code == 401
    assert httpx.get(api, headers={"Authorization": "Bearer not-a-token"}).status_code == 403
    assert httpx.get(f"{stack['base']}/esteira/").status_code == 401
    login = {"username": "admin", "password": stack["password"]}
    token = httpx.post(f"{stack['base']}/auth/token", json=login).json()["access_token"]
    answer = httpx.get(api, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    assert answer.status_code == 200, answer.text
    view = answer.json()
    assert view["champion"]["version"] == belt_state["champion"]
    assert [step["title"] for step in view["lineage"]][0] == "Feature table"


def test_esteira_page_in_the_airflow_ui(stack, belt_state):
    from playwright.sync_api import sync_playwright

    OUTPUT.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.goto(f"{stack['base']}/", timeout=60_000)
            page.wait_for_url("**/auth/login**", timeout=60_000)
            page.fill("input[name='username']", "admin")
            page.fill("input[name='password']", stack["password"])
            page.click("button[type='submit']")
            page.wait_for_url(lambda url: "/auth/login" not in url, timeout=60_000)

            page.goto(f"{stack['base']}/plugin/esteira", timeout=60_000)
            frame = page.frame_locator("iframe")
            champion = frame.locator("[data-alias='champion'] .version")
            champion.wait_for(timeout=90_000)
            assert champion.get_attribute("data-version") == str(belt_state["champion"])
            steps = frame.locator(".lineage .step")
            assert steps.count() == 5
            assert steps.first.inner_text().startswith("FEATURE TABLE")
            assert "approved by admin" in frame.locator(".lineage").inner_text()
            page.screenshot(path=str(OUTPUT / "esteira_in_airflow.png"))

            page.goto(f"{stack['base']}/esteira/", timeout=60_000)
            page.locator(".monitoring svg circle").first.wait_for(timeout=30_000)
            page.screenshot(path=str(OUTPUT / "esteira_page.png"), full_page=True)
        finally:
            browser.close()


def test_training_tasks_link_to_their_mlflow_runs(stack, airflow):
    """The links are resolved by the api-server from the demo's real training run."""
    dag_id = "churn__model_training"
    run = next(r for r in airflow.latest_runs(dag_id, limit=20) if r["state"] == "success")
    quoted = urllib.parse.quote(run["dag_run_id"], safe="")

    def xcom(task_id: str, map_index: int = -1) -> dict:
        return airflow.request(
            "GET", f"dags/{dag_id}/dagRuns/{quoted}/taskInstances/{task_id}/xcomEntries/return_value",
            params={"map_index": map_index, "deserialize": "true"},
        )["value"]

    def links(task_id: str, map_index: int = -1) -> dict:
        return airflow.request(
            "GET", f"dags/{dag_id}/dagRuns/{quoted}/taskInstances/{task_id}/links",
            params={"map_index": map_index},
        )["extra_links"]

    mlflow_ui = stack["settings"].mlflow_ui_url
    best = xcom("select_best")
    assert links("select_best")["MLflow run"] == f"{mlflow_ui}/#/runs/{best['run_id']}"
    parent = xcom("build_training_set")["parent_run_id"]
    assert links("evaluate_gate")["MLflow run"] == f"{mlflow_ui}/#/runs/{parent}"
    first = xcom("train_candidate", 0)
    assert links("train_candidate", 0)["MLflow run"] == f"{mlflow_ui}/#/runs/{first['run_id']}"
    assert links("plan_candidates") == {"MLflow model version": None, "MLflow run": None}
    plugin = next(p for p in airflow.request("GET", "plugins")["plugins"] if p["name"] == "esteira")
    assert plugin["fastapi_apps"][0]["url_prefix"] == "/esteira"
    assert plugin["external_views"][0]["url_route"] == "esteira"
    assert airflow.request("GET", "plugins/importErrors")["import_errors"] == []
