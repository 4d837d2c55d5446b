"""Fixtures for the registry's race and crash tests: a use case with a model name of its
own, cheap candidate runs (a tiny logged model, no training), transitions run in spawned
processes, and the file barrier that holds one of them between two of its writes."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
import uuid
from pathlib import Path

import pytest

from esteira.registry.lock import BARRIER_ENV
from esteira.usecase import RegistrySpec
from tests.integration.registry.race_worker import transition_in_process
from tests.unit.training.synthetic import churn_usecase

PASSED = {"passed": True, "mode": "enabled", "verdict": "passed"}


class Barrier:
    """Holds a transition at a named ``checkpoint`` (see ``esteira.registry.lock``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def hold(self, step: str) -> None:
        (self.folder / f"{step}.hold").touch()

    def reached(self, step: str, timeout: float = 120.0) -> int:
        """The pid of the process held at ``step``, once one is."""
        path = self.folder / f"{step}.reached"
        deadline = time.monotonic() + timeout
        while not (path.exists() and path.read_text()):
            if time.monotonic() > deadline:
                raise AssertionError(f"no process reached {step} within {timeout:.0f} s")
            time.sleep(0.05)
        return int(path.read_text())

    def release(self, step: str) -> None:
        (self.folder / f"{step}.hold").unlink(missing_ok=True)


@pytest.fixture
def barrier(tmp_path, monkeypatch) -> Barrier:
    folder = tmp_path / "barrier"
    folder.mkdir()
    monkeypatch.setenv(BARRIER_ENV, str(folder))
    return Barrier(folder)


class Spawned:
    """One transition in a spawned process (the environment, barrier included, is inherited)."""

    def __init__(self, uc, action: str, **kwargs) -> None:
        context = multiprocessing.get_context("spawn")
        self.started, self.results = context.Queue(), context.Queue()
        self.process = context.Process(
            target=transition_in_process,
            args=(uc.model_name, action, kwargs, self.started, self.results),
        )
        self.process.start()
        self.pid = self.started.get(timeout=60)

    def outcome(self, timeout: float = 120.0) -> tuple[str, object]:
        result = self.results.get(timeout=timeout)
        self.process.join(30)
        return result

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        self.process.join(30)
        assert self.process.exitcode == -signal.SIGKILL


@pytest.fixture
def usecase(mlflow_server, esteira_home):
    """Churn with a registered model name of its own (the session's server is shared)."""
    name = f"churn_registry_{uuid.uuid4().hex[:10]}"
    return churn_usecase().model_copy(update={"registry": RegistrySpec(model_name=name)})


@pytest.fixture
def candidate(usecase, esteira_home):
    """A function making a finished run with a tiny logged model: ``(run_id, model_uri)``."""
    import mlflow.sklearn
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from esteira import tracking

    client = tracking.client()
    experiment = tracking.ensure_experiment(client, f"{usecase.model_name}-runs")
    model = LogisticRegression().fit(np.array([[0.0], [1.0], [2.0], [3.0]]), [0, 0, 1, 1])

    def make() -> tuple[str, str]:
        run = client.create_run(experiment, tags={"airflow.dag_id": usecase.dag_id("model_training")})
        # Explicit (empty) requirements: inferring them runs a subprocess per model.
        info = mlflow.sklearn.log_model(model, name="model", run_id=run.info.run_id, pip_requirements=[])
        client.set_terminated(run.info.run_id)
        return run.info.run_id, info.model_uri

    return make


@pytest.fixture
def lineage(esteira_home) -> dict:
    return {"table_uri": str(esteira_home / "data" / "churn" / "churn_features"), "version": 3}
