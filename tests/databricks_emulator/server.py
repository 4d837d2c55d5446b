"""A local emulator of Databricks REST APIs (Jobs 2.2, Files, SQL Statement Execution), for tests.

It implements what Airflow's Databricks provider calls, after the public API reference
(https://docs.databricks.com/api/workspace/jobs):

- ``POST /api/2.2/jobs/runs/submit``: a one-time run of ``tasks``; each task needs
  ``new_cluster``, ``existing_cluster_id`` or ``environment_key``. A repeated
  ``idempotency_token`` (at most 64 characters) returns the run it created first,
  whatever that run's state.
- ``GET /api/2.2/jobs/runs/get``: the run with ``state`` (``life_cycle_state``,
  ``result_state``, ``state_message``), ``run_page_url``, ``job_id`` and ``tasks[]``, each
  with its own ``run_id``. Parameters come from the query string or, as the provider's
  async client sends them, from a JSON body.
- ``GET /api/2.2/jobs/runs/get-output``: for a task run, ``logs`` (the task's stdout, last
  5 MB), ``error`` and ``error_trace`` when it failed; for a run of several tasks a 400,
  as documented.
- ``POST /api/2.2/jobs/runs/cancel``: the run goes TERMINATING, then TERMINATED/CANCELED.

Life cycle: PENDING (cluster start, ``--pending-seconds``) -> RUNNING -> TERMINATING ->
TERMINATED with SUCCESS, FAILED, CANCELED or TIMEDOUT (``timeout_seconds``). A python file
that cannot be read ends in INTERNAL_ERROR. A ``spark_python_task`` runs in a local
subprocess (its own process group, so a cancel kills the whole tree) with this emulator's
Python and environment plus ``new_cluster.spark_env_vars``. Auth is a bearer token.

Files API 2.0 (https://docs.databricks.com/api/workspace/files), on Unity Catalog
volumes the emulator is told exist (``--volume catalog.schema.volume``), stored under
``<workdir>/files``:

- ``PUT /api/2.0/fs/files{path}?overwrite=``: the raw body becomes the file (parents are
  created); 204 with no body. ``overwrite=false`` on an existing file: 409
  ``ALREADY_EXISTS``. A path outside a known volume: 404 ``NOT_FOUND``.
- ``HEAD /api/2.0/fs/files{path}``: 200 with ``Content-Length``, ``Content-Type`` and
  ``Last-Modified``, or 404 with no body. ``GET`` returns the bytes.
- A ``spark_python_task`` whose ``python_file`` is under ``/Volumes/`` runs the uploaded copy,
  and a ``spark_env_vars`` value under ``/Volumes/`` names the uploaded copy, as a cluster's
  ``/Volumes`` mount would.

SQL Statement Execution API 2.0 (https://docs.databricks.com/api/workspace/statementexecution)
on the warehouse ``--warehouse-id``: ``POST /api/2.0/sql/statements`` (``wait_timeout`` "0s"
or 5s-50s, default 10s), ``GET /api/2.0/sql/statements/{id}``, ``POST .../{id}/cancel``. A
statement is PENDING, then RUNNING, then SUCCEEDED or FAILED (``--statement-seconds`` in
all) with ``status.error`` {``error_code``, ``message``}. It runs the few Unity Catalog DDL
statements Esteira sends, against a catalog of schemas (``--schema catalog.schema``) and
external Delta tables whose columns are read from the Delta log at their location; anything
else fails as a syntax error. ``GET /api/2.1/unity-catalog/tables/{full_name}`` (Tables API)
returns a table's TableInfo: ``storage_location``, ``comment``, ``columns`` (``comment``,
``nullable``) and ``table_constraints`` (``primary_key_constraint`` with
``timeseries_columns``), or 404 ``TABLE_DOES_NOT_EXIST``.

Serving Endpoints API (https://docs.databricks.com/api/workspace/servingendpoints):
``POST /api/2.0/serving-endpoints`` (create), ``GET /api/2.0/serving-endpoints/{name}``,
``PUT /api/2.0/serving-endpoints/{name}/config`` (409 ``RESOURCE_CONFLICT`` while an update
is in progress) and ``POST /serving-endpoints/{name}/invocations``. An update runs for
``--serving-update-seconds`` with ``state.config_update`` IN_PROGRESS and the new config in
``pending_config``; it ends NOT_UPDATING, or UPDATE_FAILED with the served entity's
``state.deployment_state_message`` while ``config`` stays the previous one (see ``Serving``).

Outside ``/api``: ``GET /emulator/health`` and ``GET /emulator/requests`` (every API
request received, in order), ``GET /emulator/tables`` (the Unity Catalog tables) for the
tests to read. ``GET /.well-known/databricks-config`` (host metadata, which databricks-sdk
asks for first) is a 404, as on a workspace without it.

Usage: python server.py --port 8990 --token TOKEN --workdir DIR [--pending-seconds 0.2]
       [--volume main.esteira.artifacts] [--schema main.esteira] [--warehouse-id ID]
"""

from __future__ import annotations

import argparse
import email.utils
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

