"""`esteira up` brings Airflow and MLflow up healthy; `esteira down` leaves no process."""

from __future__ import annotations

import json
import subprocess
import urllib.request

import pytest

from esteira.stack import process
from tests.e2e.conftest import esteira

pytestmark = pytest.mark.e2e

_MARKER = "ESTEIRA_STACK_HOME"


def _esteira(env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = esteira(env, *args)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_up_status_down_leaves_no_process(stack_env):
    env = {**stack_env, "ESTEIRA_SERVE_USECASE": ""}
    try:
        first = _esteira(env, "up")
        assert "login: admin /" in first.stdout
        health = json.load(
            urllib.request.urlopen(
                f"http://127.0.0.1:{env['ESTEIRA_AIRFLOW_PORT']}/api/v2/monitor/health"
            )
        )
        assert {health[k]["status"] for k in ("metadatabase", "scheduler", "triggerer", "dag_processor")} == {"healthy"}
        assert process.http_ok(f"http://127.0.0.1:{env['ESTEIRA_MLFLOW_PORT']}/health")

        again = _esteira(env, "up")
        assert "already running" in again.stdout
        assert _esteira(env, "status").returncode == 0
        assert process.marked_processes(_MARKER, env["ESTEIRA_HOME"])
    finally:
        _esteira(env, "down")
    assert process.marked_processes(_MARKER, env["ESTEIRA_HOME"]) == []
    assert process.port_is_free(int(env["ESTEIRA_AIRFLOW_PORT"]))


def test_taken_port_is_a_clear_error(stack_env, tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**stack_env, "ESTEIRA_HOME": str(tmp_path), "ESTEIRA_MLFLOW_PORT": str(port), "ESTEIRA_SERVE_USECASE": ""}
        result = _esteira(env, "up", check=False)
    assert result.returncode == 2
    assert f"port {port} is already taken" in result.stderr
    _esteira(env, "down")
