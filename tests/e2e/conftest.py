"""The running embedded stack, on its own home and free ports, for end-to-end tests."""

from __future__ import annotations

import tempfile

import pytest

from esteira.stack import process


@pytest.fixture(scope="session")
def stack_env() -> dict[str, str]:
    # Not under pytest's basetemp: other pytest sessions on the machine prune those folders,
    # which would pull ESTEIRA_HOME from under a running stack.
    home = tempfile.mkdtemp(prefix="esteira-e2e-")
    return {
        "ESTEIRA_HOME": str(home),
        "ESTEIRA_AIRFLOW_PORT": str(process.free_port()),
        "ESTEIRA_MLFLOW_PORT": str(process.free_port()),
        "ESTEIRA_MODEL_SERVER_PORT": str(process.free_port()),
        "MLFLOW_TRACKING_URI": "",
        "ESTEIRA_AIRFLOW_URL": "",
        "ESTEIRA_MODEL_SERVER_URL": "",
        "ESTEIRA_MLFLOW_UI_URL": "",
    }