_LOG_LIMIT = 5 * 1024 * 1024
_API = "/api/2.2/jobs/runs/"
_FILES = "/api/2.0/fs/files/"
_SQL = "/api/2.0/sql/statements"
_UC_TABLES = "/api/2.1/unity-catalog/tables/"
_SERVING = "/api/2.0/serving-endpoints"
_ACTIVE = ("PENDING", "RUNNING", "TERMINATING")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class TaskRun:
    run_id: int
    task_key: str
    spec: dict[str, Any]
    life_cycle_state: str = "PENDING"
    result_state: str | None = None
    state_message: str = "Waiting for cluster"
    start_time: int = 0
    end_time: int = 0
    stdout: bytes = b""
    error: str | None = None
    error_trace: str | None = None
    process: subprocess.Popen | None = None
    cancel_requested: bool = False
    timed_out: bool = False


@dataclass
class Run:
    run_id: int
    job_id: int
    run_name: str
    timeout_seconds: int
    tasks: list[TaskRun]
    start_time: int
    token: str | None = None
    cancel_requested: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _state(life: str, result: str | None, message: str, user_cancelled: bool = False) -> dict:
    state = {"life_cycle_state": life, "state_message": message, "user_cancelled_or_timedout": user_cancelled}
    if result:
        state["result_state"] = result
    return state


