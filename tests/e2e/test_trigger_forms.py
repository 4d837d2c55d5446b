"""The manual trigger form of every DAG, as a person uses it in Chromium: each Param renders as
an editable field of its kind (a JSON editor for the candidates, dates as dates, enums as
selects) holding a valid default, and the form submitted unchanged starts a run whose conf
is exactly the use case's YAML values.

Each DAG is paused first and the form's "unpause on trigger" box unticked, so the runs stay
queued (the machine is not asked to train anything) and are deleted afterwards.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from esteira.config import get_usecase
from esteira.orchestration.factory import STAGES
from esteira.stack.airflow_api import AirflowClient

pytestmark = pytest.mark.e2e

OUTPUT = Path(__file__).resolve().parents[2] / "test-output"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
# A rollback has no valid default on purpose: a person must say why (minLength 3).
NEEDS_A_PERSON = {"model_rollback": {"reason": "e2e: the trigger form, filled in"}}
# What a Param's field is (from its field group, the row with its label) and whether a
# person can change it: a JSON editor (Monaco's text box), a select, a switch, an input.
_FIELD = """(group) => {
  const editor = group.querySelector('.monaco-editor [role=textbox]');
  if (editor) return {type: 'json', editable: editor.getAttribute('aria-readonly') !== 'true'};
  const select = group.querySelector('[role=combobox]');
  if (select) return {type: 'select', editable: !select.disabled};
  const field = group.querySelector('input:not([type=hidden]),textarea,select');
  return field ? {type: field.type, editable: !field.disabled && !field.readOnly} : null;
}"""


def _expected(uc, stage: str) -> dict:
    """The YAML's values, for the Params that come from the use case."""
    training = uc.training
    return {
        "model_training": {
            "candidates": [c.model_dump() for c in training.candidates],
            "window_days": training.window_days,
            "validation_fraction": training.split.validation_fraction,
            "test_fraction": training.split.test_fraction,
            "seed": training.seed,
            "gate_mode": uc.gate.mode,
            "training_end": None,
        },
        "model_promotion": {"require_approval": uc.registry.require_approval, "version": None},
        "feature_refresh": {"interval_start": None, "interval_end": None, "notify_downstream": True},
    }.get(stage, {})


@pytest.fixture(scope="module")
def airflow(demo_stack) -> AirflowClient:
    return AirflowClient(demo_stack["base"], "admin", demo_stack["password"])


@pytest.fixture(scope="module")
def page(demo_stack):
    from playwright.sync_api import sync_playwright

    OUTPUT.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1200})
            page.goto(f"{demo_stack['base']}/", timeout=60_000)
            page.wait_for_url("**/auth/login**", timeout=60_000)
            page.fill("input[name='username']", "admin")
            page.fill("input[name='password']", demo_stack["password"])
            page.click("button[type='submit']")
            page.wait_for_url(lambda url: "/auth/login" not in url, timeout=60_000)
            yield page
        finally:
            browser.close()


def _new_run(airflow: AirflowClient, dag_id: str, before: set[str], timeout: float = 30) -> dict | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = [r for r in airflow.latest_runs(dag_id, limit=20) if r["dag_run_id"] not in before]
        if runs:
            return runs[0]
        time.sleep(1)
    return None


def _open_form(page, base: str, dag_id: str):
    page.goto(f"{base}/dags/{dag_id}", timeout=60_000)
    page.locator("[data-testid='trigger-dag-button']").first.click(timeout=60_000)
    dialog = page.get_by_role("dialog")
    dialog.locator("[data-testid='trigger-dag-submit']").wait_for(timeout=30_000)
    return dialog


def _keep_paused(dialog) -> None:
    """Untick "Unpause <dag> on trigger" (ticked by default for a paused DAG)."""
    dialog.get_by_text(re.compile(r"unpause", re.IGNORECASE)).first.click()


@pytest.mark.parametrize("stage", STAGES)
def test_the_trigger_form_submitted_unchanged_runs_with_the_yaml_values(stage, demo_stack, airflow, page):
    uc = get_usecase("churn")
    dag_id = uc.dag_id(stage)
    airflow.wait_for_dag(dag_id)
    airflow.request("PATCH", f"dags/{dag_id}", json={"is_paused": True})
    params = airflow.request("GET", f"dags/{dag_id}/details")["params"]
    defaults = {name: spec["value"] for name, spec in params.items()}
    assert defaults.items() >= _expected(uc, stage).items(), "the DAG's Params are not the YAML's"
    before = {r["dag_run_id"] for r in airflow.latest_runs(dag_id, limit=50)}

    try:
        dialog = _open_form(page, demo_stack["base"], dag_id)
        _check_fields(dialog, dag_id, params, uc)
        page.screenshot(path=str(OUTPUT / f"trigger_form_{stage}.png"), full_page=True)
        _keep_paused(dialog)
        if stage in NEEDS_A_PERSON:
            submit = dialog.locator("[data-testid='trigger-dag-submit']")
            if submit.is_enabled():
                submit.click()
            assert _new_run(airflow, dag_id, before, timeout=5) is None, f"{dag_id}: the unchanged form ran"
            dialog = _open_form(page, demo_stack["base"], dag_id)
            _keep_paused(dialog)
            for name, value in NEEDS_A_PERSON[stage].items():
                dialog.locator(f"#element_{name}").fill(value)
            defaults |= NEEDS_A_PERSON[stage]
        dialog.locator("[data-testid='trigger-dag-submit']").click()
    except Exception:
        page.screenshot(path=str(OUTPUT / f"trigger_form_{stage}_failed.png"), full_page=True)
        (OUTPUT / f"trigger_form_{stage}_failed.html").write_text(page.content())
        raise
    run = _new_run(airflow, dag_id, before)
    try:
        assert run is not None, f"{dag_id}: submitting the form started no run"
        assert run["conf"] == defaults
        assert airflow.request("GET", f"dags/{dag_id}")["is_paused"], "the form unpaused the DAG"
    finally:
        if run is not None:
            airflow.request("DELETE", f"dags/{dag_id}/dagRuns/{run['dag_run_id']}")


def _check_fields(dialog, dag_id: str, params: dict, uc) -> None:
    """Each Param is a field a person can change, of its kind; no "[object Object]"."""
    for name, spec in params.items():
        schema = spec["schema"]
        # Inputs and selects carry the Param's name, switches and the JSON editor its id.
        marker = dialog.page.locator(f"[name='element_{name}'], #element_{name}")
        group = dialog.locator("[data-part='root'][role='group']").filter(has=marker)
        group.wait_for(state="attached", timeout=30_000)
        if schema.get("type") == "array":  # the editor's text box comes once Monaco has loaded
            group.locator(".monaco-editor [role=textbox]").wait_for(state="attached", timeout=30_000)
        found = group.evaluate(_FIELD)
        assert found and found["editable"], f"{dag_id}: Param {name} is not editable ({found})"
        if schema.get("format") == "date":
            assert found["type"] == "date", f"{dag_id}: {name} is a {found['type']} field, not a date"
        if "enum" in schema:
            assert found["type"] == "select", f"{dag_id}: {name} is a {found['type']} field, not a select"
        if schema.get("type") == "boolean":
            assert found["type"] == "checkbox", f"{dag_id}: {name} is a {found['type']} field, not a switch"
    assert "[object Object]" not in dialog.inner_text()
    if "candidates" in params:
        shown = dialog.locator("#element_candidates .monaco-editor").inner_text().replace("\u00a0", " ")
        assert f'"family": "{uc.training.candidates[0].family}"' in shown, shown  # the lines in view
