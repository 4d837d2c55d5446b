"""The embedded stack: Airflow standalone, an MLflow tracking server and the model server,
each in its own process group, all state under ESTEIRA_HOME.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from esteira.config import (
    Settings,
    get_settings,
    load_usecases,
    remember_settings,
    remembered_settings,
)
from esteira.stack import process
from esteira.stack.mlflow_server import mlflow_service

REPO_ROOT = Path(__file__).resolve().parents[3]
_MARKER = "ESTEIRA_STACK_HOME"
_PASSWORDS = "simple_auth_manager_passwords.json.generated"
# SQLite takes one writer at a time; a write waits this long for another process's
# transaction before it fails with "database is locked" (the driver's default, 5 s, is
# shorter than the scheduler's transactions on a busy 2-core machine; below the REST
# client's 30 s timeout, so its retry sees the error). Every Airflow process of the stack
# imports it (AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS).
SQLITE_CONNECT_ARGS = {"timeout": 20}


@dataclass(frozen=True)
class StackStatus:
    name: str
    pid: int | None
    running: bool
    healthy: bool
    url: str


# Settings tuned for one machine, each with the reason; the environment wins for any of them
# set before `esteira up` (so does bench/cycle.py's `--airflow-defaults`).
TUNING = {
    # Task processes fork from LocalExecutor workers, which fork from the scheduler: this
    # LocalExecutor imports what the stages use once, before it forks (warm.py), so no
    # task process pays mlflow, sklearn, skops or Evidently again. The scheduler reports
    # healthy once that is done (`esteira up` waits for it).
    "AIRFLOW__CORE__EXECUTOR": "esteira.orchestration.warm.WarmLocalExecutor",
    # 32 worker processes by default: far too many for a 2-core laptop (docs/stack-facts.md).
    # 4: two candidates train at once (train_candidate's max_active_tis_per_dagrun) while
    # the light tasks of other runs still start; the workers are forks of the warm
    # scheduler and share its memory until they write to it.
    "AIRFLOW__CORE__PARALLELISM": "4",
    # Each hop (a task's end -> the next task queued, an Asset event -> its run) waits for
    # the scheduler's next loop, and an idle loop sleeps this long (default 1 s).
    "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.25",
    # A task's supervisor waits up to this long, once its process has closed its sockets,
    # to see it exit; a skipped or failed task's state is written only then (success is
    # written before), so with the default, 5 s, a skipped task often took 5.2 s, not 0.3.
    # It is also the heartbeat period of a running task (one API call per second).
    "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
    # New DAG files show within 20 s; a changed one is re-parsed at once (the default sort
    # mode, modified_time, skips the interval for it). Unchanged files are re-parsed every
    # 2 min, not every 10 s: each parse is a process that builds every use case's DAGs.
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "20",
    "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "120",
}


def airflow_env(settings: Settings) -> dict[str, str]:
    """The environment every Airflow process of the embedded stack shares."""
    port = settings.airflow_port
    return {
        "AIRFLOW_HOME": str(settings.airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        **{key: os.environ.get(key, value) for key, value in TUNING.items()},
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": f"{__name__}.SQLITE_CONNECT_ARGS",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS_ASYNC": f"{__name__}.SQLITE_CONNECT_ARGS",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
        **{key: str(value) for key, value in side_ports(port).items()},
        "ESTEIRA_HOME": str(settings.home),
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
        # Fail fast when MLflow is down; Airflow's retries do the waiting (docs/stack-facts.md).
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "ESTEIRA_MODEL_SERVER_URL": settings.model_server_url,
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    }


def side_ports(airflow_port: int) -> dict[str, int]:
    """The ports Airflow's own servers take besides the API server's, derived from it so
    that two stacks on one machine never share them."""
    return {
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": airflow_port + 713,
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": airflow_port + 714,
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": airflow_port + 715,
    }


def _check_ports(settings: Settings) -> None:
    """Refuse, before anything starts, ports that Airflow's side servers would also take."""
    side = {port: key for key, port in side_ports(settings.airflow_port).items()}
    for name, port in (("ESTEIRA_MLFLOW_PORT", settings.mlflow_port),
                       ("ESTEIRA_MODEL_SERVER_PORT", settings.model_server_port)):
        if port in side:
            raise process.ServiceError(
                f"{name}={port} is also Airflow's {side[port]} (ESTEIRA_AIRFLOW_PORT "
                f"{settings.airflow_port} + {port - settings.airflow_port}): choose another port"
            )


def _services(settings: Settings) -> list[tuple[process.Service, float]]:
    marker = {_MARKER: str(settings.home)}
    mlflow = mlflow_service(
        settings.mlflow_port,
        f"sqlite:///{settings.mlflow_dir / 'mlflow.db'}",
        settings.mlflow_dir / "artifacts",
    )
    mlflow = process.Service(**{**mlflow.__dict__, "env": {**mlflow.env, **marker}})
    airflow = process.Service(
        name="Airflow (standalone)",
        argv=[str(Path(sys.executable).parent / "airflow"), "standalone"],
        port=settings.airflow_port,
        health_url=f"http://127.0.0.1:{settings.airflow_port}/api/v2/monitor/health",
        env={**airflow_env(settings), **marker},
        cwd=settings.airflow_home,
    )
    services = [(mlflow, 90.0), (airflow, 300.0)]
    served = _served(settings)
    if served:
        services.append((model_server_service(settings, served, marker), 60.0))
    return services


