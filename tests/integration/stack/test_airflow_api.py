"""`AirflowClient` against a real api-server: token, DAGs, triggers, runs, task instances,
XCom and a human approval answered through the API.

Only an api-server runs (no scheduler): a probe DAG runs through `dag.test()` on the same
metadata database, which waits at its approval until the API answers it (DESIGN.md).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from esteira.stack import process
from esteira.stack.airflow_api import AirflowApiError, AirflowClient, describe_tasks

pytestmark = pytest.mark.integration

_DAG_ID = "esteira_api_probe"
_PASSWORD = "probe-password"
_PROBE = textwrap.dedent(
    f'''
    """Returns a reference, then asks for approval."""
    import datetime as dt

    from airflow.providers.standard.operators.hitl import ApprovalOperator
    from airflow.sdk import Param, dag, task


    @dag(schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False)
    def {_DAG_ID}():
        @task
        def register() -> dict:
            return {{"version": 3, "run_id": "abc"}}

        approve = ApprovalOperator(
            task_id="approve", subject="Promote v3?", body="probe",
            params={{"reason": Param("", type="string")}},
        )
        register() >> approve


    probe = {_DAG_ID}()

    if __name__ == "__main__":
        probe.test()
    '''
)


@pytest.fixture(scope="module")
def api_server(tmp_path_factory):
    """A migrated metadata database, an api-server on it, and the probe run waiting.

    Yields the api-server's base URL.
    """
    home = tmp_path_factory.mktemp("airflow_api")
    dags = home / "dags"
    dags.mkdir()
    (dags / "probe.py").write_text(_PROBE)
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps({"admin": _PASSWORD}))
    port = process.free_port()
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
    }
    airflow_bin = str(Path(sys.executable).parent / "airflow")
    subprocess.run([airflow_bin, "db", "migrate"], env={**os.environ, **env}, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = process.Service(
        name="Airflow api-server", argv=[airflow_bin, "api-server", "--port", str(port)],
        port=port, health_url=f"http://127.0.0.1:{port}/api/v2/monitor/health", env=env,
    )
    server_log = home / "api-server.log"
    server_pid = process.start(server, server_log)
    with open(home / "probe.log", "wb") as probe_log:
        probe = subprocess.Popen(
            [sys.executable, str(dags / "probe.py")], env={**os.environ, **env},
            stdout=probe_log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        process.wait_healthy(server, server_pid, timeout=90, log_path=server_log)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.stop_group(probe.pid)
        process.stop_group(server_pid)


@pytest.fixture(scope="module")
def airflow(api_server) -> AirflowClient:
    return AirflowClient(api_server, "admin", _PASSWORD)


def _probe_run(client: AirflowClient, timeout: float = 60) -> str:
    """The run `dag.test()` made (the only one not triggered through the API)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = [r for r in client.latest_runs(_DAG_ID, limit=10) if r["dag_run_id"] != "api-trigger"]
        if runs:
            return runs[0]["dag_run_id"]
        time.sleep(1)
    raise AssertionError(f"no dag.test() run of {_DAG_ID} within {timeout:.0f} s")


def _pending(client: AirflowClient, run_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for detail in client.pending_approvals():
            if detail["task_instance"]["dag_run_id"] == run_id:
                return detail
        time.sleep(1)
    raise AssertionError(f"no pending approval for {run_id} within {timeout:.0f} s")


def test_a_bad_password_is_refused_with_the_status(api_server):
    with pytest.raises(AirflowApiError) as refused:
        AirflowClient(api_server, "admin", "wrong")
    assert refused.value.status == 401


def test_trigger_unpause_and_a_queued_run_through_the_official_client(airflow):
    assert airflow.wait_for_dag(_DAG_ID, timeout=60)["dag_id"] == _DAG_ID
    airflow.unpause(_DAG_ID)
    assert airflow.request("GET", f"dags/{_DAG_ID}")["is_paused"] is False

    run_id = airflow.trigger(_DAG_ID, {"interval_start": "2026-01-01"}, run_id="api-trigger")
    assert run_id == "api-trigger"
    assert airflow.run_state(_DAG_ID, run_id) == "queued"
    runs = {r["dag_run_id"]: r for r in airflow.latest_runs(_DAG_ID)}
    assert runs[run_id]["conf"] == {"interval_start": "2026-01-01"}
    assert runs[run_id]["run_type"] == "manual"
    assert airflow.xcom(_DAG_ID, run_id, "register") is None


def test_an_approval_answered_through_the_api_lets_the_run_finish(airflow):
    run_id = _probe_run(airflow)
    detail = _pending(airflow, run_id)
    assert detail["subject"] == "Promote v3?"
    assert detail["options"] == ["Approve", "Reject"]
    assert dt.datetime.fromisoformat(detail["created_at"]).tzinfo is not None
    ti = detail["task_instance"]
    assert (ti["dag_id"], ti["task_id"], ti["map_index"]) == (_DAG_ID, "approve", -1)
    assert {t["task_id"]: t["state"] for t in airflow.task_states(_DAG_ID, run_id)} == {
        "register": "success", "approve": "awaiting_input"}

    answer = airflow.answer_approval(_DAG_ID, run_id, "approve", "Approve", "looks right")
    assert answer["chosen_options"] == ["Approve"]
    assert answer["params_input"] == {"reason": "looks right"}
    with pytest.raises(AirflowApiError) as twice:
        airflow.answer_approval(_DAG_ID, run_id, "approve", "Approve", "again")
    assert twice.value.status == 409

    seen: list[str] = []
    outcome = airflow.wait(_DAG_ID, run_id, timeout=60, poll=1,
                           on_change=lambda state, tasks: seen.append(describe_tasks(tasks)))
    assert outcome.ok, outcome
    assert sorted(seen[-1].split(", ")) == ["approve=success", "register=success"]
    assert airflow.xcom(_DAG_ID, run_id, "register") == {"version": 3, "run_id": "abc"}
    decision = airflow.xcom(_DAG_ID, run_id, "approve")
    assert decision["chosen_options"] == ["Approve"]
    assert decision["params_input"] == {"reason": "looks right"}


def test_an_unknown_dag_is_a_404_naming_the_call(airflow):
    with pytest.raises(AirflowApiError) as missing:
        airflow.trigger("no_such_dag")
    assert missing.value.status == 404 and "no_such_dag" in str(missing.value)
