"""The emulator keeps the documented Jobs API 2.2 semantics the platform relies on."""

from __future__ import annotations

import time

import pytest
import requests

from esteira.stack import process
from tests.databricks_emulator.service import TOKEN

pytestmark = pytest.mark.integration

_AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _script(tmp_path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text(body)
    return str(path)


def _submit(emulator, python_file: str, token: str | None = None, **extra) -> int:
    body = {
        "run_name": "t",
        "tasks": [{"task_key": "step", "spark_python_task": {"python_file": python_file, "parameters": ["a"]},
                   "existing_cluster_id": "c-1"}],
        **extra,
    }
    if token:
        body["idempotency_token"] = token
    response = requests.post(f"{emulator.url}/api/2.2/jobs/runs/submit", json=body, headers=_AUTH, timeout=5)
    response.raise_for_status()
    return response.json()["run_id"]


def _get(emulator, run_id: int, as_json_body: bool = False) -> dict:
    url = f"{emulator.url}/api/2.2/jobs/runs/get"
    if as_json_body:  # how the provider's deferrable trigger sends GET parameters
        response = requests.get(url, json={"run_id": run_id}, headers=_AUTH, timeout=5)
    else:
        response = requests.get(url, params={"run_id": run_id}, headers=_AUTH, timeout=5)
    response.raise_for_status()
    return response.json()


def _wait_terminal(emulator, run_id: int, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = _get(emulator, run_id)
        if run["state"]["life_cycle_state"] in ("TERMINATED", "SKIPPED", "INTERNAL_ERROR"):
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not end: {run['state']}")


def test_a_run_goes_pending_running_terminated_with_its_output(emulator, tmp_path):
    script = _script(tmp_path, "ok.py", "import sys, time\ntime.sleep(0.5)\nprint('hello', sys.argv[1])\n")
    run_id = _submit(emulator, script)
    first = _get(emulator, run_id, as_json_body=True)
    assert first["state"]["life_cycle_state"] in ("PENDING", "RUNNING")
    assert first["run_page_url"].endswith(f"#job/{first['job_id']}/run/{run_id}")
    run = _wait_terminal(emulator, run_id)
    assert run["state"]["result_state"] == "SUCCESS"
    (task,) = run["tasks"]
    assert task["run_id"] != run_id
    output = requests.get(f"{emulator.url}/api/2.2/jobs/runs/get-output", params={"run_id": task["run_id"]},
                          headers=_AUTH, timeout=5).json()
    assert output["logs"] == "hello a\n" and "error" not in output


def test_a_failing_script_reports_its_exception_as_the_error(emulator, tmp_path):
    script = _script(tmp_path, "bad.py", "raise ValueError('the landing file is missing')\n")
    run = _wait_terminal(emulator, _submit(emulator, script))
    assert (run["state"]["life_cycle_state"], run["state"]["result_state"]) == ("TERMINATED", "FAILED")
    task_run = run["tasks"][0]["run_id"]
    output = requests.get(f"{emulator.url}/api/2.2/jobs/runs/get-output", params={"run_id": task_run},
                          headers=_AUTH, timeout=5).json()
    assert output["error"] == "ValueError: the landing file is missing"
    assert "Traceback" in output["error_trace"]


def test_the_same_idempotency_token_returns_the_same_run_whatever_its_state(emulator, tmp_path):
    script = _script(tmp_path, "bad.py", "raise SystemExit(3)\n")
    first = _submit(emulator, script, token="tok-1")
    assert _wait_terminal(emulator, first)["state"]["result_state"] == "FAILED"
    assert _submit(emulator, script, token="tok-1") == first
    assert _submit(emulator, script, token="tok-2") != first
    response = requests.post(f"{emulator.url}/api/2.2/jobs/runs/submit", headers=_AUTH, timeout=5,
                             json={"idempotency_token": "x" * 65, "tasks": []})
    assert response.status_code == 400 and response.json()["error_code"] == "INVALID_PARAMETER_VALUE"


def test_cancel_kills_the_process_and_ends_canceled(emulator, tmp_path):
    pid_file = tmp_path / "pid"
    script = _script(tmp_path, "slow.py", f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
                                          "time.sleep(60)\n")
    run_id = _submit(emulator, script)
    deadline = time.monotonic() + 10
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    pid = int(pid_file.read_text())
    requests.post(f"{emulator.url}/api/2.2/jobs/runs/cancel", json={"run_id": run_id}, headers=_AUTH,
                  timeout=5).raise_for_status()
    run = _wait_terminal(emulator, run_id)
    assert run["state"]["result_state"] == "CANCELED"
    time.sleep(0.2)
    assert not process.pid_alive(pid) or process._is_zombie(pid)


def test_timeout_ends_timedout_and_a_missing_file_internal_error(emulator, tmp_path):
    script = _script(tmp_path, "slow.py", "import time\ntime.sleep(60)\n")
    run = _wait_terminal(emulator, _submit(emulator, script, timeout_seconds=1))
    assert run["state"]["result_state"] == "TIMEDOUT"
    run = _wait_terminal(emulator, _submit(emulator, str(tmp_path / "nowhere.py")))
    assert run["state"]["life_cycle_state"] == "INTERNAL_ERROR"


def test_auth_and_multi_task_output_follow_the_api(emulator, tmp_path):
    url = f"{emulator.url}/api/2.2/jobs/runs/get"
    assert requests.get(url, params={"run_id": 1}, timeout=5).status_code == 401
    assert requests.get(url, params={"run_id": 1}, headers={"Authorization": "Bearer nope"}, timeout=5).status_code == 403
    assert requests.get(url, params={"run_id": 999999}, headers=_AUTH, timeout=5).status_code == 404
    script = _script(tmp_path, "ok.py", "print(1)\n")
    task = {"spark_python_task": {"python_file": script}, "existing_cluster_id": "c-1"}
    response = requests.post(f"{emulator.url}/api/2.2/jobs/runs/submit", headers=_AUTH, timeout=5,
                             json={"tasks": [{**task, "task_key": "a"}, {**task, "task_key": "b"}]})
    run_id = response.json()["run_id"]
    output = requests.get(f"{emulator.url}/api/2.2/jobs/runs/get-output", params={"run_id": run_id},
                          headers=_AUTH, timeout=5)
    assert output.status_code == 400
    no_cluster = requests.post(f"{emulator.url}/api/2.2/jobs/runs/submit", headers=_AUTH, timeout=5,
                               json={"tasks": [{"task_key": "a", "spark_python_task": {"python_file": script}}]})
    assert no_cluster.status_code == 400
