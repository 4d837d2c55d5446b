"""A small client of Airflow's REST API (v2): token, trigger, wait, task states, HITL."""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from esteira.config import Settings
from esteira.stack.embedded import admin_password

_FINISHED = {"success", "failed"}


class AirflowApiError(RuntimeError):
    pass


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
        self._http = httpx.Client(timeout=timeout)
        response = self._http.post(
            f"{self._base}/auth/token", json={"username": username, "password": password}
        )
        if response.status_code >= 400:
            raise AirflowApiError(
                f"login to {self._base} as {username!r} failed: {response.status_code} {response.text}"
            )
        self._http.headers["Authorization"] = f"Bearer {response.json()['access_token']}"

    @classmethod
    def for_settings(cls, settings: Settings) -> AirflowClient:
        return cls(settings.airflow_url, "admin", admin_password(settings))

    def request(self, method: str, path: str, **kwargs) -> dict:
        response = self._http.request(method, f"{self._base}/api/v2/{path.lstrip('/')}", **kwargs)
        if response.status_code >= 400:
            raise AirflowApiError(f"{method} {path}: {response.status_code} {response.text}")
        return response.json() if response.content else {}

    def wait_for_dag(self, dag_id: str, timeout: float = 180.0) -> dict:
        """The DAG appears once the dag-processor has parsed its file."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.request("GET", f"dags/{dag_id}")
            except AirflowApiError as exc:
                if "404" not in str(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(2)

    def unpause(self, dag_id: str) -> None:
        self.request("PATCH", f"dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, conf: dict | None = None, run_id: str | None = None) -> str:
        body: dict = {"logical_date": None, "conf": conf or {}}
        if run_id:
            body["dag_run_id"] = run_id
        return self.request("POST", f"dags/{dag_id}/dagRuns", json=body)["dag_run_id"]

    def run_state(self, dag_id: str, run_id: str) -> str:
        return self.request("GET", f"dags/{dag_id}/dagRuns/{_q(run_id)}")["state"]

    def task_states(self, dag_id: str, run_id: str) -> list[dict]:
        data = self.request("GET", f"dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances")
        return [
            {
                "task_id": ti["task_id"],
                "map_index": ti.get("map_index", -1),
                "state": ti.get("state"),
                "try_number": ti.get("try_number"),
            }
            for ti in data["task_instances"]
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
        path = f"dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances/{task_id}/xcomEntries/return_value"
        try:
            return self.request("GET", path, params={"deserialize": "true", "map_index": map_index})["value"]
        except AirflowApiError as exc:
            if "404" in str(exc):
                return None
            raise

    def latest_runs(self, dag_id: str, limit: int = 5) -> list[dict]:
        data = self.request(
            "GET", f"dags/{dag_id}/dagRuns", params={"order_by": "-run_after", "limit": limit}
        )
        return data["dag_runs"]

    def pending_approvals(self) -> list[dict]:
        data = self.request(
            "GET", "dags/~/dagRuns/~/hitlDetails", params={"response_received": "false"}
        )
        return data.get("hitl_details", [])

    def answer_approval(
        self, dag_id: str, run_id: str, task_id: str, option: str, reason: str, map_index: int = -1
    ) -> dict:
        return self.request(
            "PATCH",
            f"dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances/{task_id}/{map_index}/hitlDetails",
            json={"chosen_options": [option], "params_input": {"reason": reason}},
        )


def describe_tasks(tasks: list[dict]) -> str:
    """``task=state`` per task instance, mapped ones as ``task[i]``: a progress line."""
    return ", ".join(f"{_label(t)}={t['state'] or 'none'}" for t in tasks)


def _label(task: dict) -> str:
    index = task["map_index"]
    return task["task_id"] if index == -1 else f"{task['task_id']}[{index}]"


def _q(value: str) -> str:
    return urllib.parse.quote(value, safe="")