def _last_error(stderr: str) -> str | None:
    """The exception line a Python traceback ends with (what Databricks shows as ``error``)."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    if not lines:
        return None
    for line in reversed(lines):
        if not line.startswith(" ") and ("Error" in line or "Exception" in line or ":" in line):
            return line.strip()
    return lines[-1].strip()


class Emulator:
    def __init__(self, token: str, workdir: Path, pending_seconds: float, files: Files | None = None,
                 sql: Warehouse | None = None, serving: Serving | None = None) -> None:
        self.token, self.workdir, self.pending_seconds = token, workdir, pending_seconds
        self.serving = serving or Serving(1.0)
        self.files = files or Files(workdir / "files", [])
        self.sql = sql or Warehouse("emulator-warehouse", [], 0.3)
        self.runs: dict[int, Run] = {}
        self.task_runs: dict[int, tuple[Run, TaskRun]] = {}
        self.tokens: dict[str, int] = {}
        self.requests: list[dict] = []
        self.ids = itertools.count(1001)
        self.lock = threading.Lock()

    # --- API -------------------------------------------------------------------------
    def submit(self, body: dict, host: str) -> dict:
        token = body.get("idempotency_token")
        if token is not None and len(str(token)) > 64:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "idempotency_token must have at most 64 characters")
        tasks = body.get("tasks")
        if not isinstance(tasks, list) or not tasks:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "At least one task is required in 'tasks'")
        for spec in tasks:
            if not spec.get("task_key"):
                raise ApiError(400, "INVALID_PARAMETER_VALUE", "Task key must be specified for every task")
            if not (spec.get("new_cluster") or spec.get("existing_cluster_id") or spec.get("environment_key")):
                raise ApiError(
                    400, "INVALID_PARAMETER_VALUE",
                    f"Task {spec['task_key']}: one of new_cluster, existing_cluster_id or environment_key is required",
                )
            if "spark_python_task" not in spec:
                raise ApiError(400, "INVALID_PARAMETER_VALUE", "this emulator runs spark_python_task tasks only")
        with self.lock:
            if token is not None and str(token) in self.tokens:
                return {"run_id": self.tokens[str(token)]}
            run_id = next(self.ids)
            run = Run(
                run_id=run_id, job_id=next(self.ids), run_name=str(body.get("run_name") or "Untitled"),
                timeout_seconds=int(body.get("timeout_seconds") or 0),
                tasks=[TaskRun(run_id=next(self.ids), task_key=s["task_key"], spec=s) for s in tasks],
                start_time=_now_ms(), token=None if token is None else str(token),
            )
            self.runs[run_id] = run
            for task in run.tasks:
                self.task_runs[task.run_id] = (run, task)
            if token is not None:
                self.tokens[str(token)] = run_id
        threading.Thread(target=self._execute, args=(run,), daemon=True).start()
        return {"run_id": run_id}

    def get(self, run_id: int, host: str) -> dict:
        if run_id in self.runs:
            return self._run_json(self.runs[run_id], host)
        if run_id in self.task_runs:
            run, task = self.task_runs[run_id]
            return {**self._task_json(run, task, host), "run_page_url": self._page(run, host, task.run_id)}
        raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Run {run_id} does not exist.")

    def get_output(self, run_id: int, host: str) -> dict:
        if run_id in self.runs:
            if len(self.runs[run_id].tasks) > 1:
                raise ApiError(
                    400, "INVALID_PARAMETER_VALUE",
                    "Retrieving the output of runs with multiple tasks is not supported. "
                    "Please retrieve the output of each individual task run instead.",
                )
            run, task = self.runs[run_id], self.runs[run_id].tasks[0]
        elif run_id in self.task_runs:
            run, task = self.task_runs[run_id]
        else:
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Run {run_id} does not exist.")
        logs = task.stdout[-_LOG_LIMIT:].decode(errors="replace")
        output: dict[str, Any] = {
            "metadata": {**self._task_json(run, task, host), "run_page_url": self._page(run, host, task.run_id)},
            "logs": logs,
            "logs_truncated": len(task.stdout) > _LOG_LIMIT,
        }
        if task.error is not None:
            output["error"] = task.error
        if task.error_trace is not None:
            output["error_trace"] = task.error_trace
        return output

    def cancel(self, run_id: int) -> dict:
        if run_id in self.runs:
            run, tasks = self.runs[run_id], self.runs[run_id].tasks
        elif run_id in self.task_runs:
            run, task = self.task_runs[run_id]
            tasks = [task]
        else:
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Run {run_id} does not exist.")
        with run.lock:
            for task in tasks:
                if task.life_cycle_state in _ACTIVE:
                    task.cancel_requested = True
                    task.life_cycle_state, task.state_message = "TERMINATING", "Run cancellation requested"
                    _kill(task.process)
        return {}

    # --- execution -------------------------------------------------------------------
    def _execute(self, run: Run) -> None:
        deadline = time.monotonic() + run.timeout_seconds if run.timeout_seconds else None
        time.sleep(self.pending_seconds)
        for task in run.tasks:
            self._run_task(run, task, deadline)

    def _run_task(self, run: Run, task: TaskRun, deadline: float | None) -> None:
        spec = task.spec["spark_python_task"]
        python_file = self.files.local(str(spec.get("python_file", "")))
        with run.lock:
            if task.cancel_requested:
                self._finish(task, "CANCELED", "Run cancelled.")
                return
            if not python_file.is_file():
                task.life_cycle_state, task.result_state = "INTERNAL_ERROR", "FAILED"
                task.state_message = f"Cannot read the python file {python_file}: no such file"
                task.end_time = _now_ms()
                return
            # A cluster sees volumes as a /Volumes mount; here that is the Files API's folder.
            spark_env = (task.spec.get("new_cluster") or {}).get("spark_env_vars", {})
            env = {**os.environ, **{key: str(self.files.local(str(value))) if str(value).startswith("/Volumes/")
                                    else str(value) for key, value in spark_env.items()}}
            task.process = subprocess.Popen(
                [sys.executable, str(python_file), *[str(p) for p in spec.get("parameters", [])]],
                cwd=self.workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
            task.life_cycle_state, task.state_message, task.start_time = "RUNNING", "", _now_ms()
        stdout, stderr = _communicate(task, deadline)
        task.stdout = stdout
        with run.lock:
            task.life_cycle_state = "TERMINATING"
            if task.cancel_requested:
                self._finish(task, "CANCELED", "Run cancelled.")
            elif task.timed_out:
                self._finish(task, "TIMEDOUT", f"Run timed out after {run.timeout_seconds} seconds")
            elif task.process.returncode == 0:
                self._finish(task, "SUCCESS", "")
            else:
                text = stderr.decode(errors="replace")
                task.error = _last_error(text) or f"Process exited with code {task.process.returncode}"
                task.error_trace = text[-_LOG_LIMIT:]
                self._finish(task, "FAILED", "Workload failed, see run output for details")

    @staticmethod
    def _finish(task: TaskRun, result: str, message: str) -> None:
        task.life_cycle_state, task.result_state, task.state_message = "TERMINATED", result, message
        task.end_time = _now_ms()

    # --- JSON shapes -----------------------------------------------------------------
    @staticmethod
    def _page(run: Run, host: str, run_id: int | None = None) -> str:
        return f"http://{host}/?o=0#job/{run.job_id}/run/{run_id or run.run_id}"

    def _task_json(self, run: Run, task: TaskRun, host: str) -> dict:
        body = {
            "run_id": task.run_id,
            "task_key": task.task_key,
            "job_id": run.job_id,
            "attempt_number": 0,
            "state": _state(task.life_cycle_state, task.result_state, task.state_message,
                            task.result_state in ("CANCELED", "TIMEDOUT")),
            "spark_python_task": task.spec["spark_python_task"],
            "start_time": task.start_time,
            "end_time": task.end_time,
            "run_page_url": self._page(run, host, task.run_id),
        }
        for key in ("new_cluster", "existing_cluster_id", "libraries", "timeout_seconds"):
            if key in task.spec:
                body[key] = task.spec[key]
        return body

    def _run_json(self, run: Run, host: str) -> dict:
        with run.lock:
            tasks = [self._task_json(run, t, host) for t in run.tasks]
            life, result, message = _overall(run.tasks)
        return {
            "job_id": run.job_id,
            "run_id": run.run_id,
            "number_in_job": run.run_id,
            "original_attempt_run_id": run.run_id,
            "run_name": run.run_name,
            "run_type": "SUBMIT_RUN",
            "format": "MULTI_TASK",
            "creator_user_name": "emulator@example.com",
            "state": _state(life, result, message, result in ("CANCELED", "TIMEDOUT")),
            "start_time": run.start_time,
            "end_time": max((t.end_time for t in run.tasks), default=0) if life == "TERMINATED" else 0,
            "timeout_seconds": run.timeout_seconds,
            "run_page_url": self._page(run, host),
            "tasks": tasks,
        }

    def stop_all(self) -> None:
        for _, task in list(self.task_runs.values()):
            _kill(task.process)


def _overall(tasks: list[TaskRun]) -> tuple[str, str | None, str]:
    """A run's state from its tasks: active while any task is, else its worst result."""
    for life in ("RUNNING", "TERMINATING", "PENDING"):
        active = [t for t in tasks if t.life_cycle_state == life]
        if active:
            return life, None, active[0].state_message
    for task in tasks:
        if task.life_cycle_state == "INTERNAL_ERROR":
            return "INTERNAL_ERROR", "FAILED", task.state_message
    for result in ("TIMEDOUT", "CANCELED", "FAILED"):
        bad = [t for t in tasks if t.result_state == result]
        if bad:
            return "TERMINATED", result, bad[0].state_message
    return "TERMINATED", "SUCCESS", ""


