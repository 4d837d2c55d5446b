"""A new use case from the README alone, through the real scheduler.

The README's walk-through ("Add your own use case") is run literally: its bash blocks are
extracted and run in a fresh folder holding the data file it names, a monthly panel made
here (not by the churn generator) with the regression target in the same rows: `esteira
init`, `check`, `up`, `enable`, the refresh, training and gate, `approve`, promotion, a
prediction by key, batch scoring and monitoring. Only the stack's home and ports differ from
the README (free ports, so the test never meets a developer's stack). A second use case then reads the same panel
from the machine's PostgreSQL (`source.kind: sql`) and reaches a champion.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.e2e.conftest import REPO, esteira, make_stack_env

pytestmark = pytest.mark.e2e

_SECTION = "## Add your own use case"
_QUERY = "SELECT person, month, sector, hours, wage FROM wages WHERE month >= :start AND month < :end"


def walkthrough_blocks() -> list[str]:
    """The bash blocks of the README's walk-through (before its reference subsections)."""
    text = (REPO / "README.md").read_text()
    section = text[text.index(_SECTION):]
    section = section[: section.index("\n### ")]
    return re.findall(r"```bash\n(.*?)```", section, flags=re.S)


def wages_panel(persons: int = 60, seed: int = 11) -> pd.DataFrame:
    """One row per person and month of 2023-2024; the wage follows hours, sector and its own
    past, so a model has something to learn."""
    rng = np.random.default_rng(seed)
    rows = []
    for person in range(1, persons + 1):
        sector = rng.choice(["retail", "industry", "services"])
        wage = rng.uniform(1500, 3000)
        for month in pd.period_range("2023-01", "2024-12", freq="M"):
            hours = float(np.clip(rng.normal(38, 6), 10, 60))
            wage = 0.8 * wage + 0.2 * (60 * hours) + {"retail": -100, "industry": 150, "services": 0}[sector]
            rows.append((person, str(month), sector, round(hours, 1), round(wage + rng.normal(0, 40), 2)))
    return pd.DataFrame(rows, columns=["person", "month", "sector", "hours", "wage"])


@pytest.fixture(scope="module")
def postgres_panel():
    """The same panel in a database of its own on 127.0.0.1:5432, dropped afterwards."""
    import sqlalchemy as sa

    name = f"esteira_e2e_onboarding_{os.getpid()}"
    admin = sa.create_engine("postgresql+psycopg2://postgres@127.0.0.1:5432/postgres",
                             isolation_level="AUTOCOMMIT")
    with admin.connect() as db:
        db.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        db.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine = sa.create_engine(f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}")
    panel = wages_panel().assign(month=lambda f: pd.to_datetime(f["month"]).dt.date)
    panel.to_sql("wages", engine, index=False)
    engine.dispose()
    yield f"postgres://postgres@127.0.0.1:5432/{name}"
    with admin.connect() as db:
        db.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="module")
def walkthrough(postgres_panel):
    """A folder with the checkout's venv and the README's data file, and the stack's env."""
    folder = Path(tempfile.mkdtemp(prefix="esteira-onboarding-"))
    (folder / ".venv").symlink_to(REPO / ".venv")
    (folder / "my-data").mkdir()
    wages_panel().to_parquet(folder / "my-data" / "wages.parquet", index=False)
    env = {**make_stack_env(), "AIRFLOW_CONN_WAGES_PG": postgres_panel}
    yield folder, env
    esteira(env, "down")


# The embedded stack's Airflow runs on SQLite: while the scheduler writes (six DAGs just
# unpaused), an API call can fail with HTTP 500 "Database error" (the database is locked).
# Such a call is repeated, at most twice; any other failure fails the block.
_RETRY_LOCKED = r"""
_run() {
  local out
  for attempt in 1 2 3; do
    if out=$("$@" 2>&1); then printf '%s\n' "$out"; return 0; fi
    printf '%s\n' "$out"
    case "$out" in *'"reason":"Database error"'*) sleep 5 ;; *) return 1 ;; esac
  done
  return 1
}
"""


