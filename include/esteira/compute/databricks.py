"""The Databricks backend: a step's entry point as a one-time ``spark_python_task`` run.

Where and how it runs comes from environment variables (secrets stay in the Airflow
connection ``databricks_default``, or the one ESTEIRA_DATABRICKS_CONN_ID names):

- ESTEIRA_DATABRICKS_CLUSTER_JSON: the ``new_cluster`` spec (JSON object), or
  ESTEIRA_DATABRICKS_EXISTING_CLUSTER_ID: a running cluster; exactly one of the two.
- ESTEIRA_DATABRICKS_LIBRARIES_JSON: ``libraries`` (JSON list), e.g. the esteira wheel.
- ESTEIRA_DATABRICKS_JOBS_PATH: the folder holding ``<step>.py`` as the cluster sees it
  (workspace, volume or DBFS path); default: this installation's ``esteira/jobs``.
- ESTEIRA_DATABRICKS_TIMEOUT_SECONDS (default 14400) and ESTEIRA_DATABRICKS_POLL_SECONDS
  (default 30).

The provider (``airflow.providers.databricks``) is imported only when a run is made.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from esteira.compute.job import StepJob, parse_result
from esteira.config import ConfigError
from esteira.results import StageResult

if TYPE_CHECKING:
    from airflow.providers.databricks.hooks.databricks import DatabricksHook, RunState

_JOBS_DIR = Path(__file__).resolve().parents[1] / "jobs"


class StepFailed(RuntimeError):
    """A Databricks run of a step ended without success; the message holds its error output."""


@dataclass(frozen=True)
class DatabricksConfig:
    conn_id: str = "databricks_default"
    new_cluster: Mapping[str, Any] | None = None
    existing_cluster_id: str | None = None
    libraries: Sequence[Mapping[str, Any]] = field(default_factory=list)
    jobs_path: str = str(_JOBS_DIR)
    timeout_seconds: int = 14400
    poll_seconds: int = 30

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DatabricksConfig:
        env = os.environ if environ is None else environ
        cluster = _json(env, "ESTEIRA_DATABRICKS_CLUSTER_JSON", dict)
        existing = env.get("ESTEIRA_DATABRICKS_EXISTING_CLUSTER_ID") or None
        if (cluster is None) == (existing is None):
            raise ConfigError(
                "set exactly one of ESTEIRA_DATABRICKS_CLUSTER_JSON (a new_cluster spec) and "
                "ESTEIRA_DATABRICKS_EXISTING_CLUSTER_ID to run steps on Databricks"
            )
        return cls(
            conn_id=env.get("ESTEIRA_DATABRICKS_CONN_ID") or "databricks_default",
            new_cluster=cluster,
            existing_cluster_id=existing,
            libraries=_json(env, "ESTEIRA_DATABRICKS_LIBRARIES_JSON", list) or [],
            jobs_path=(env.get("ESTEIRA_DATABRICKS_JOBS_PATH") or str(_JOBS_DIR)).rstrip("/"),
            timeout_seconds=_int(env, "ESTEIRA_DATABRICKS_TIMEOUT_SECONDS", 14400),
            poll_seconds=_int(env, "ESTEIRA_DATABRICKS_POLL_SECONDS", 30),
        )


def _json(env: Mapping[str, str], name: str, kind: type) -> Any:
    raw = env.get(name)
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"environment variable {name} is not valid JSON: {exc}") from None
    if not isinstance(value, kind):
        raise ConfigError(f"environment variable {name} must hold a JSON {'object' if kind is dict else 'list'}")
    return value


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r} is not an integer") from None


def idempotency_token(dag_id: str, run_id: str, task_id: str, map_index: int, try_number: int) -> str:
    """One token per task try (64 hex characters, the API's limit).

    Databricks hands back the existing run for a repeated token, whatever its state, so
    the token makes a resent submit of the same try safe, and a new try gets a new token:
    whether a retry reattaches to an earlier run is decided before submitting.
    """
    key = json.dumps([dag_id, run_id, task_id, map_index, try_number])
    return hashlib.sha256(key.encode()).hexdigest()


def submit_payload(job: StepJob, config: DatabricksConfig, token: str | None, run_name: str) -> dict:
    """The ``runs/submit`` body: one ``spark_python_task`` running ``<jobs_path>/<step>.py``."""
    task: dict[str, Any] = {
        "task_key": job.step,
        "spark_python_task": {"python_file": f"{config.jobs_path}/{job.step}.py", "parameters": job.argv()},
        "timeout_seconds": config.timeout_seconds,
    }
    if config.new_cluster is not None:
        task["new_cluster"] = dict(config.new_cluster)
    else:
        task["existing_cluster_id"] = config.existing_cluster_id
    if config.libraries:
        task["libraries"] = [dict(lib) for lib in config.libraries]
    payload: dict[str, Any] = {"run_name": run_name, "timeout_seconds": config.timeout_seconds, "tasks": [task]}
    if token is not None:
        payload["idempotency_token"] = token
    return payload


def describe_failure(run_id: int, state: RunState, errors: Sequence[Mapping[str, Any]], url: str) -> str:
    """The task's error output first (what the job raised), then the run state; for a log."""
    details = "; ".join(f"{e.get('task_key')}: {e.get('error')}" for e in errors if e.get("error"))
    return (
        f"Databricks run {run_id} ended {state.life_cycle_state}/{state.result_state or '-'}"
        f"{': ' + state.state_message if state.state_message else ''}"
        f"{' | error: ' + details if details else ''} (run page: {url})"
    )


class DatabricksBackend:
    """Submit, follow, cancel and read back step runs through the provider's hook."""

    def __init__(self, config: DatabricksConfig) -> None:
        self.config = config

    @property
    def hook(self) -> DatabricksHook:
        from airflow.providers.databricks.hooks.databricks import DatabricksHook

        return DatabricksHook(self.config.conn_id, caller="esteira")

    def submit(self, job: StepJob, token: str | None, run_name: str | None = None) -> int:
        payload = submit_payload(job, self.config, token, run_name or f"esteira {job.usecase} {job.step}")
        return int(self.hook.submit_run(payload))

    def state(self, run_id: int) -> RunState | None:
        """The run's state, or None when Databricks no longer knows the run (404)."""
        from airflow.providers.databricks.exceptions import DatabricksApiError
        from airflow.providers.databricks.hooks.databricks import RunState

        try:
            return RunState(**self.hook.get_run(run_id)["state"])
        except DatabricksApiError as exc:
            if exc.http_status_code == 404:
                return None
            raise

    def run_page_url(self, run_id: int) -> str:
        return self.hook.get_run_page_url(run_id)

    def errors(self, run_id: int) -> list[dict]:
        """Each failed task's ``error`` from ``runs/get-output``, as the provider reports them."""
        from airflow.providers.databricks.hooks.databricks import RunState
        from airflow.providers.databricks.utils.databricks import extract_failed_task_errors

        hook = self.hook
        info = hook.get_run(run_id)
        return extract_failed_task_errors(hook, info, RunState(**info["state"]))

    def result(self, run_id: int) -> StageResult:
        """The step's result line, read from its task run's output (stdout)."""
        hook = self.hook
        tasks = hook.get_run(run_id).get("tasks") or []
        if len(tasks) != 1:
            raise StepFailed(f"Databricks run {run_id} has {len(tasks)} tasks; a step run has one")
        return parse_result(hook.get_run_output(tasks[0]["run_id"]).get("logs") or "")

    def cancel(self, run_id: int) -> None:
        self.hook.cancel_run(run_id)

    def run(self, job: StepJob) -> StageResult:
        """Submit and wait (outside Airflow's deferral, e.g. from a script); raises StepFailed."""
        run_id = self.submit(job, uuid.uuid4().hex)
        state = self.state(run_id)
        while state is not None and not state.is_terminal:
            time.sleep(self.config.poll_seconds)
            state = self.state(run_id)
        if state is None:
            raise StepFailed(f"Databricks run {run_id} is gone (its history expired or was deleted)")
        if not state.is_successful:
            raise StepFailed(describe_failure(run_id, state, self.errors(run_id), self.run_page_url(run_id)))
        return self.result(run_id)