def _communicate(task: TaskRun, deadline: float | None) -> tuple[bytes, bytes]:
    timeout = None if deadline is None else max(deadline - time.monotonic(), 0.01)
    try:
        return task.process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        task.timed_out = True
        _kill(task.process)
        return task.process.communicate()


def _kill(process: subprocess.Popen | None) -> None:
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class Files:
    """Unity Catalog volumes as folders: ``/Volumes/<catalog>/<schema>/<volume>/...``."""

    def __init__(self, root: Path, volumes: list[str]) -> None:
        self.root, self.volumes = root, {tuple(v.split(".")) for v in volumes}

    def local(self, path: str) -> Path:
        """Where a cluster path is on this machine: a volume path in the store, else as is."""
        return self.root / path.lstrip("/") if path.startswith("/Volumes/") else Path(path)

    def _file(self, path: str) -> Path:
        parts = path.strip("/").split("/")
        if len(parts) < 5 or parts[0] != "Volumes":
            raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Invalid path '{path}': use /Volumes/<catalog>/<schema>/<volume>/<file>")
        if tuple(parts[1:4]) not in self.volumes:
            raise ApiError(404, "NOT_FOUND", f"Volume '{'.'.join(parts[1:4])}' does not exist.")
        return self.root / "/".join(parts)

    def put(self, path: str, data: bytes, overwrite: bool) -> None:
        target = self._file(path)
        if target.is_dir():
            raise ApiError(409, "ALREADY_EXISTS", "The path points to an existing directory.")
        if target.exists() and not overwrite:
            raise ApiError(409, "ALREADY_EXISTS", "The file being created already exists.")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        partial.write_bytes(data)
        partial.replace(target)

    def get(self, path: str) -> Path:
        target = self._file(path)
        if not target.is_file():
            raise ApiError(404, "NOT_FOUND", "The file being accessed is not found.")
        return target


_IDENT = r"`[^`]+`|\w+"
_NAME3 = rf"((?:{_IDENT})\.(?:{_IDENT})\.(?:{_IDENT}))"
_STRING = r"'((?:[^'\\]|\\.)*)'"
_DDL = {
    "create": re.compile(rf"CREATE TABLE IF NOT EXISTS {_NAME3} USING DELTA LOCATION {_STRING}\s*", re.I | re.S),
    "comment_table": re.compile(rf"COMMENT ON TABLE {_NAME3} IS {_STRING}\s*", re.I | re.S),
    "comment_column": re.compile(rf"ALTER TABLE {_NAME3} ALTER COLUMN ({_IDENT}) COMMENT {_STRING}\s*", re.I | re.S),
    "not_null": re.compile(rf"ALTER TABLE {_NAME3} ALTER COLUMN ({_IDENT}) SET NOT NULL\s*", re.I | re.S),
    "drop_constraint": re.compile(rf"ALTER TABLE {_NAME3} DROP CONSTRAINT IF EXISTS ({_IDENT})\s*", re.I | re.S),
    "primary_key": re.compile(
        rf"ALTER TABLE {_NAME3} ADD CONSTRAINT ({_IDENT}) PRIMARY KEY \(([^)]*)\)\s*", re.I | re.S
    ),
}


def _unquote(identifier: str) -> str:
    return identifier.strip().strip("`")


def _parts(name: str) -> tuple[str, str, str]:
    catalog, schema, table = (_unquote(p) for p in re.findall(_IDENT, name))
    return catalog, schema, table


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


class StatementError(Exception):
    """A statement that fails on the warehouse: ``status.error`` of the statement."""

    def __init__(self, message: str, code: str = "BAD_REQUEST") -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass
class Statement:
    statement_id: str
    text: str
    submitted: float
    state: str = "PENDING"
    error: dict | None = None
    cancelled: bool = False


