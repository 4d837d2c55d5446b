"""Airflow's REST API (v2) for the CLI, the demo and the tests: token, trigger, wait, task
states, XCom, human approvals (HITL).

The calls go through the official client, ``apache-airflow-client`` (generated from the
api-server's own OpenAPI spec, released version for version with Airflow), wherever it has
the operation: reading a DAG, unpausing it, triggering, reading a run, listing runs, task
instances, a task's XCom, the pending approvals and answering one. Two things stay on httpx:

- the token: ``POST /auth/token`` belongs to the auth manager (simple or FAB), not to the
  ``/api/v2`` spec the client is generated from; the client's only login operation is the
  browser redirect ``GET /api/v2/auth/login``;
- ``request()``, the by-path escape hatch the tests use for what has no method here (DAG
  details, plugins, logs, extra links, setting a run's state): it answers the server's raw
  JSON, so a test asserts on exactly what the API sent.

The methods answer plain dicts and strings, not the client's models, so callers do not
depend on the generated package's classes.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from airflow_client.client import (
    ApiClient,
    Configuration,
    DAGApi,
    DagRunApi,
    TaskInstanceApi,
    XComApi,
)
from airflow_client.client.exceptions import ApiException
from airflow_client.client.models import (
    DAGPatchBody,
    TriggerDAGRunPostBody,
    UpdateHITLDetailPayload,
)
from pydantic import BaseModel

from esteira.config import Settings
from esteira.stack.embedded import admin_password

_FINISHED = {"success", "failed"}
_ANY = "~"
_T = TypeVar("_T")
# SQLite, the embedded stack's database, takes one writer at a time: a write that waits
# longer than the busy timeout for another process's transaction fails with "database is
# locked", which the api-server answers 500 {"detail": {"reason": "Database error"}}. The
# writes this client makes (unpause, trigger) are retried after these pauses.
_DATABASE_ERROR = "Database error"
_WRITE_RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0)


class AirflowApiError(RuntimeError):
    """The api-server answered an error; the message names the call, the status and the body."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class RunOutcome:
    dag_id: str
    run_id: str
    state: str
    tasks: list[dict]

    @property
    def ok(self) -> bool:
        return self.state == "success"


