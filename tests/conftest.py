"""Shared fixtures: a private ESTEIRA_HOME and a real MLflow tracking server per session."""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

# Airflow reads its configuration at import: give the test session its own home, so no
# test touches ~/airflow or a developer's running stack.
_REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="esteira-airflow-"))
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(_REPO / "dags"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

import pytest  # noqa: E402

from esteira.stack import process  # noqa: E402
from esteira.stack.mlflow_server import mlflow_service  # noqa: E402


@pytest.fixture(scope="session")
def session_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("esteira_home")


@pytest.fixture(scope="session")
def mlflow_server(session_home):
    """A real MLflow tracking server on a SQLite database, artifacts served by the server.

    Yields the tracking URI and sets MLFLOW_TRACKING_URI for the session.
    """
    port = process.free_port()
    store = session_home / "mlflow"
    store.mkdir(parents=True, exist_ok=True)
    service = mlflow_service(port, f"sqlite:///{store / 'mlflow.db'}", store / "artifacts")
    log = store / "server.log"
    pid = process.start(service, log)
    try:
        process.wait_healthy(service, pid, timeout=90, log_path=log)
        uri = f"http://127.0.0.1:{port}"
        previous = {k: os.environ.get(k) for k in _MLFLOW_ENV}
        os.environ.update(
            MLFLOW_TRACKING_URI=uri,
            MLFLOW_HTTP_REQUEST_MAX_RETRIES="2",
            MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="1",
        )
        yield uri
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    finally:
        process.stop_group(pid)


_MLFLOW_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR")


@pytest.fixture
def esteira_home(tmp_path, monkeypatch) -> Path:
    """A fresh ESTEIRA_HOME for one test."""
    monkeypatch.setenv("ESTEIRA_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture(autouse=True)
def _sigterm_still_stops_the_session():
    """Airflow's task runner, run in this process by ``dag.test()``, sets a SIGTERM handler
    that calls the task's ``on_kill`` and never puts the old one back, so afterwards SIGTERM
    no longer stops the test session (docs/stack-facts.md). Put the session's own back after
    each test (a module fixture may have run ``dag.test()`` before this fixture starts)."""
    yield
    signal.signal(signal.SIGTERM, _SESSION_SIGTERM)


_SESSION_SIGTERM = signal.getsignal(signal.SIGTERM)