class Warehouse:
    """One SQL warehouse and the Unity Catalog tables its DDL statements manage."""

    def __init__(self, warehouse_id: str, schemas: list[str], statement_seconds: float) -> None:
        self.warehouse_id, self.statement_seconds = warehouse_id, statement_seconds
        self.schemas = {tuple(s.split(".")) for s in schemas}
        self.tables: dict[str, dict] = {}
        self.statements: dict[str, Statement] = {}
        self.lock = threading.Lock()
        self.ids = itertools.count(1)

    def submit(self, body: dict) -> dict:
        if body.get("warehouse_id") != self.warehouse_id:
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Warehouse {body.get('warehouse_id')!r} does not exist.")
        text = body.get("statement")
        if not isinstance(text, str) or not text.strip():
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "statement is required")
        wait = str(body.get("wait_timeout", "10s"))
        match = re.fullmatch(r"(\d+)s", wait)
        if not match or not (int(match[1]) == 0 or 5 <= int(match[1]) <= 50):
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "wait_timeout must be 0s or between 5s and 50s")
        with self.lock:
            statement = Statement(f"01ef-emulator-{next(self.ids):06d}", text, time.monotonic())
            self.statements[statement.statement_id] = statement
        threading.Thread(target=self._execute, args=(statement,), daemon=True).start()
        deadline = time.monotonic() + int(match[1])
        while time.monotonic() < deadline and statement.state in ("PENDING", "RUNNING"):
            time.sleep(0.05)
        if statement.state in ("PENDING", "RUNNING") and int(match[1]) and body.get("on_wait_timeout") == "CANCEL":
            self.cancel(statement.statement_id)
        return self.get(statement.statement_id)

    def get(self, statement_id: str) -> dict:
        statement = self.statements.get(statement_id)
        if statement is None:
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Statement {statement_id} does not exist.")
        status: dict[str, Any] = {"state": statement.state}
        if statement.error:
            status["error"] = statement.error
        body: dict[str, Any] = {"statement_id": statement_id, "status": status}
        if statement.state == "SUCCEEDED":
            body["manifest"] = {"format": "JSON_ARRAY", "schema": {"column_count": 0, "columns": []},
                                "total_row_count": 0, "total_chunk_count": 0, "truncated": False}
            body["result"] = {"row_count": 0, "row_offset": 0, "chunk_index": 0}
        return body

    def cancel(self, statement_id: str) -> dict:
        statement = self.statements.get(statement_id)
        if statement is None:
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Statement {statement_id} does not exist.")
        with self.lock:
            if statement.state in ("PENDING", "RUNNING"):
                statement.cancelled, statement.state = True, "CANCELED"
        return {}

    def table_info(self, full_name: str) -> dict:
        """``GET /api/2.1/unity-catalog/tables/{full_name}``: the Tables API's TableInfo."""
        with self.lock:
            table = self.tables.get(full_name)
            if table is None:
                raise ApiError(404, "TABLE_DOES_NOT_EXIST", f"Table '{full_name}' does not exist.")
            catalog, schema, name = full_name.split(".")
            columns = [
                {"name": column, "type_text": spec["type"], "position": position, "nullable": spec["nullable"],
                 **({"comment": spec["comment"]} if spec["comment"] else {})}
                for position, (column, spec) in enumerate(table["columns"].items())
            ]
            constraints = [
                {"primary_key_constraint": {
                    "name": constraint,
                    "child_columns": [k.split()[0] for k in spec["primary_key"]],
                    **({"timeseries_columns": ts} if (ts := [k.split()[0] for k in spec["primary_key"]
                                                               if k.endswith(" TIMESERIES")]) else {}),
                }}
                for constraint, spec in table["constraints"].items()
            ]
            body = {"name": name, "catalog_name": catalog, "schema_name": schema, "full_name": full_name,
                    "table_type": "EXTERNAL", "data_source_format": "DELTA",
                    "storage_location": table["location"], "columns": columns}
            if table["comment"]:
                body["comment"] = table["comment"]
            if constraints:
                body["table_constraints"] = constraints
            return body

    def _execute(self, statement: Statement) -> None:
        time.sleep(self.statement_seconds / 2)
        with self.lock:
            if statement.cancelled:
                return
            statement.state = "RUNNING"
        time.sleep(self.statement_seconds / 2)
        with self.lock:
            if statement.cancelled:
                return
            try:
                self._run(statement.text.strip().rstrip(";"))
                statement.state = "SUCCEEDED"
            except StatementError as exc:
                statement.state, statement.error = "FAILED", {"error_code": exc.code, "message": exc.message}

    def _run(self, text: str) -> None:
        for kind, pattern in _DDL.items():
            match = pattern.fullmatch(text)
            if match:
                getattr(self, f"_{kind}")(*match.groups())
                return
        raise StatementError(
            f"[PARSE_SYNTAX_ERROR] Syntax error (this emulator runs Esteira's Unity Catalog DDL only): {text[:80]!r}"
        )

    def _table(self, name: str) -> dict:
        catalog, schema, table = _parts(name)
        found = self.tables.get(f"{catalog}.{schema}.{table}")
        if found is None:
            raise StatementError(
                f"[TABLE_OR_VIEW_NOT_FOUND] The table or view `{catalog}`.`{schema}`.`{table}` cannot be found.",
            )
        return found

    def _column(self, table: dict, column: str) -> dict:
        name = _unquote(column)
        if name not in table["columns"]:
            raise StatementError(
                f"[UNRESOLVED_COLUMN.WITH_SUGGESTION] A column with name `{name}` cannot be resolved. "
                f"Did you mean one of the following? [{', '.join(f'`{c}`' for c in table['columns'])}]"
            )
        return table["columns"][name]

    def _create(self, name: str, location: str) -> None:
        catalog, schema, table = _parts(name)
        if (catalog, schema) not in self.schemas:
            raise StatementError(
                f"[SCHEMA_NOT_FOUND] The schema `{catalog}`.`{schema}` cannot be found. Verify the spelling "
                "and correctness of the schema and catalog.", "NOT_FOUND",
            )
        full = f"{catalog}.{schema}.{table}"
        location = _unescape(location)
        if full in self.tables:
            return
        if location.startswith("/Volumes/"):
            raise StatementError(
                f"[INVALID_PARAMETER_VALUE.LOCATION_OVERLAP] Input path url '{location}' overlaps with "
                "managed storage: a table cannot be created in a volume location."
            )
        columns = _delta_columns(location)
        self.tables[full] = {"location": location, "comment": "", "columns": columns, "constraints": {}}

    def _comment_table(self, name: str, comment: str) -> None:
        self._table(name)["comment"] = _unescape(comment)

    def _comment_column(self, name: str, column: str, comment: str) -> None:
        self._column(self._table(name), column)["comment"] = _unescape(comment)

    def _not_null(self, name: str, column: str) -> None:
        self._column(self._table(name), column)["nullable"] = False

    def _drop_constraint(self, name: str, constraint: str) -> None:
        self._table(name)["constraints"].pop(_unquote(constraint), None)

    def _primary_key(self, name: str, constraint: str, columns: str) -> None:
        table = self._table(name)
        if _unquote(constraint) in table["constraints"]:
            raise StatementError(
                f"[CONSTRAINT_ALREADY_EXISTS] Constraint '{_unquote(constraint)}' already exists."
            )
        keys = []
        for item in columns.split(","):
            words = item.split()
            column = self._column(table, words[0])
            if column["nullable"]:
                raise StatementError(
                    f"[DELTA_NULLABLE_PRIMARY_KEY] Cannot create a primary key on the nullable column "
                    f"`{_unquote(words[0])}`: set it NOT NULL first."
                )
            keys.append(" ".join([_unquote(words[0]), *[w.upper() for w in words[1:]]]))
        table["constraints"][_unquote(constraint)] = {"primary_key": keys}


