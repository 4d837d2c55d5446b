"""The production topology on one machine, without Docker: what docker-compose.yaml runs.

Airflow with the CeleryExecutor on Postgres and Redis (api-server, scheduler,
dag-processor, triggerer and a Celery worker, each its own process group), an MLflow
tracking server on Postgres with artifacts served by the server, and the model server.
Ports sit off the embedded stack's defaults so both can run side by side; all state lives
under ``Topology.home`` (by default ``$ESTEIRA_HOME/production``).

Stopping is reliable: each group is stopped with its descendants, and every process that
carries the topology's marker variable (Celery task processes call setsid and leave their
group) is found and stopped as well.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from esteira.config import get_settings
from esteira.stack import process
from esteira.stack.embedded import REPO_ROOT, admin_password
from esteira.stack.mlflow_server import mlflow_service

_MARKER = "ESTEIRA_PRODUCTION_HOME"
_AIRFLOW_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer", "worker")


class ProductionError(RuntimeError):
    """The topology could not be prepared or started; the message says what to fix."""


@dataclass(frozen=True)
class Topology:
    """Where the production topology runs. Database and Redis names keep it apart from
    anything else on the same servers; tests choose their own."""

    home: Path
    airflow_port: int = 8180
    mlflow_port: int = 5100
    model_server_port: int = 5101
    postgres: str = "postgresql://postgres@127.0.0.1:5432"
    airflow_db: str = "esteira_prod_airflow"
    mlflow_db: str = "esteira_prod_mlflow"
    redis: str = "redis://127.0.0.1:6379/5"
    worker_concurrency: int = 2
    heartbeat_timeout: int = 300
    serve_usecase: str | None = "churn"
    usecases_dir: Path | None = None
    model_server_api_key: str = field(default="", repr=False)
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def airflow_home(self) -> Path:
        return self.home / "airflow"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def airflow_url(self) -> str:
        return f"http://127.0.0.1:{self.airflow_port}"

    @property
    def tracking_uri(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def model_server_url(self) -> str:
        return f"http://127.0.0.1:{self.model_server_port}"

    def database_url(self, database: str, driver: str = "postgresql+psycopg2") -> str:
        base = self.postgres.split("://", 1)[1]
        return f"{driver}://{base}/{database}"


def default_topology() -> Topology:
    """The topology `make up-production` starts: under ``$ESTEIRA_HOME/production``."""
    settings = get_settings()
    return Topology(
        home=settings.home / "production",
        airflow_port=int(os.environ.get("ESTEIRA_PROD_AIRFLOW_PORT", 8180)),
        mlflow_port=int(os.environ.get("ESTEIRA_PROD_MLFLOW_PORT", 5100)),
        model_server_port=int(os.environ.get("ESTEIRA_PROD_MODEL_SERVER_PORT", 5101)),
        postgres=os.environ.get("ESTEIRA_PROD_POSTGRES", "postgresql://postgres@127.0.0.1:5432"),
        redis=os.environ.get("ESTEIRA_PROD_REDIS", "redis://127.0.0.1:6379/5"),
        model_server_api_key=settings.model_server_api_key,
        usecases_dir=settings.usecases_dir,
    )


def client_env(topology: Topology) -> dict[str, str]:
    """The variables that point the `esteira` command (and Settings) at this topology."""
    return {
        "ESTEIRA_HOME": str(topology.home),
        "ESTEIRA_AIRFLOW_PORT": str(topology.airflow_port),
        "ESTEIRA_MLFLOW_PORT": str(topology.mlflow_port),
        "ESTEIRA_MODEL_SERVER_PORT": str(topology.model_server_port),
        "MLFLOW_TRACKING_URI": topology.tracking_uri,
        "ESTEIRA_AIRFLOW_URL": topology.airflow_url,
        "ESTEIRA_MODEL_SERVER_URL": topology.model_server_url,
        "ESTEIRA_MLFLOW_UI_URL": topology.tracking_uri,
        # The online store in the topology's Redis database (its keys under esteira:<uc>:),
        # shared by the workers that write it and the model server that reads it.
        "ESTEIRA_ONLINE_STORE": topology.redis,
        **({"ESTEIRA_USECASES_DIR": str(topology.usecases_dir)} if topology.usecases_dir else {}),
    }


def _secret(topology: Topology, name: str) -> str:
    """A secret generated once per home, so every process (and a restart) shares it."""
    path = topology.run_dir / f"{name}.secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def airflow_env(topology: Topology) -> dict[str, str]:
    """The environment every Airflow process shares (the x-airflow-common of compose)."""
    port = topology.airflow_port
    return {
        **client_env(topology),
        "AIRFLOW_HOME": str(topology.airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(max(4, topology.worker_concurrency * 2)),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": topology.database_url(topology.airflow_db),
        "AIRFLOW__CELERY__BROKER_URL": topology.redis,
        "AIRFLOW__CELERY__RESULT_BACKEND": topology.database_url(topology.airflow_db, "db+postgresql"),
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(topology.worker_concurrency),
        # The worker imports what the stages use once, before it forks its pool, so no task
        # process pays mlflow, sklearn or Evidently again (orchestration/warm.py).
        "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": "esteira.orchestration.celery_config.CELERY_CONFIG",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": _secret(topology, "jwt"),
        "AIRFLOW__API__SECRET_KEY": _secret(topology, "api"),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "20",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(topology.heartbeat_timeout),
        # Off the defaults (8793, 8794, 8974) so several stacks share a machine (docs/stack-facts.md).
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(_worker_log_port(topology)),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(port + 714),
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(_scheduler_health_port(topology)),
        # Fail an MLflow call in seconds when the server is down; Airflow's retries wait.
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "ESTEIRA_MODEL_SERVER_API_KEY": topology.model_server_api_key,
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        _MARKER: str(topology.home),
        **topology.extra_env,
    }


def _worker_log_port(topology: Topology) -> int:
    return topology.airflow_port + 713


def _scheduler_health_port(topology: Topology) -> int:
    return topology.airflow_port + 715


@dataclass(frozen=True)
class Component:
    """One process group of the topology and how to tell that it is ready."""

    service: process.Service
    ready: Callable[[], bool]
    timeout: float = 120.0

    @property
    def slug(self) -> str:
        return self.service.name


def _health(topology: Topology) -> dict:
    import json
    import urllib.request

    try:
        url = f"{topology.airflow_url}/api/v2/monitor/health"
        with urllib.request.urlopen(url, timeout=2) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return {}


def _reports_healthy(topology: Topology, part: str) -> Callable[[], bool]:
    return lambda: _health(topology).get(part, {}).get("status") == "healthy"


def _listening(port: int) -> Callable[[], bool]:
    return lambda: not process.port_is_free(port)


def components(topology: Topology) -> list[Component]:
    """Every process group, in start order."""
    env = airflow_env(topology)
    airflow = str(Path(sys.executable).parent / "airflow")
    mlflow = mlflow_service(
        topology.mlflow_port, topology.database_url(topology.mlflow_db), topology.home / "mlflow" / "artifacts"
    )
    mlflow = replace(mlflow, name="mlflow", env={**mlflow.env, _MARKER: str(topology.home)})

    def airflow_service(name: str, argv: list[str], port: int, health_url: str = "") -> process.Service:
        return process.Service(name=name, argv=[airflow, *argv], port=port, health_url=health_url,
                               env=env, cwd=topology.airflow_home)

    api = airflow_service("api-server", ["api-server"], topology.airflow_port,
                          f"{topology.airflow_url}/api/v2/version")
    scheduler_health = f"http://127.0.0.1:{_scheduler_health_port(topology)}/health"
    parts = [
        Component(mlflow, lambda: process.http_ok(mlflow.health_url), 90),
        Component(api, lambda: process.http_ok(api.health_url), 120),
        Component(airflow_service("scheduler", ["scheduler"], _scheduler_health_port(topology)),
                  lambda: process.http_ok(scheduler_health)),
        Component(airflow_service("dag-processor", ["dag-processor"], 0),
                  _reports_healthy(topology, "dag_processor")),
        Component(airflow_service("triggerer", ["triggerer"], topology.airflow_port + 714),
                  _reports_healthy(topology, "triggerer")),
        Component(airflow_service("worker", ["celery", "worker", "--concurrency",
                                             str(topology.worker_concurrency)],
                                  _worker_log_port(topology)),
                  _listening(_worker_log_port(topology))),
    ]
    if topology.serve_usecase:
        server = process.Service(
            name="model-server",
            argv=[sys.executable, "-m", "esteira.serving.server", "--usecase", topology.serve_usecase,
                  "--port", str(topology.model_server_port), "--poll-interval", "10"],
            port=topology.model_server_port,
            health_url=f"{topology.model_server_url}/ping",
            env=env,
        )
        parts.append(Component(server, lambda: process.http_ok(server.health_url), 60))
    return parts


def component(topology: Topology, name: str) -> Component:
    for part in components(topology):
        if part.slug == name:
            return part
    raise KeyError(f"no component {name!r} (known: {', '.join(p.slug for p in components(topology))})")


def _pid_file(topology: Topology, name: str) -> Path:
    return topology.run_dir / f"{name}.pid"


def _log_file(topology: Topology, name: str) -> Path:
    return topology.run_dir / f"{name}.log"


def pid_of(topology: Topology, name: str) -> int | None:
    try:
        pid = int(_pid_file(topology, name).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if process.group_alive(pid) else None


def _psql(topology: Topology, sql: str) -> str:
    result = subprocess.run(
        ["psql", topology.database_url("postgres", "postgresql"), "-tAc", sql],
        capture_output=True, text=True, timeout=60,
    )
    if result.returncode != 0:
        raise ProductionError(f"Postgres at {topology.postgres}: {result.stderr.strip()}")
    return result.stdout.strip()


def create_databases(topology: Topology) -> None:
    """Create the Airflow and MLflow databases when they are missing (safe to repeat)."""
    for database in (topology.airflow_db, topology.mlflow_db):
        if _psql(topology, f"SELECT 1 FROM pg_database WHERE datname = '{database}'") != "1":
            _psql(topology, f'CREATE DATABASE "{database}"')


def drop_databases(topology: Topology) -> None:
    """Drop both databases and empty the Redis database (the stack must be stopped)."""
    for database in (topology.airflow_db, topology.mlflow_db):
        _psql(topology, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    subprocess.run(["redis-cli", "-u", topology.redis, "FLUSHDB"], capture_output=True, timeout=30)


def migrate(topology: Topology) -> None:
    """`airflow db migrate` on the Airflow database, before any component starts."""
    topology.airflow_home.mkdir(parents=True, exist_ok=True)
    log = _log_file(topology, "migrate")
    with open(log, "ab") as out:
        result = subprocess.run(
            [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
            env={**os.environ, **airflow_env(topology)}, cwd=topology.airflow_home,
            stdout=out, stderr=subprocess.STDOUT, timeout=600,
        )
    if result.returncode != 0:
        raise ProductionError(f"airflow db migrate failed; see {log}")


def start_component(topology: Topology, part: Component) -> int:
    """Start one component unless it runs already; returns its process group id."""
    pid = pid_of(topology, part.slug)
    if pid:
        return pid
    pid = process.start(part.service, _log_file(topology, part.slug))
    _pid_file(topology, part.slug).write_text(str(pid))
    return pid


def wait_ready(topology: Topology, part: Component, pid: int) -> None:
    deadline = time.monotonic() + part.timeout
    log = _log_file(topology, part.slug)
    while not part.ready():
        if not process.group_alive(pid) or _exited(pid):
            raise process.ServiceError(f"{part.slug} exited while starting; see {log}")
        if time.monotonic() > deadline:
            raise process.ServiceError(f"{part.slug} not ready within {part.timeout:.0f} s; see {log}")
        time.sleep(0.5)


def _exited(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return not process.pid_alive(pid)
    return done == pid


def up(topology: Topology | None = None, echo=print) -> Topology:
    """Create the databases, migrate, start every component and wait until all are ready."""
    topology = topology or default_topology()
    for folder in (topology.airflow_home, topology.run_dir, topology.home / "data"):
        folder.mkdir(parents=True, exist_ok=True)
    create_databases(topology)
    migrate(topology)
    parts = components(topology)
    try:
        # MLflow and the api-server first: the others report their health through them.
        for part in parts[:2]:
            wait_ready(topology, part, start_component(topology, part))
        started = [(part, start_component(topology, part)) for part in parts[2:]]
        for part, pid in started:
            wait_ready(topology, part, pid)
            echo(f"{part.slug}: ready (pid {pid}, log {_log_file(topology, part.slug)})")
    except Exception:
        down(topology, echo=lambda _: None)
        raise
    echo(f"Airflow UI    {topology.airflow_url}  (login: admin / {admin_password_for(topology)})")
    echo(f"MLflow        {topology.tracking_uri}")
    if topology.serve_usecase:
        echo(f"Model server  {topology.model_server_url}/invocations")
    echo("Use the esteira command against it with:")
    echo("  " + " ".join(f"{k}={v}" for k, v in client_env(topology).items()) + " esteira ...")
    return topology


def admin_password_for(topology: Topology) -> str:
    return admin_password(replace(get_settings(), home=topology.home))


def stop_component(topology: Topology, name: str, grace: float = 10.0) -> None:
    """Stop one component's group and every descendant (for restarts and fault tests)."""
    pid = pid_of(topology, name)
    if pid:
        tree = process.descendants(pid)
        process.stop_group(pid, grace=grace)
        process.stop_processes(tree, grace=2.0)
    _pid_file(topology, name).unlink(missing_ok=True)


