"""The Databricks REST API emulator as a module's service; ``databricks_default`` points at it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.databricks_emulator import service


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    """The emulator in its own process group; ``databricks_default`` points at it."""
    saved = os.environ.get("AIRFLOW_CONN_DATABRICKS_DEFAULT")
    with service.running(tmp_path_factory.mktemp("databricks_emulator")) as running:
        os.environ["AIRFLOW_CONN_DATABRICKS_DEFAULT"] = running.connection_uri
        try:
            yield running
        finally:
            if saved is None:
                os.environ.pop("AIRFLOW_CONN_DATABRICKS_DEFAULT", None)
            else:
                os.environ["AIRFLOW_CONN_DATABRICKS_DEFAULT"] = saved


@pytest.fixture(scope="module")
def airflow_db():
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)