def _delta_columns(location: str) -> dict[str, dict]:
    """The table's columns from its Delta log, as Unity Catalog reads them on CREATE."""
    from deltalake import DeltaTable

    if not DeltaTable.is_deltatable(location):
        raise StatementError(
            f"[DELTA_SCHEMA_NOT_SET] Table schema is not set: there is no Delta table at {location}.",
        )
    schema = DeltaTable(location).schema().to_arrow()
    return {field.name: {"type": str(field.type), "comment": "", "nullable": True} for field in schema}


class Serving:
    """Model Serving endpoints whose served entities are registered MLflow model versions.

    An update loads each served version from the registry the emulator's environment
    names (MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI), as a real endpoint builds its
    container from it: a version that does not load fails the update (UPDATE_FAILED) and
    the endpoint keeps serving its previous config. Invocations score with the loaded model.
    """

    def __init__(self, update_seconds: float) -> None:
        self.update_seconds = update_seconds
        self.endpoints: dict[str, dict] = {}
        self.lock = threading.Lock()

    def create(self, body: dict) -> dict:
        name = body.get("name")
        if not name or not isinstance(body.get("config"), dict):
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "name and config are required")
        with self.lock:
            if name in self.endpoints:
                raise ApiError(400, "RESOURCE_ALREADY_EXISTS", f"Endpoint with name '{name}' already exists.")
            self.endpoints[name] = {"id": f"ep-{len(self.endpoints) + 1:04d}", "config": None, "pending": None,
                                    "config_update": "NOT_UPDATING", "models": {}, "version": 0}
        return self.update_config(name, body["config"])

    def update_config(self, name: str, config: dict) -> dict:
        entities = config.get("served_entities")
        if not isinstance(entities, list) or not entities:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "served_entities must hold at least one entity")
        for entity in entities:
            if not entity.get("entity_name") or not entity.get("entity_version"):
                raise ApiError(400, "INVALID_PARAMETER_VALUE", "each served entity needs entity_name and entity_version")
        with self.lock:
            endpoint = self._endpoint(name)
            if endpoint["config_update"] == "IN_PROGRESS":
                raise ApiError(409, "RESOURCE_CONFLICT",
                               f"Endpoint {name} is currently being updated. Wait for the update to finish.")
            served = [{**e, "name": e.get("name") or f"{e['entity_name'].replace('.', '-')}-{e['entity_version']}"}
                      for e in entities]
            routes = (config.get("traffic_config") or {}).get("routes") or [
                {"served_model_name": served[0]["name"], "traffic_percentage": 100}]
            endpoint["pending"] = {"served_entities": served, "traffic_config": {"routes": routes},
                                   "config_version": endpoint["version"] + 1, "state": {}, "message": ""}
            endpoint["config_update"] = "IN_PROGRESS"
        threading.Thread(target=self._build, args=(name,), daemon=True).start()
        return self.get(name)

    def _build(self, name: str) -> None:
        import mlflow

        time.sleep(self.update_seconds)
        pending = self.endpoints[name]["pending"]
        models, failure = {}, None
        for entity in pending["served_entities"]:
            try:
                models[entity["name"]] = mlflow.pyfunc.load_model(
                    f"models:/{entity['entity_name']}/{entity['entity_version']}")
            except Exception as exc:  # what the container build reports, whatever it is
                failure = f"Served entity {entity['name']} failed to load: {type(exc).__name__}: {exc}"[:1000]
                break
        with self.lock:
            endpoint = self.endpoints[name]
            if failure is not None:
                endpoint["config_update"], pending["message"] = "UPDATE_FAILED", failure
                return
            endpoint["config"], endpoint["models"], endpoint["version"] = pending, models, pending["config_version"]
            endpoint["pending"], endpoint["config_update"] = None, "NOT_UPDATING"

    def _endpoint(self, name: str) -> dict:
        if name not in self.endpoints:
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Endpoint with name '{name}' does not exist.")
        return self.endpoints[name]

    def get(self, name: str) -> dict:
        endpoint = self._endpoint(name)

        def config(value: dict, deployment: str, message: str = "") -> dict:
            entities = [{**e, "state": {"deployment": deployment,
                                        **({"deployment_state_message": message} if message else {})}}
                        for e in value["served_entities"]]
            return {"served_entities": entities, "traffic_config": value["traffic_config"],
                    "config_version": value["config_version"]}

        body: dict[str, Any] = {
            "name": name, "id": endpoint["id"],
            "state": {"ready": "READY" if endpoint["config"] else "NOT_READY",
                      "config_update": endpoint["config_update"]},
        }
        if endpoint["config"]:
            body["config"] = config(endpoint["config"], "DEPLOYMENT_READY")
        pending = endpoint["pending"]
        if pending:
            failed = endpoint["config_update"] == "UPDATE_FAILED"
            body["pending_config"] = config(pending, "DEPLOYMENT_FAILED" if failed else "DEPLOYMENT_CREATING",
                                            pending["message"])
        return body

    def invoke(self, name: str, body: dict) -> dict:
        import pandas as pd

        with self.lock:
            endpoint = self._endpoint(name)
            if not endpoint["config"]:
                raise ApiError(400, "BAD_REQUEST", f"Endpoint {name} is not ready: it serves no config yet.")
            routes = [r for r in endpoint["config"]["traffic_config"]["routes"] if r["traffic_percentage"] > 0]
            model = endpoint["models"][routes[0]["served_model_name"]]
        if "dataframe_split" in body:
            split = body["dataframe_split"]
            frame = pd.DataFrame(split["data"], columns=split.get("columns"))
        elif "dataframe_records" in body:
            frame = pd.DataFrame(body["dataframe_records"])
        else:
            raise ApiError(400, "BAD_REQUEST", "send dataframe_split or dataframe_records")
        try:
            predictions = model.predict(frame)
        except Exception as exc:  # the model's own error, as the endpoint reports it
            raise ApiError(400, "BAD_REQUEST", f"Model prediction failed: {type(exc).__name__}: {exc}") from None
        values = predictions.tolist() if hasattr(predictions, "tolist") else list(predictions)
        return {"predictions": values}


