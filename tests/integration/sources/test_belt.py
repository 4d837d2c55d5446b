"""A month-grain use case written by `esteira init` from one Parquet file, and its twin on
PostgreSQL (`source.kind: sql`), through the stages' DAGs with `dag.test()`: refresh,
training and gate, promotion, batch scoring and monitoring. Real Delta files, a real MLflow
server, Airflow's own task runner (the scheduler path is tests/e2e/test_onboarding.py)."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.integration.sources.conftest import panel_rows

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[3]
_QUERY = ("SELECT person_id, period, sector, hours, wage FROM panel "
          "WHERE period >= :start AND period < :end")


@pytest.fixture(scope="module")
def belt(tmp_path_factory, mlflow_server):
    """ESTEIRA_HOME, a use-case folder with `panel_belt` (init from Parquet) and
    `panel_belt_sql` (the same rows in a PostgreSQL database of its own), an Airflow DB."""
    import sqlalchemy as sa

    from esteira.config import get_settings
    from esteira.onboarding import init_usecase

    home, usecases = tmp_path_factory.mktemp("belt_home"), tmp_path_factory.mktemp("belt_usecases")
    rows = panel_rows(persons=40)
    rows = rows[rows["person_id"] < 90]
    rows.to_parquet(home / "panel.parquet", index=False)
    database = f"esteira_belt_{os.getpid()}"
    admin = sa.create_engine("postgresql+psycopg2://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as db:
        db.execute(sa.text(f'DROP DATABASE IF EXISTS "{database}"'))
        db.execute(sa.text(f'CREATE DATABASE "{database}"'))
    engine = sa.create_engine(f"postgresql+psycopg2://postgres@127.0.0.1:5432/{database}")
    rows.assign(period=lambda f: pd.to_datetime(f["period"]).dt.date).to_sql("panel", engine, index=False)
    engine.dispose()
    saved = {k: os.environ.get(k) for k in ("ESTEIRA_HOME", "ESTEIRA_USECASES_DIR", "ESTEIRA_MODEL_SERVER_URL",
                                             "AIRFLOW_CONN_PANEL_PG")}
    os.environ.update(ESTEIRA_HOME=str(home), ESTEIRA_USECASES_DIR=str(usecases), ESTEIRA_MODEL_SERVER_URL="off",
                      AIRFLOW_CONN_PANEL_PG=f"postgres://postgres@127.0.0.1:5432/{database}")
    try:
        settings = get_settings()
        path = init_usecase(settings, "panel_belt", str(home / "panel.parquet"), "person_id", "period", "wage")
        spec = yaml.safe_load(path.read_text())
        spec.update(name="panel_belt_sql", source={"kind": "sql", "conn_id": "panel_pg", "query": _QUERY})
        spec["features"]["table"] = "panel_belt_sql_features"
        (usecases / "panel_belt_sql.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)
        yield settings
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        with admin.connect() as db:
            db.execute(sa.text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()


def _test(stage: str, uc, **conf):
    module = runpy.run_path(str(REPO / "dags" / f"{stage}.py"), run_name="dag_module")
    run = module[stage](uc).test(run_conf=conf)
    return run, {ti.task_id: ti.state for ti in run.get_task_instances()}


def _champion_cycle(uc, settings):
    from esteira.registry.transitions import get_alias_version

    run, states = _test("feature_refresh", uc, interval_start="2024-01-01", interval_end="2026-01-01")
    assert run.state == "success", states
    run, states = _test("model_training", uc, training_end="2026-01-01")
    assert run.state == "success", states
    assert states["register_challenger"] == "success", states
    run, states = _test("model_promotion", uc, require_approval=False)
    assert run.state == "success", states
    assert get_alias_version(uc, "champion") == 1


def test_a_month_grain_use_case_from_one_parquet_file_is_scored_and_monitored(belt):
    from esteira import tables
    from esteira.config import get_usecase
    from esteira.registry.lineage import read_version

    uc = get_usecase("panel_belt", belt)
    assert (uc.grain, uc.schedule, uc.problem_type) == ("month", "@monthly", "regression")
    _champion_cycle(uc, belt)
    start, end = read_version(uc, 1, belt).window()
    assert (start, end) == (datetime(2024, 1, 1), datetime(2026, 1, 1))  # 24 periods back

    run, states = _test("batch_inference", uc, interval_start="2025-12-01", interval_end="2026-01-01")
    assert run.state == "success", states
    predictions = tables.read_table(tables.table_uri(belt, uc, tables.PREDICTIONS))
    assert len(predictions) == 40
    run, states = _test("drift_monitoring", uc, interval_start="2025-12-01", interval_end="2026-01-01")
    assert run.state == "success", states
    assert tables.row_count(tables.table_uri(belt, uc, tables.MONITORING)) == 1


def test_a_sql_use_case_on_postgres_reaches_a_champion(belt):
    from esteira.config import get_usecase

    uc = get_usecase("panel_belt_sql", belt)
    assert uc.source.kind == "sql"
    _champion_cycle(uc, belt)