class AirflowClient:
    def __init__(self, base_url: str, username: str, password: str, timeout: float = 30.0):
        self._base = base_url.rstrip("/")
        self._timeout = float(timeout)
        self._http = httpx.Client(timeout=timeout)
        response = self._http.post(
            f"{self._base}/auth/token", json={"username": username, "password": password}
        )
        if response.status_code >= 400:
            raise AirflowApiError(
                f"login to {self._base} as {username!r} failed: "
                f"{response.status_code} {response.text}",
                response.status_code,
            )
        token = response.json()["access_token"]
        self._http.headers["Authorization"] = f"Bearer {token}"
        api = ApiClient(Configuration(host=self._base, access_token=token))
        self._dags, self._runs = DAGApi(api), DagRunApi(api)
        self._tasks, self._xcoms = TaskInstanceApi(api), XComApi(api)

    @classmethod
    def for_settings(cls, settings: Settings) -> AirflowClient:
        return cls(settings.airflow_url, "admin", admin_password(settings))

    def request(self, method: str, path: str, **kwargs) -> dict:
        """Any ``/api/v2`` call by path (httpx keyword arguments); the raw JSON answer."""
        response = self._http.request(method, f"{self._base}/api/v2/{path.lstrip('/')}", **kwargs)
        if response.status_code >= 400:
            raise AirflowApiError(
                f"{method} {path}: {response.status_code} {response.text}", response.status_code
            )
        return response.json() if response.content else {}

    def wait_for_dag(self, dag_id: str, timeout: float = 180.0) -> dict:
        """The DAG appears once the dag-processor has parsed its file."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return _plain(self._call(self._dags.get_dag, dag_id))
            except AirflowApiError as exc:
                if exc.status != 404 or time.monotonic() > deadline:
                    raise
            time.sleep(2)

    def unpause(self, dag_id: str) -> None:
        self._write(self._dags.patch_dag, dag_id, DAGPatchBody(is_paused=False))

    def trigger(self, dag_id: str, conf: dict | None = None, run_id: str | None = None) -> str:
        # A run id chosen here (Airflow's own format) makes a retry safe: a 409 for it means
        # the earlier attempt created the run after all.
        run_id = run_id or f"manual__{dt.datetime.now(dt.UTC).isoformat()}"
        body = TriggerDAGRunPostBody(conf=conf or {}, dag_run_id=run_id, logical_date=None)
        created = self._write(self._runs.trigger_dag_run, dag_id, body)
        return run_id if created is None else created.dag_run_id

    def run_state(self, dag_id: str, run_id: str) -> str:
        return self._call(self._runs.get_dag_run, dag_id, run_id).state.value

    def task_states(self, dag_id: str, run_id: str) -> list[dict]:
        data = self._call(self._tasks.get_task_instances, dag_id, run_id)
        return [
            {
                "task_id": ti.task_id,
                "map_index": ti.map_index,
                "state": ti.state.value if ti.state else None,
                "try_number": ti.try_number,
            }
            for ti in data.task_instances
        ]

    def wait(
        self,
        dag_id: str,
        run_id: str,
        timeout: float = 3600.0,
        poll: float = 3.0,
        on_change: Callable[[str, list[dict]], None] | None = None,
    ) -> RunOutcome:
        deadline = time.monotonic() + timeout
        last = None
        while True:
            state = self.run_state(dag_id, run_id)
            tasks = self.task_states(dag_id, run_id)
            snapshot = (state, tuple((t["task_id"], t["map_index"], t["state"]) for t in tasks))
            if on_change and snapshot != last:
                on_change(state, tasks)
            last = snapshot
            if state in _FINISHED:
                return RunOutcome(dag_id, run_id, state, tasks)
            if time.monotonic() > deadline:
                raise AirflowApiError(f"{dag_id} run {run_id} still {state} after {timeout:.0f} s")
            time.sleep(poll)

    def xcom(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1):
        """A task's return value, or None when it has none (a skipped task)."""
        try:
            entry = self._call(
                self._xcoms.get_xcom_entry, dag_id, task_id, run_id, "return_value",
                map_index=map_index, deserialize=True,
            )
        except AirflowApiError as exc:
            if exc.status == 404:
                return None
            raise
        return entry.actual_instance.value

    def latest_runs(self, dag_id: str, limit: int = 5) -> list[dict]:
        data = self._call(self._runs.get_dag_runs, dag_id, order_by=["-run_after"], limit=limit)
        return [_plain(run) for run in data.dag_runs]

    def pending_approvals(self) -> list[dict]:
        """Approvals still waiting for an answer, across every DAG and run."""
        data = self._call(self._tasks.get_hitl_details, _ANY, _ANY, response_received=False)
        return [_plain(detail) for detail in data.hitl_details]

    def answer_approval(
        self, dag_id: str, run_id: str, task_id: str, option: str, reason: str, map_index: int = -1
    ) -> dict:
        """Answer as the UI's *Required actions* page does: one option and the reason."""
        answer = UpdateHITLDetailPayload(chosen_options=[option], params_input={"reason": reason})
        return _plain(
            self._call(self._tasks.update_hitl_detail, dag_id, run_id, task_id, map_index, answer)
        )

    def _write(self, operation: Callable[..., _T], *args: Any) -> _T | None:
        """A write that is safe to repeat, retried while the database is locked; None when a
        retry is refused with 409 (the earlier attempt had landed)."""
        for attempt, delay in enumerate((*_WRITE_RETRY_DELAYS, None)):
            try:
                return self._call(operation, *args)
            except AirflowApiError as exc:
                if attempt and exc.status == 409:
                    return None
                if delay is None or exc.status != 500 or _DATABASE_ERROR not in str(exc):
                    raise
            time.sleep(delay)

    def _call(self, operation: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """One operation of the generated client, with this client's timeout and errors."""
        try:
            return operation(*args, _request_timeout=self._timeout, **kwargs)
        except ApiException as exc:
            ids = ", ".join(repr(a) for a in args if isinstance(a, str | int))
            raise AirflowApiError(
                f"{operation.__name__}({ids}): {exc.status} {exc.body}", exc.status
            ) from exc


def describe_tasks(tasks: list[dict]) -> str:
    """``task=state`` per task instance, mapped ones as ``task[i]``: a progress line."""
    return ", ".join(f"{_label(t)}={t['state'] or 'none'}" for t in tasks)


def _label(task: dict) -> str:
    index = task["map_index"]
    return task["task_id"] if index == -1 else f"{task['task_id']}[{index}]"


def _plain(model: BaseModel) -> dict:
    """The JSON the server sent (dates as ISO strings, states as their names)."""
    return model.model_dump(mode="json", by_alias=True)
