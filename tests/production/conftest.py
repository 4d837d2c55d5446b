"""The production topology (CeleryExecutor on Postgres + Redis, MLflow on Postgres, the
model server) started natively for the session, on its own databases, Redis database and
free ports; stopped and dropped at the end.

The use case is churn with fewer customers and no human approval (a copy in the session's
use-case folder), so the whole suite fits its time budget on a 2-core machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from esteira.registry.lock import BARRIER_ENV
from esteira.stack import process, production
from esteira.stack.airflow_api import AirflowClient, RunOutcome

REPO = Path(__file__).resolve().parents[2]
USECASE = "churn"
_ENTITIES = 400
# Low, so a task whose worker died is failed (then retried) about 30 s later (docs/stack-facts.md).
HEARTBEAT_TIMEOUT = 30


def _airflow_port() -> int:
    """A free api-server port whose derived log and health ports (+713..+715) are free too."""
    for _ in range(50):
        port = process.free_port()
        if port + 715 < 65536 and all(process.port_is_free(port + d) for d in (713, 714, 715)):
            return port
    raise RuntimeError("no free port block for the api-server")


def _free_redis_db() -> int:
    for db in range(15, 5, -1):
        out = subprocess.run(["redis-cli", "-n", str(db), "DBSIZE"], capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip() == "0":
            return db
    raise RuntimeError("no empty Redis database among 6..15")


def _small_usecases(folder: Path) -> Path:
    raw = yaml.safe_load((REPO / "include" / "usecases" / f"{USECASE}.yaml").read_text())
    raw["source"]["generator"]["entities"] = _ENTITIES
    # Promotion without a person in the loop (the HITL path has its own e2e test).
    raw["registry"]["require_approval"] = False
    for candidate in raw["training"]["candidates"]:
        if candidate["family"] == "random_forest":
            candidate["params"]["n_estimators"] = [20]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{USECASE}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return folder


@pytest.fixture(scope="session")
def topology(tmp_path_factory) -> Iterator[production.Topology]:
    if shutil.which("psql") is None or shutil.which("redis-cli") is None:
        pytest.fail("the production tests need psql and redis-cli, and Postgres and Redis on 127.0.0.1")
    root = tmp_path_factory.mktemp("production")
    tag = uuid.uuid4().hex[:8]
    barrier = root / "registry-barrier"
    barrier.mkdir()
    topo = production.Topology(
        home=root / "home",
        airflow_port=_airflow_port(),
        mlflow_port=process.free_port(),
        model_server_port=process.free_port(),
        airflow_db=f"esteira_test_{tag}_airflow",
        mlflow_db=f"esteira_test_{tag}_mlflow",
        redis=f"redis://127.0.0.1:6379/{_free_redis_db()}",
        heartbeat_timeout=HEARTBEAT_TIMEOUT,
        usecases_dir=_small_usecases(root / "usecases"),
        model_server_api_key="production-test-key",
        serve_usecase=USECASE,
        # Idle unless a test puts a hold file there (esteira.registry.lock.checkpoint).
        extra_env={BARRIER_ENV: str(barrier)},
    )
    previous = {k: os.environ.get(k) for k in (*production.client_env(topo), "MLFLOW_HTTP_REQUEST_MAX_RETRIES")}
    os.environ.update(production.client_env(topo), MLFLOW_HTTP_REQUEST_MAX_RETRIES="2")
    try:
        production.up(topo)
        yield topo
    finally:
        production.down(topo, echo=lambda _: None)
        production.drop_databases(topo)
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def client(topology) -> AirflowClient:
    return AirflowClient(topology.airflow_url, "admin", production.admin_password_for(topology))


@pytest.fixture(scope="session")
def usecase(topology):
    from esteira.config import get_settings, get_usecase
    from esteira.features.generator import generate_landing

    settings = get_settings()
    uc = get_usecase(USECASE, settings)
    generate_landing(uc, settings.landing_dir / uc.source.landing)
    return uc


class Belt:
    """Drives the DAGs of the use case through the REST API, as a person or CI would."""

    def __init__(self, client: AirflowClient, uc) -> None:
        self.client, self.uc = client, uc
        self._unpaused: set[str] = set()

    def dag(self, stage: str) -> str:
        return self.uc.dag_id(stage)

    def unpause(self, stage: str) -> None:
        """Unpause without the run for the latest calendar day that unpausing a scheduled DAG
        creates (its landing files do not exist: it would fail and hold max_active_runs)."""
        dag_id = self.dag(stage)
        if dag_id in self._unpaused:
            return
        self.client.wait_for_dag(dag_id)
        self.client.unpause(dag_id)
        self._unpaused.add(dag_id)
        if stage in ("feature_refresh", "batch_inference", "drift_monitoring"):
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                runs = [r for r in self.client.latest_runs(dag_id) if r["run_type"] == "scheduled"]
                for run in runs:
                    if run["state"] not in ("success", "failed"):
                        self.client.request("PATCH", f"dags/{dag_id}/dagRuns/{_q(run['dag_run_id'])}",
                                            json={"state": "failed"})
                if runs:
                    return
                time.sleep(1)

    def trigger(self, stage: str, conf: dict | None = None) -> str:
        self.unpause(stage)
        return self.client.trigger(self.dag(stage), conf or {})

    def wait(self, stage: str, run_id: str, timeout: float = 900) -> RunOutcome:
        return self.client.wait(self.dag(stage), run_id, timeout=timeout, poll=2)

    def run_ids(self, stage: str) -> set[str]:
        return {r["dag_run_id"] for r in self.client.latest_runs(self.dag(stage), limit=100)}

    def next_run(self, stage: str, known: set[str], timeout: float = 300) -> str:
        """The run an Asset event starts (one not in ``known``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            new = self.run_ids(stage) - known
            if new:
                return new.pop()
            time.sleep(2)
        raise AssertionError(f"no new run of {self.dag(stage)} within {timeout:.0f} s")

    def task(self, stage: str, run_id: str, task_id: str) -> list[dict]:
        return [t for t in self.client.task_states(self.dag(stage), run_id) if t["task_id"] == task_id]

    def wait_for_task(self, stage: str, run_id: str, task_id: str, states: set[str],
                      timeout: float = 600, poll: float = 0.5) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for ti in self.task(stage, run_id, task_id):
                if ti["state"] in states:
                    return ti
            if self.client.run_state(self.dag(stage), run_id) in ("success", "failed"):
                raise AssertionError(f"{self.dag(stage)} {run_id} ended before {task_id} was {states}")
            time.sleep(poll)
        raise AssertionError(f"{task_id} of {run_id} not in {states} within {timeout:.0f} s")

    def xcom(self, stage: str, run_id: str, task_id: str):
        path = (f"dags/{self.dag(stage)}/dagRuns/{_q(run_id)}/taskInstances/{task_id}"
                "/xcomEntries/return_value")
        return self.client.request("GET", path, params={"deserialize": "true"})["value"]

    def log(self, stage: str, run_id: str, task_id: str, try_number: int) -> str:
        path = f"dags/{self.dag(stage)}/dagRuns/{_q(run_id)}/taskInstances/{task_id}/logs/{try_number}"
        body = self.client.request("GET", path, params={"full_content": "true"},
                                   headers={"Accept": "application/json"})
        content = body.get("content", "")
        if not isinstance(content, list):
            return str(content)
        lines = []
        for entry in content:
            if not isinstance(entry, dict):
                lines.append(str(entry))
                continue
            lines.append(str(entry.get("event", "")))
            lines += [f"{e.get('exc_type')}: {e.get('exc_value')}" for e in entry.get("error_detail") or []]
        return "\n".join(lines)


def _q(value: str) -> str:
    import urllib.parse

    return urllib.parse.quote(value, safe="")


@pytest.fixture(scope="session")
def belt(client, usecase) -> Belt:
    return Belt(client, usecase)


@pytest.fixture(scope="session")
def cycle(belt) -> dict:
    """The full cycle once: refresh → training (Asset) → promotion (Asset) → batch inference.

    Fault tests build on the state it leaves (a champion, a feature table).
    """
    for stage in ("model_training", "model_promotion", "batch_inference"):
        belt.unpause(stage)
    known = {s: belt.run_ids(s) for s in ("model_training", "model_promotion", "batch_inference")}
    refresh = belt.trigger("feature_refresh", {"interval_start": "2026-01-01", "interval_end": "2026-03-01"})
    outcomes = {"feature_refresh": belt.wait("feature_refresh", refresh)}
    for stage in ("model_training", "model_promotion", "batch_inference"):
        run_id = belt.next_run(stage, known[stage])
        outcomes[stage] = belt.wait(stage, run_id)
    return outcomes


def model_versions(name: str) -> list:
    from mlflow import MlflowClient

    return MlflowClient().search_model_versions(f"name='{name}'")


def wait_promotions_done(belt: Belt) -> None:
    """No promotion queued or running, twice in a row (an Asset event starts one ~1 s late)."""
    def idle() -> bool:
        return all(r["state"] in ("success", "failed") for r in belt.client.latest_runs(belt.dag("model_promotion")))

    def idle_twice() -> bool:
        if not idle():
            return False
        time.sleep(5)
        return idle()

    wait_until(idle_twice, 600, "promotions finished", poll=2)


def wait_until(condition: Callable[[], bool], timeout: float, what: str, poll: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(poll)
