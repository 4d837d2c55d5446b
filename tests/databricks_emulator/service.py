"""The Databricks emulator (``server.py``) as a service for tests, shared by the integration
tests (``tests/integration/compute``) and the end-to-end cycle (``tests/e2e``): started in
its own process group with one volume, one Unity Catalog schema and one SQL warehouse, and
the cluster settings that make its emulated runs see a given Esteira home."""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from esteira.stack import process

REPO = Path(__file__).resolve().parents[2]
SERVER = Path(__file__).with_name("server.py")
TOKEN = "dapi-emulator-token"
VOLUME = "/Volumes/main/esteira/artifacts"  # the one Unity Catalog volume the emulator has
UC_SCHEMA = ("main", "esteira")  # the one Unity Catalog schema the emulator has
WAREHOUSE_ID = "emulator-warehouse"
_MLFLOW_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR")


@dataclass(frozen=True)
class Emulator:
    url: str
    workdir: Path

    @property
    def connection_uri(self) -> str:
        """``AIRFLOW_CONN_DATABRICKS_DEFAULT`` for this emulator (plain http, the token)."""
        return f"databricks://:{TOKEN}@{self.url.removeprefix('http://')}/http"

    def requests(self, path_end: str | None = None) -> list[dict]:
        """Every API request received, in order (those whose path ends with ``path_end``)."""
        seen = self._get("/emulator/requests")
        return [r for r in seen if path_end is None or r["path"].endswith(path_end)]

    def tables(self) -> dict[str, dict]:
        """The Unity Catalog tables the emulator's warehouse holds, by full name."""
        return self._get("/emulator/tables")

    def _get(self, path: str):
        with urllib.request.urlopen(f"{self.url}{path}", timeout=5) as response:
            return json.loads(response.read())


@contextmanager
def running(workdir: Path, env: Mapping[str, str] | None = None,
            serving_update_seconds: float = 2) -> Iterator[Emulator]:
    """The emulator on a free port until the block ends. ``env`` reaches its runs (each run
    adds its cluster's ``spark_env_vars``) and its Model Serving, which loads the served
    versions from the MLflow that ``MLFLOW_TRACKING_URI`` names."""
    port = process.free_port()
    service = process.Service(
        name="databricks-emulator",
        argv=[sys.executable, str(SERVER), "--port", str(port), "--token", TOKEN, "--workdir", str(workdir),
              "--volume", ".".join(VOLUME.split("/")[2:5]), "--schema", ".".join(UC_SCHEMA),
              "--warehouse-id", WAREHOUSE_ID, "--statement-seconds", "0.1",
              "--serving-update-seconds", str(serving_update_seconds)],
        port=port,
        health_url=f"http://127.0.0.1:{port}/emulator/health",
        env=dict(env or {}),
    )
    log = workdir / "emulator.log"
    pid = process.start(service, log)
    try:
        process.wait_healthy(service, pid, timeout=30, log_path=log)
        yield Emulator(f"http://127.0.0.1:{port}", workdir)
    finally:
        process.stop_group(pid)


def small_churn(usecases_dir: Path, entities: int = 300) -> Path:
    """The demo use case with fewer customers, as a YAML file the jobs load by name."""
    data = yaml.safe_load((REPO / "include/usecases/churn.yaml").read_text())
    data["source"]["generator"]["entities"] = entities
    usecases_dir.mkdir(parents=True, exist_ok=True)
    path = usecases_dir / "churn.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def cluster_env(home: Path, usecases_dir: Path | str | None, environ: Mapping[str, str] | None = None,
                **extra: str) -> dict[str, str]:
    """ESTEIRA_DATABRICKS_* settings: a new cluster whose environment names the stores (the
    home, the use cases unless None, and the MLflow settings of ``environ``, default this
    process's). A ``/Volumes/...`` path is the emulator's copy of that volume file."""
    environ = os.environ if environ is None else environ
    spark_env = {"ESTEIRA_HOME": str(home)}
    if usecases_dir is not None:
        spark_env["ESTEIRA_USECASES_DIR"] = str(usecases_dir)
    spark_env |= {key: environ[key] for key in _MLFLOW_ENV if environ.get(key)}
    cluster = {"spark_version": "15.4.x-scala2.12", "node_type_id": "Standard_DS3_v2", "num_workers": 0,
               "spark_env_vars": spark_env}
    return {
        "ESTEIRA_DATABRICKS_CLUSTER_JSON": json.dumps(cluster),
        "ESTEIRA_DATABRICKS_LIBRARIES_JSON": json.dumps([{"pypi": {"package": "esteira"}}]),
        "ESTEIRA_DATABRICKS_POLL_SECONDS": "1",
        **extra,
    }
