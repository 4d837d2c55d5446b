"""Settings from environment variables, and loading of use-case files.

Three layers of configuration (STYLE.md): these Settings for where things run, the
use-case YAML for what differs per model, Airflow Params for what a person picks per run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from esteira.usecase import UseCase

_REPO_ROOT = Path(__file__).resolve().parents[2]


class ConfigError(ValueError):
    """A configuration file or variable is wrong; the message names the file and key."""


@dataclass(frozen=True)
class Settings:
    """Where the platform keeps its state and reaches its services."""

    home: Path
    usecases_dir: Path
    airflow_port: int
    mlflow_port: int
    model_server_port: int
    tracking_uri: str
    registry_uri: str
    compute_backend: str
    model_server_url: str
    model_server_api_key: str
    airflow_url: str
    mlflow_ui_url: str
    table_root: Path | None = None
    online_store: str = "sqlite"  # or a redis:// URL (its logical database holds the entries)
    online_prefix: str = "esteira"  # Redis key prefix: <prefix>:<uc>:...

    @property
    def airflow_home(self) -> Path:
        return self.home / "airflow"

    @property
    def mlflow_dir(self) -> Path:
        return self.home / "mlflow"

    @property
    def data_dir(self) -> Path:
        """Delta tables: features, quarantine, predictions, monitoring (ESTEIRA_TABLE_ROOT,
        e.g. a Unity Catalog volume path on Databricks)."""
        return self.table_root or self.home / "data"

    @property
    def landing_dir(self) -> Path:
        """Raw daily files, as an upstream system delivers them."""
        return self.home / "landing"

    @property
    def online_dir(self) -> Path:
        """The embedded online store: one SQLite file per use case."""
        return self.home / "online"

    @property
    def run_dir(self) -> Path:
        """Pid files and process logs of the embedded stack."""
        return self.home / "run"

    def table_uri(self, usecase: str, table: str) -> str:
        return str(self.data_dir / usecase / table)


def _int(name: str, default: int, env: Mapping[str, str] = os.environ) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r} is not an integer") from None


def get_settings() -> Settings:
    """Read the settings from the environment (cheap; call it where needed, not at import).

    A variable not set falls back to what the stack in ESTEIRA_HOME was started with
    (:func:`remember_settings`), so a new shell sees the same use cases and ports.
    """
    home = Path(os.environ.get("ESTEIRA_HOME") or _REPO_ROOT / ".esteira").resolve()
    env = {**remembered_settings(home), **os.environ}
    airflow_port = _int("ESTEIRA_AIRFLOW_PORT", 8080, env)
    mlflow_port = _int("ESTEIRA_MLFLOW_PORT", 5000, env)
    server_port = _int("ESTEIRA_MODEL_SERVER_PORT", 5001, env)
    tracking_uri = env.get("MLFLOW_TRACKING_URI") or f"http://127.0.0.1:{mlflow_port}"
    backend = env.get("ESTEIRA_COMPUTE_BACKEND", "local")
    if backend not in ("local", "databricks"):
        raise ConfigError(
            f"environment variable ESTEIRA_COMPUTE_BACKEND={backend!r}: use 'local' or 'databricks'"
        )
    return Settings(
        home=home,
        usecases_dir=Path(
            env.get("ESTEIRA_USECASES_DIR") or _REPO_ROOT / "include" / "usecases"
        ).resolve(),
        airflow_port=airflow_port,
        mlflow_port=mlflow_port,
        model_server_port=server_port,
        tracking_uri=tracking_uri,
        registry_uri=env.get("MLFLOW_REGISTRY_URI") or tracking_uri,
        compute_backend=backend,
        model_server_url=env.get("ESTEIRA_MODEL_SERVER_URL")
        or f"http://127.0.0.1:{server_port}",
        model_server_api_key=env.get("ESTEIRA_MODEL_SERVER_API_KEY", ""),
        airflow_url=env.get("ESTEIRA_AIRFLOW_URL") or f"http://127.0.0.1:{airflow_port}",
        mlflow_ui_url=env.get("ESTEIRA_MLFLOW_UI_URL") or tracking_uri,
        table_root=Path(env["ESTEIRA_TABLE_ROOT"]) if env.get("ESTEIRA_TABLE_ROOT") else None,
        online_store=_online_store(env.get("ESTEIRA_ONLINE_STORE") or "sqlite"),
        online_prefix=env.get("ESTEIRA_ONLINE_PREFIX") or "esteira",
    )


def _online_store(value: str) -> str:
    if value != "sqlite" and not value.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(
            f"environment variable ESTEIRA_ONLINE_STORE={value!r}: use 'sqlite' or a "
            "redis:// URL (redis://host:port/db)"
        )
    return value


_REMEMBERED = "settings.json"
# What `esteira up` writes down; secrets (API keys, AIRFLOW_CONN_*, ESTEIRA_ONLINE_STORE: a
# Redis URL may carry a password) stay in the environment.
_REMEMBERED_VARIABLES = (
    "ESTEIRA_USECASES_DIR", "ESTEIRA_TABLE_ROOT", "ESTEIRA_AIRFLOW_PORT", "ESTEIRA_MLFLOW_PORT",
    "ESTEIRA_MODEL_SERVER_PORT", "ESTEIRA_MODEL_SERVER_URL", "ESTEIRA_SERVE_USECASE",
    "ESTEIRA_COMPUTE_BACKEND", "ESTEIRA_AIRFLOW_URL", "ESTEIRA_MLFLOW_UI_URL",
    "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "ESTEIRA_ONLINE_PREFIX",
)


def remembered_settings(home: Path) -> dict[str, str]:
    """The variables the stack in ``home`` was started with (empty when none was)."""
    try:
        return json.loads((home / _REMEMBERED).read_text())
    except (OSError, ValueError):
        return {}


def remember_settings(settings: Settings) -> Path:
    """Write down the variables set now (the use-case folder resolved) in the home."""
    values = {k: os.environ[k] for k in _REMEMBERED_VARIABLES if os.environ.get(k)}
    values["ESTEIRA_USECASES_DIR"] = str(settings.usecases_dir)
    path = settings.home / _REMEMBERED
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")
    return path


def _describe(error: dict) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"unknown key '{key}'"
    return f"key '{key}': {error['msg']}"


def load_usecase(path: str | Path) -> UseCase:
    """Load and validate one use-case YAML file.

    Raises ConfigError naming the file and each bad key (misspelled keys included).
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        return UseCase.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(_describe(e) for e in exc.errors())
        raise ConfigError(f"{path}: {problems}") from None


def usecase_paths(settings: Settings | None = None) -> list[Path]:
    settings = settings or get_settings()
    return sorted(settings.usecases_dir.glob("*.yaml"))


def load_usecases(settings: Settings | None = None) -> list[UseCase]:
    return [load_usecase(p) for p in usecase_paths(settings)]


def get_usecase(name: str, settings: Settings | None = None) -> UseCase:
    settings = settings or get_settings()
    path = settings.usecases_dir / f"{name}.yaml"
    if not path.exists():
        known = ", ".join(p.stem for p in usecase_paths(settings)) or "none"
        raise ConfigError(f"no use case '{name}' in {settings.usecases_dir} (known: {known})")
    return load_usecase(path)
