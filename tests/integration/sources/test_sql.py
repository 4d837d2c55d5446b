"""`source.kind: sql` on the machine's real PostgreSQL (127.0.0.1:5432, user postgres): a
database of its own, created and dropped by the test; the connection from
``AIRFLOW_CONN_<ID>`` as Airflow defines it; the interval as bound parameters."""

from __future__ import annotations

import json
import os
from datetime import date, datetime

import pandas as pd
import pytest

from esteira import tables
from esteira.features import sources
from esteira.features.refresh import refresh_features
from tests.integration.sources.conftest import months, panel_usecase

_QUERY = ("SELECT person_id, period, sector, hours, wage FROM panel "
          "WHERE period >= :start AND period < :end")


def _admin():
    import sqlalchemy as sa

    return sa.create_engine("postgresql+psycopg2://postgres@127.0.0.1:5432/postgres",
                            isolation_level="AUTOCOMMIT")


@pytest.fixture
def database(rows):
    """A fresh database holding the panel, ``period`` a DATE column; dropped afterwards."""
    import sqlalchemy as sa

    name = f"esteira_sources_{os.getpid()}"
    admin = _admin()
    with admin.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine = sa.create_engine(f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}")
    good = rows[rows["period"] != "2024-13"].assign(period=lambda f: pd.to_datetime(f["period"]).dt.date)
    good.to_sql("panel", engine, index=False)
    engine.dispose()
    yield name
    with admin.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["uri", "json"])
def connection(request, database, monkeypatch) -> str:
    """``AIRFLOW_CONN_PANEL_DB`` in either of Airflow's environment forms."""
    if request.param == "uri":
        value = f"postgres://postgres@127.0.0.1:5432/{database}"
    else:
        value = json.dumps({"conn_type": "postgres", "host": "127.0.0.1", "port": 5432,
                            "login": "postgres", "schema": database})
    monkeypatch.setenv("AIRFLOW_CONN_PANEL_DB", value)
    return "panel_db"


def test_an_interval_read_returns_exactly_its_rows(settings, rows, connection):
    uc = panel_usecase({"kind": "sql", "conn_id": connection, "query": _QUERY})
    chunks = list(sources.events_source(uc, settings).read(datetime(2024, 3, 1), datetime(2024, 5, 1),
                                                           list(rows.columns)))
    got = pd.concat(c.rows for c in chunks)
    assert len(got[got["person_id"] < 90]) == len(months(rows, "2024-03", "2024-05"))
    assert str(min(got["period"])) == "2024-03-01" and str(max(got["period"])) == "2024-04-01"


def test_the_interval_is_bound_never_formatted(settings, connection):
    """A bound value is data: quotes in it cannot change the query."""
    import sqlalchemy as sa

    engine = sa.create_engine(sources.connection_url(connection))
    with engine.connect() as db:
        count = db.execute(sa.text("SELECT count(*) FROM panel WHERE sector = :start"),
                           {"start": "a' OR '1'='1"}).scalar()
    engine.dispose()
    assert count == 0


def test_refresh_reaches_the_tables_and_a_rerun_changes_nothing(settings, connection):
    uc = panel_usecase({"kind": "sql", "conn_id": connection, "query": _QUERY})
    first = refresh_features(uc, settings, date(2024, 1, 1), date(2024, 7, 1), run_id="r")
    assert first.rows_written == 72 and first.labels_written == 72 and first.rows_quarantined == 1
    uri = tables.table_uri(settings, uc, tables.FEATURES)
    digest = tables.content_hash(uri, ["person_id", "period"])
    refresh_features(uc, settings, date(2024, 1, 1), date(2024, 7, 1), run_id="r")
    assert tables.content_hash(uri, ["person_id", "period"]) == digest
    assert tables.row_count(tables.table_uri(settings, uc, tables.QUARANTINE)) == 1


def test_a_failing_query_and_a_missing_connection_name_the_source(settings, connection, monkeypatch):
    uc = panel_usecase({"kind": "sql", "conn_id": connection,
                        "query": "SELECT * FROM no_such_table WHERE x >= :start AND x < :end"})
    with pytest.raises(sources.SourceError, match=r"conn_id panel_db\): source.query failed: .*no_such_table"):
        refresh_features(uc, settings, date(2024, 1, 1), date(2024, 2, 1), run_id="r")
    monkeypatch.delenv("AIRFLOW_CONN_PANEL_DB")
    with pytest.raises(sources.SourceError, match=r"source.conn_id 'panel_db': no connection; set AIRFLOW_CONN_PANEL_DB"):
        refresh_features(uc, settings, date(2024, 1, 1), date(2024, 2, 1), run_id="r")


def test_a_query_without_the_interval_is_refused_on_load():
    with pytest.raises(ValueError, match=r"source.query must bind the interval as :start and :end"):
        panel_usecase({"kind": "sql", "conn_id": "x", "query": "SELECT * FROM panel"})