def kill_component(topology: Topology, name: str) -> list[int]:
    """SIGKILL a component with every descendant, as when its machine dies; returns the pids.

    A Celery worker's task processes sit in their own process groups: they are killed too.
    """
    pid = pid_of(topology, name)
    if not pid:
        raise ProductionError(f"{name} is not running")
    victims = [pid, *process.descendants(pid)]
    for victim in victims:
        try:
            os.kill(victim, 9)
        except ProcessLookupError:
            pass
    process.stop_group(pid, grace=0)
    _exited(pid)
    _pid_file(topology, name).unlink(missing_ok=True)
    return victims


def restart_component(topology: Topology, name: str) -> int:
    part = component(topology, name)
    pid = start_component(topology, part)
    wait_ready(topology, part, pid)
    return pid


def down(topology: Topology | None = None, echo=print, grace: float = 10.0) -> None:
    """Stop every component (reverse start order) and any leftover marked process."""
    topology = topology or default_topology()
    for part in reversed(components(topology)):
        if pid_of(topology, part.slug):
            stop_component(topology, part.slug, grace=grace)
            echo(f"{part.slug}: stopped")
        _pid_file(topology, part.slug).unlink(missing_ok=True)
    leftovers = process.marked_processes(_MARKER, str(topology.home))
    if leftovers:
        process.stop_processes(leftovers, grace=2.0)
        echo(f"stopped {len(leftovers)} leftover process(es)")


def status(topology: Topology | None = None) -> dict[str, bool]:
    """Each component: running and ready."""
    topology = topology or default_topology()
    return {part.slug: bool(pid_of(topology, part.slug)) and part.ready() for part in components(topology)}


def main(argv: list[str] | None = None) -> int:
    """`python -m esteira.stack.production up|down|status` (the make targets)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m esteira.stack.production", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "status", "drop"],
                        help="drop: stop, then drop the databases and empty the Redis database")
    args = parser.parse_args(argv)
    topology = default_topology()
    if args.command == "up":
        up(topology)
    elif args.command in ("down", "drop"):
        down(topology)
        if args.command == "drop":
            drop_databases(topology)
    else:
        rows = status(topology)
        for name, ok in rows.items():
            print(f"{name:<14} {'ready' if ok else 'not ready'}")
        return 0 if all(rows.values()) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