def _bash(block: str, folder: Path, env: dict, timeout: float = 3600) -> subprocess.CompletedProcess:
    """Run a README block as a person pastes it, in a shell without this session's use-case
    folder (a new shell); each `esteira` line as written, through `_run`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ESTEIRA_", "VIRTUAL_ENV"))}
    lines = [f"_run {line}" if line.startswith("esteira ") else line for line in block.splitlines()]
    script = _RETRY_LOCKED + "\n".join(lines)
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=folder, env={**clean, **env},
                          capture_output=True, text=True, timeout=timeout, check=False)


def _log(name: str, result: subprocess.CompletedProcess) -> str:
    out = REPO / "test-output"
    out.mkdir(exist_ok=True)
    text = result.stdout + result.stderr
    (out / f"onboarding-{name}.log").write_text(text)
    return text


def _settings(env: dict, usecases: Path):
    with pytest.MonkeyPatch.context() as patch:
        for key, value in {**env, "ESTEIRA_USECASES_DIR": str(usecases)}.items():
            patch.setenv(key, value)
        from esteira.config import get_settings

        return get_settings()


def test_the_readme_walkthrough_reaches_a_monitored_champion(walkthrough):
    folder, env = walkthrough
    first, later = walkthrough_blocks()[:2]
    result = _bash(first, folder, env)
    text = _log("walkthrough", result)
    assert result.returncode == 0, text[-6000:]
    assert "ok: a first refresh would succeed" in text
    assert "approved wages__model_promotion run" in text
    assert '"feature_ts": "2024-12-01T00:00:00"' in text  # esteira predict: by key, the latest month
    for dag in ("feature_refresh", "batch_inference", "drift_monitoring"):
        assert f"wages__{dag} run" in text and ": success" in text

    from mlflow import MlflowClient

    from esteira import tables
    from esteira.config import get_usecase

    settings = _settings(env, folder / "my-usecases")
    uc = get_usecase("wages", settings)
    assert (uc.grain, uc.problem_type, uc.source.kind) == ("month", "regression", "file")
    champion = MlflowClient(settings.tracking_uri).get_model_version_by_alias("wages", "champion")
    assert champion.tags["approved_by"] == "admin"
    monitoring = tables.read_table(tables.table_uri(settings, uc, tables.MONITORING))
    assert len(monitoring) >= 1
    predictions = tables.read_table(tables.table_uri(settings, uc, tables.PREDICTIONS))
    assert len(predictions) >= 60

    again = _bash(later, folder, env, timeout=300)  # a new shell: no ESTEIRA_USECASES_DIR
    text = _log("new-shell", again)
    assert again.returncode == 0, text[-3000:]
    assert "wages__model_promotion" in text and "promote" in text


def test_a_sql_use_case_on_postgres_reaches_a_champion(walkthrough):
    folder, env = walkthrough
    usecases = folder / "my-usecases"
    spec = yaml.safe_load((usecases / "wages.yaml").read_text())
    spec.update(name="wages_sql", source={"kind": "sql", "conn_id": "wages_pg", "query": _QUERY})
    spec["features"]["table"] = "wages_sql_features"
    (usecases / "wages_sql.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    block = "\n".join([
        "source .venv/bin/activate",
        "esteira check wages_sql",
        "esteira enable wages_sql",
        "esteira trigger wages_sql__feature_refresh --conf "
        "'{\"interval_start\": \"2023-01-01\", \"interval_end\": \"2025-01-01\"}' --wait",
        # The model server follows `wages` only: the deploy step says so and is skipped.
        "esteira approve wages_sql --wait 1200 --reason 'sql source reviewed'",
    ])
    result = _bash(block, folder, env)
    text = _log("sql", result)
    assert result.returncode == 0, text[-6000:]
    assert "sql source (conn_id wages_pg)" in text

    from mlflow import MlflowClient

    settings = _settings(env, usecases)
    champion = MlflowClient(settings.tracking_uri).get_model_version_by_alias("wages_sql", "champion")
    assert champion.version == "1"
