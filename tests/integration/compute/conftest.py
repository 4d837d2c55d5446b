"""The Databricks Jobs API emulator as a service, and a small churn use case for the steps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from esteira.stack import process

REPO = Path(__file__).resolve().parents[3]
EMULATOR = REPO / "tests" / "databricks_emulator" / "server.py"
TOKEN = "dapi-emulator-token"
VOLUME = "/Volumes/main/esteira/artifacts"  # the one Unity Catalog volume the emulator has
UC_SCHEMA = ("main", "esteira")  # the one Unity Catalog schema the emulator has
WAREHOUSE_ID = "emulator-warehouse"


@dataclass(frozen=True)
class Emulator:
    url: str
    workdir: Path

    def requests(self, path_end: str | None = None) -> list[dict]:
        with urllib.request.urlopen(f"{self.url}/emulator/requests", timeout=5) as response:
            seen = json.loads(response.read())
        return [r for r in seen if path_end is None or r["path"].endswith(path_end)]

    def tables(self) -> dict[str, dict]:
        """The Unity Catalog tables the emulator's warehouse holds, by full name."""
        with urllib.request.urlopen(f"{self.url}/emulator/tables", timeout=5) as response:
            return json.loads(response.read())


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    """The emulator in its own process group; ``databricks_default`` points at it."""
    port = process.free_port()
    workdir = tmp_path_factory.mktemp("databricks_emulator")
    service = process.Service(
        name="databricks-emulator",
        argv=[sys.executable, str(EMULATOR), "--port", str(port), "--token", TOKEN, "--workdir", str(workdir),
              "--volume", ".".join(VOLUME.split("/")[2:5]), "--schema", ".".join(UC_SCHEMA),
              "--warehouse-id", WAREHOUSE_ID, "--statement-seconds", "0.1",
              "--serving-update-seconds", "2"],
        port=port,
        health_url=f"http://127.0.0.1:{port}/emulator/health",
        env={},
    )
    log = workdir / "emulator.log"
    pid = process.start(service, log)
    saved = os.environ.get("AIRFLOW_CONN_DATABRICKS_DEFAULT")
    try:
        process.wait_healthy(service, pid, timeout=30, log_path=log)
        os.environ["AIRFLOW_CONN_DATABRICKS_DEFAULT"] = f"databricks://:{TOKEN}@127.0.0.1:{port}/http"
        yield Emulator(f"http://127.0.0.1:{port}", workdir)
    finally:
        if saved is None:
            os.environ.pop("AIRFLOW_CONN_DATABRICKS_DEFAULT", None)
        else:
            os.environ["AIRFLOW_CONN_DATABRICKS_DEFAULT"] = saved
        process.stop_group(pid)


@pytest.fixture(scope="module")
def airflow_db():
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)


def small_churn(usecases_dir: Path, entities: int = 300) -> Path:
    """The demo use case with fewer customers, as a YAML file the jobs load by name."""
    data = yaml.safe_load((REPO / "include/usecases/churn.yaml").read_text())
    data["source"]["generator"]["entities"] = entities
    usecases_dir.mkdir(parents=True, exist_ok=True)
    path = usecases_dir / "churn.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def cluster_env(home: Path, usecases_dir: Path, **extra: str) -> dict[str, str]:
    """ESTEIRA_DATABRICKS_* settings: a new cluster whose environment names the stores."""
    spark_env = {"ESTEIRA_HOME": str(home), "ESTEIRA_USECASES_DIR": str(usecases_dir)}
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"):
        if os.environ.get(key):
            spark_env[key] = os.environ[key]
    cluster = {"spark_version": "15.4.x-scala2.12", "node_type_id": "Standard_DS3_v2", "num_workers": 0,
               "spark_env_vars": spark_env}
    return {
        "ESTEIRA_DATABRICKS_CLUSTER_JSON": json.dumps(cluster),
        "ESTEIRA_DATABRICKS_LIBRARIES_JSON": json.dumps([{"pypi": {"package": "esteira"}}]),
        "ESTEIRA_DATABRICKS_POLL_SECONDS": "1",
        **extra,
    }
