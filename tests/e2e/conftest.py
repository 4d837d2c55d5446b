"""The running embedded stack, on its own home and free ports, for end-to-end tests.

`demo_cycle` runs the shortened demo once per session through the real scheduler; the UI
and approval tests then look at what it left behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from esteira.stack import process

REPO = Path(__file__).resolve().parents[2]


def make_stack_env() -> dict[str, str]:
    # Not under pytest's basetemp: other pytest sessions on the machine prune those folders,
    # which would pull ESTEIRA_HOME from under a running stack.
    home = tempfile.mkdtemp(prefix="esteira-e2e-")
    airflow, mlflow, server = _free_ports()
    return {
        "ESTEIRA_HOME": home,
        "ESTEIRA_AIRFLOW_PORT": str(airflow),
        "ESTEIRA_MLFLOW_PORT": str(mlflow),
        "ESTEIRA_MODEL_SERVER_PORT": str(server),
        "MLFLOW_TRACKING_URI": "",
        "ESTEIRA_AIRFLOW_URL": "",
        "ESTEIRA_MODEL_SERVER_URL": "",
        "ESTEIRA_MLFLOW_UI_URL": "",
    }


def _free_ports() -> tuple[int, int, int]:
    """Free ports for Airflow, MLflow and the model server, none of them one of the ports
    Airflow derives from its own (its log and health servers)."""
    from esteira.stack.embedded import side_ports

    while True:
        airflow, mlflow, server = (process.free_port() for _ in range(3))
        taken = {airflow, *side_ports(airflow).values()}
        if mlflow not in taken and server not in taken and mlflow != server:
            return airflow, mlflow, server


def esteira(env: dict, *args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "esteira", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session")
def stack_env() -> dict[str, str]:
    return make_stack_env()


@pytest.fixture(scope="session")
def demo_stack():
    """The whole embedded stack (model server included) with a smaller churn use case."""
    env = make_stack_env()
    usecases = Path(env["ESTEIRA_HOME"]) / "usecases"
    usecases.mkdir()
    data = yaml.safe_load((REPO / "include/usecases/churn.yaml").read_text())
    data["source"]["generator"]["entities"] = 600
    (usecases / "churn.yaml").write_text(yaml.safe_dump(data))
    env["ESTEIRA_USECASES_DIR"] = str(usecases)
    try:
        started = esteira(env, "up")
        assert started.returncode == 0, started.stdout + started.stderr
        with pytest.MonkeyPatch.context() as patch:
            for key, value in env.items():
                patch.setenv(key, value)
            patch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
            from esteira.config import get_settings
            from esteira.stack.embedded import admin_password

            settings = get_settings()
            patch.setenv("MLFLOW_TRACKING_URI", settings.tracking_uri)
            yield {"env": env, "settings": settings, "base": settings.airflow_url,
                   "password": admin_password(settings)}
    finally:
        esteira(env, "down")


@pytest.fixture(scope="session")
def demo_cycle(demo_stack):
    """`esteira demo --short` through the scheduler, in the fresh home of `demo_stack`; its
    output is kept for the report.

    The command itself must exit 0, not only print its summary: a pyarrow scanner thread
    alive at interpreter exit once aborted it with 134 after "demo finished" (issue 20).
    """
    result = esteira(demo_stack["env"], "demo", "--short", timeout=3000)
    out = REPO / "test-output"
    out.mkdir(exist_ok=True)
    (out / "demo-short.log").write_text(result.stdout + result.stderr)
    tail = result.stdout[-4000:] + result.stderr[-4000:]
    assert "terminate called" not in result.stderr, tail
    assert result.returncode == 0, f"esteira demo --short exited {result.returncode}\n{tail}"
    return {"output": result.stdout, **demo_stack}
