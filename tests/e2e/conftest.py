"""The running embedded stack, on its own home and free ports, for end-to-end tests."""

from __future__ import annotations

import pytest

from esteira.stack import process


@pytest.fixture(scope="session")
def stack_env(tmp_path_factory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("stack_home")
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