def _served(settings: Settings) -> list[str]:
    """The use cases of the stack's one model server: ESTEIRA_SERVE_USECASE (a name, a
    comma-separated list, or ``*`` for every use case; the demo's by default), as ``esteira
    up`` remembered it. Names of no known use case are left out; none: no server."""
    remembered = remembered_settings(settings.home).get("ESTEIRA_SERVE_USECASE", "churn")
    names = [n.strip() for n in os.environ.get("ESTEIRA_SERVE_USECASE", remembered).split(",")]
    known = [uc.name for uc in load_usecases(settings)]
    return known if names == ["*"] else [n for n in dict.fromkeys(names) if n in known]


def model_server_service(settings: Settings, usecases: list[str], extra_env: dict) -> process.Service:
    """One server process for all ``usecases``, each at ``/models/<uc>/invocations``."""
    return process.Service(
        name=f"model server ({', '.join(usecases)})",
        argv=[
            sys.executable,
            "-m",
            "esteira.serving.server",
            "--usecase",
            ",".join(usecases),
            "--port",
            str(settings.model_server_port),
        ],
        port=settings.model_server_port,
        health_url=f"http://127.0.0.1:{settings.model_server_port}/ping",
        env={
            "ESTEIRA_HOME": str(settings.home),
            "MLFLOW_TRACKING_URI": settings.tracking_uri,
            **extra_env,
        },
    )


def _pid_file(settings: Settings, service: process.Service) -> Path:
    slug = service.name.split(" ")[0].lower() if "model" not in service.name else "model-server"
    return settings.run_dir / f"{slug}.pid"


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _airflow_healthy(body: bytes) -> bool:
    try:
        health = json.loads(body)
    except ValueError:
        return False
    parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
    return all(health.get(p, {}).get("status") == "healthy" for p in parts)


def up(settings: Settings | None = None, echo=print) -> None:
    """Start what is not running, wait until everything is healthy. Safe to repeat."""
    settings = settings or get_settings()
    for folder in (settings.airflow_home, settings.mlflow_dir, settings.run_dir, settings.data_dir):
        folder.mkdir(parents=True, exist_ok=True)
    _check_ports(settings)
    remember_settings(settings)  # later commands in another shell see the same use cases
    for service, timeout in _services(settings):
        pid_file = _pid_file(settings, service)
        log = settings.run_dir / f"{pid_file.stem}.log"
        check = _airflow_healthy if service.name.startswith("Airflow") else None
        pid = _read_pid(pid_file)
        if pid and process.group_alive(pid):
            echo(f"{service.name}: already running (pid {pid})")
        else:
            echo(f"{service.name}: starting on port {service.port} (log: {log})")
            pid = process.start(service, log)
            pid_file.write_text(str(pid))
        try:
            process.wait_healthy(service, pid, timeout, log_path=log, check=check)
        except process.ServiceError:
            process.stop_group(pid)
            pid_file.unlink(missing_ok=True)
            raise
        echo(f"{service.name}: healthy at {service.health_url}")
    echo("")
    echo(f"Airflow UI      {settings.airflow_url}  (login: admin / {admin_password(settings)})")
    echo(f"MLflow UI       {settings.mlflow_ui_url}")
    for name in _served(settings):
        echo(f"Model server    {settings.model_server_url}/models/{name}/invocations")
    echo("Stop everything with: make down")


def down(settings: Settings | None = None, echo=print, grace: float = 10.0) -> None:
    """Stop every process of the stack: each group, its descendants, and marked orphans."""
    settings = settings or get_settings()
    for service, _ in reversed(_services(settings)):
        pid_file = _pid_file(settings, service)
        pid = _read_pid(pid_file)
        if pid and process.group_alive(pid):
            tree = process.descendants(pid)
            process.stop_group(pid, grace=grace)
            process.stop_processes(tree, grace=2.0)
            echo(f"{service.name}: stopped (pid {pid})")
        pid_file.unlink(missing_ok=True)
    leftovers = process.marked_processes(_MARKER, str(settings.home))
    if leftovers:
        process.stop_processes(leftovers, grace=2.0)
        echo(f"stopped {len(leftovers)} leftover process(es) of the stack")
    echo("stack stopped")


def status(settings: Settings | None = None) -> list[StackStatus]:
    settings = settings or get_settings()
    rows = []
    for service, _ in _services(settings):
        pid = _read_pid(_pid_file(settings, service))
        running = bool(pid and process.group_alive(pid))
        check = _airflow_healthy if service.name.startswith("Airflow") else None
        healthy = running and process.http_ok(service.health_url, check=check)
        rows.append(StackStatus(service.name, pid, running, healthy, service.health_url))
    return rows


def admin_password(settings: Settings) -> str:
    path = settings.airflow_home / _PASSWORDS
    try:
        return json.loads(path.read_text())["admin"]
    except (OSError, ValueError, KeyError):
        return f"(see {path})"
