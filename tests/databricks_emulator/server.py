"""A local emulator of the Databricks Jobs REST API 2.2, for tests.

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

Outside ``/api``: ``GET /emulator/health`` and ``GET /emulator/requests`` (every API
request received, in order) for the tests to read.

Usage: python server.py --port 8990 --token TOKEN --workdir DIR [--pending-seconds 0.2]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

_LOG_LIMIT = 5 * 1024 * 1024
_API = "/api/2.2/jobs/runs/"
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
    def __init__(self, token: str, workdir: Path, pending_seconds: float) -> None:
        self.token, self.workdir, self.pending_seconds = token, workdir, pending_seconds
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
        python_file = Path(str(spec.get("python_file", "")))
        with run.lock:
            if task.cancel_requested:
                self._finish(task, "CANCELED", "Run cancelled.")
                return
            if not python_file.is_file():
                task.life_cycle_state, task.result_state = "INTERNAL_ERROR", "FAILED"
                task.state_message = f"Cannot read the python file {python_file}: no such file"
                task.end_time = _now_ms()
                return
            env = {**os.environ, **(task.spec.get("new_cluster") or {}).get("spark_env_vars", {})}
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


class Handler(BaseHTTPRequestHandler):
    emulator: Emulator

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        sys.stderr.write("emulator: " + (format % args) + "\n")

    def do_GET(self) -> None:  # noqa: N802 (stdlib naming)
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802 (stdlib naming)
        self._handle("POST")

    def _params(self) -> tuple[str, dict]:
        url = urlparse(self.path)
        params: dict[str, Any] = {k: v[-1] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            raw = self.rfile.read(length)
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
            path, params = self._params()
            if path.startswith("/emulator/"):
                self._send(200, {"status": "ok"} if path == "/emulator/health" else emulator.requests)
                return
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
            if route is None:
                raise ApiError(404, "ENDPOINT_NOT_FOUND", f"No API found for '{method} {path}'")
            self._send(200, route())
        except ApiError as exc:
            self._send(exc.status, {"error_code": exc.code, "message": exc.message})

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
    parser = argparse.ArgumentParser(description="Databricks Jobs API 2.2 emulator (tests only)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--pending-seconds", type=float, default=0.2)
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    Handler.emulator = Emulator(args.token, args.workdir, args.pending_seconds)
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
