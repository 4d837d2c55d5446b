"""The MLflow tracking server: a backend store on a database, artifacts served by the server."""

from __future__ import annotations

import sys
from pathlib import Path

from esteira.stack.process import Service


def mlflow_service(port: int, backend_store_uri: str, artifacts_dir: Path) -> Service:
    """One uvicorn worker and no job runner: the defaults spawn 15 processes and 3 GiB."""
    bin_dir = Path(sys.executable).parent
    return Service(
        name="MLflow tracking server",
        argv=[
            str(bin_dir / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            backend_store_uri,
            "--serve-artifacts",
            "--artifacts-destination",
            str(artifacts_dir),
        ],
        port=port,
        health_url=f"http://127.0.0.1:{port}/health",
        env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