class Handler(BaseHTTPRequestHandler):
    emulator: Emulator

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        sys.stderr.write("emulator: " + (format % args) + "\n")

    def do_GET(self) -> None:  # noqa: N802 (stdlib naming)
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802 (stdlib naming)
        self._handle("POST")

    def do_PUT(self) -> None:  # noqa: N802 (stdlib naming)
        self._handle("PUT")

    def do_HEAD(self) -> None:  # noqa: N802 (stdlib naming)
        self._handle("HEAD")

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _params(self, raw: bytes) -> tuple[str, dict]:
        url = urlparse(self.path)
        params: dict[str, Any] = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if raw:
            try:
                body = json.loads(raw)
            except json.JSONDecodeError:
                raise ApiError(400, "MALFORMED_REQUEST", "Invalid JSON given in the body of the request") from None
            if isinstance(body, dict):
                params.update(body)
        return url.path, params

    def _handle(self, method: str) -> None:
        emulator = self.emulator
        try:
            raw = self._body()
            path = urlparse(self.path).path
            if path.startswith("/emulator/"):
                views = {"/emulator/health": lambda: {"status": "ok"}, "/emulator/requests": lambda: emulator.requests,
                         "/emulator/tables": lambda: emulator.sql.tables}
                self._send(200, views.get(path, lambda: {})())
                return
            if path.startswith("/.well-known/"):
                raise ApiError(404, "NOT_FOUND", f"No API found for '{method} {path}'")
            if path.startswith(_FILES):
                query = {k: v[-1] for k, v in parse_qs(urlparse(self.path).query).items()}
                emulator.requests.append({"method": method, "path": path, "params": query, "bytes": len(raw),
                                          "time": time.time()})
                self._authorize()
                self._files(method, unquote(path[len(_FILES) - 1:]), query, raw)
                return
            path, params = self._params(raw)
            emulator.requests.append({"method": method, "path": path, "params": params, "time": time.time()})
            self._authorize()
            host = self.headers.get("Host", "localhost")
            routes = {
                ("POST", "submit"): lambda: emulator.submit(params, host),
                ("GET", "get"): lambda: emulator.get(_run_id(params), host),
                ("GET", "get-output"): lambda: emulator.get_output(_run_id(params), host),
                ("POST", "cancel"): lambda: emulator.cancel(_run_id(params)),
            }
            route = routes.get((method, path[len(_API):])) if path.startswith(_API) else None
            if path.startswith(_SQL):
                route = self._sql_route(method, path[len(_SQL):].strip("/"), params)
            if path.startswith((_SERVING, "/serving-endpoints/")):
                route = self._serving_route(method, path, params)
            if path.startswith(_UC_TABLES) and method == "GET":
                route = lambda: emulator.sql.table_info(unquote(path[len(_UC_TABLES):]))  # noqa: E731
            if route is None:
                raise ApiError(404, "ENDPOINT_NOT_FOUND", f"No API found for '{method} {path}'")
            self._send(200, route())
        except ApiError as exc:
            if method == "HEAD":
                self._send_empty(exc.status)
            else:
                self._send(exc.status, {"error_code": exc.code, "message": exc.message})

    def _sql_route(self, method: str, rest: str, params: dict):
        sql = self.emulator.sql
        parts = rest.split("/") if rest else []
        if method == "POST" and not parts:
            return lambda: sql.submit(params)
        if method == "GET" and len(parts) == 1:
            return lambda: sql.get(parts[0])
        if method == "POST" and len(parts) == 2 and parts[1] == "cancel":
            return lambda: sql.cancel(parts[0])
        return None

    def _serving_route(self, method: str, path: str, params: dict):
        serving = self.emulator.serving
        if path.startswith("/serving-endpoints/"):
            parts = path[len("/serving-endpoints/"):].split("/")
            if method == "POST" and len(parts) == 2 and parts[1] == "invocations":
                return lambda: serving.invoke(parts[0], params)
            return None
        parts = [p for p in path[len(_SERVING):].split("/") if p]
        if method == "POST" and not parts:
            return lambda: serving.create(params)
        if method == "GET" and len(parts) == 1:
            return lambda: serving.get(parts[0])
        if method == "PUT" and len(parts) == 2 and parts[1] == "config":
            return lambda: serving.update_config(parts[0], params)
        return None

    def _files(self, method: str, path: str, query: dict, raw: bytes) -> None:
        files = self.emulator.files
        if method == "PUT":
            files.put(path, raw, overwrite=query.get("overwrite", "true").lower() != "false")
            self._send_empty(204)
            return
        if method not in ("GET", "HEAD"):
            raise ApiError(404, "ENDPOINT_NOT_FOUND", f"No API found for '{method} {_FILES}{path.lstrip('/')}'")
        target = files.get(path)
        data = target.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Last-Modified", email.utils.formatdate(target.stat().st_mtime, usegmt=True))
        self.end_headers()
        if method == "GET":
            self.wfile.write(data)

    def _send_empty(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _authorize(self) -> None:
        header = self.headers.get("Authorization", "")
        if not header:
            raise ApiError(401, "UNAUTHENTICATED", "Credential was not sent or was of an unsupported type")
        if header != f"Bearer {self.emulator.token}":
            raise ApiError(403, "PERMISSION_DENIED", "Invalid access token.")

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _run_id(params: dict) -> int:
    try:
        return int(params["run_id"])
    except (KeyError, TypeError, ValueError):
        raise ApiError(400, "INVALID_PARAMETER_VALUE", "run_id is required and must be an integer") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Databricks REST API emulator: Jobs 2.2, Files, SQL statements (tests only)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--pending-seconds", type=float, default=0.2)
    parser.add_argument("--volume", action="append", default=[], help="a Unity Catalog volume: catalog.schema.volume")
    parser.add_argument("--schema", action="append", default=[], help="a Unity Catalog schema: catalog.schema")
    parser.add_argument("--warehouse-id", default="emulator-warehouse")
    parser.add_argument("--statement-seconds", type=float, default=0.3, help="PENDING then RUNNING, in all")
    parser.add_argument("--serving-update-seconds", type=float, default=1.0, help="a config update's build time")
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    Handler.emulator = Emulator(
        args.token, args.workdir, args.pending_seconds, Files(args.workdir / "files", args.volume),
        Warehouse(args.warehouse_id, args.schema, args.statement_seconds), Serving(args.serving_update_seconds),
    )
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)

    def _stop(signum: int, frame: Any) -> None:
        Handler.emulator.stop_all()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _stop)
    try:
        server.serve_forever()
    finally:
        Handler.emulator.stop_all()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
