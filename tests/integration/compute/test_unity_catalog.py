"""Unity Catalog registration of the refreshed tables against the Databricks emulator's
SQL Statement Execution and Tables APIs: the first refresh creates the external tables with
comments and primary key, a later one sends only what changed, a failed statement fails
with the warehouse's message."""

from __future__ import annotations

import datetime as dt

import pytest
import yaml

from esteira.config import ConfigError
from esteira.databricks import unity_catalog
from esteira.stages.window import RunWindow
from tests.databricks_emulator.service import UC_SCHEMA, WAREHOUSE_ID, small_churn

pytestmark = pytest.mark.integration

WINDOW = RunWindow(dt.date(2026, 1, 1), dt.date(2026, 1, 15))


def _sql(emulator, since: int = 0) -> list[str]:
    posts = [r for r in emulator.requests("/api/2.0/sql/statements") if r["method"] == "POST"]
    return [r["params"]["statement"] for r in posts[since:]]


def _with_tables(path, **tables):
    data = yaml.safe_load(path.read_text())
    data["tables"] = tables
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def refreshed(emulator, tmp_path, monkeypatch):
    """A refresh of a small churn use case with tables: main.esteira, in the worker."""
    from esteira.config import get_settings, load_usecase
    from esteira.features.generator import generate_landing
    from esteira.stages.feature_refresh import refresh

    usecases = tmp_path / "usecases"
    path = _with_tables(small_churn(usecases, entities=100), catalog=UC_SCHEMA[0], schema=UC_SCHEMA[1])
    monkeypatch.setenv("ESTEIRA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ESTEIRA_USECASES_DIR", str(usecases))
    monkeypatch.setenv("ESTEIRA_DATABRICKS_WAREHOUSE_ID", WAREHOUSE_ID)
    uc = load_usecase(path)
    generate_landing(uc, get_settings().landing_dir / uc.source.landing)
    return {"uc": uc, "path": path, "reference": refresh(uc, WINDOW, "manual__uc")}


def test_a_refresh_registers_then_keeps_the_table_current(emulator, refreshed):
    from esteira.config import load_usecase
    from esteira.stages.feature_refresh import register_tables

    uc, reference = refreshed["uc"], refreshed["reference"]
    before = len(_sql(emulator))
    registered = register_tables(uc, reference)
    features = "main.esteira.churn_features"
    assert registered["unity_catalog"][0] == features
    assert "main.esteira.churn_features_labels" in registered["unity_catalog"]
    sent = _sql(emulator, before)
    assert sent[0] == (f"CREATE TABLE IF NOT EXISTS `main`.`esteira`.`churn_features` USING DELTA "
                       f"LOCATION '{reference['table_uri']}'")
    described = {f.name: f.description for f in uc.features.definitions if f.description}
    for name, text in described.items():
        assert f"ALTER TABLE `main`.`esteira`.`churn_features` ALTER COLUMN `{name}` COMMENT '{text}'" in sent
    key = "ALTER TABLE `main`.`esteira`.`churn_features` ADD CONSTRAINT `churn_features_pk` PRIMARY KEY"
    assert f"{key} (`customer_id`, `event_ts` TIMESERIES)" in sent

    table = emulator.tables()[features]
    assert table["location"] == reference["table_uri"]
    assert table["constraints"] == {"churn_features_pk": {"primary_key": ["customer_id", "event_ts TIMESERIES"]}}
    assert {c: table["columns"][c]["comment"] for c in described} == described
    assert not table["columns"]["customer_id"]["nullable"]

    unchanged = len(_sql(emulator))
    register_tables(uc, reference)
    assert _sql(emulator, unchanged) == [], "a current table gets no statement (each is a Delta commit)"

    feature = uc.features.definitions[0].name
    data = yaml.safe_load(refreshed["path"].read_text())
    data["features"]["definitions"][0]["description"] = "Spend over the window, in BRL (it's revised)"
    refreshed["path"].write_text(yaml.safe_dump(data))
    from esteira.stages.feature_refresh import refresh

    edited = load_usecase(refreshed["path"])
    again = refresh(edited, WINDOW, "manual__uc_2")
    since = len(_sql(emulator))
    register_tables(edited, again)
    assert _sql(emulator, since) == [
        f"ALTER TABLE `main`.`esteira`.`churn_features` ALTER COLUMN `{feature}` COMMENT "
        "'Spend over the window, in BRL (it\\'s revised)'"
    ]
    assert emulator.tables()[features]["columns"][feature]["comment"] == "Spend over the window, in BRL (it's revised)"


def test_a_failed_statement_fails_with_the_warehouse_error(emulator, refreshed):
    from esteira.config import load_usecase
    from esteira.stages.feature_refresh import register_tables

    uc = load_usecase(_with_tables(refreshed["path"], catalog="main", schema="missing"))
    with pytest.raises(unity_catalog.StatementFailed,
                       match=r"FAILED on warehouse emulator-warehouse: NOT_FOUND: \[SCHEMA_NOT_FOUND\] "
                             r"The schema `main`.`missing` cannot be found"):
        register_tables(uc, refreshed["reference"])


def test_a_use_case_without_tables_registers_nothing(emulator, refreshed):
    from esteira.config import load_usecase
    from esteira.stages.feature_refresh import register_tables

    data = yaml.safe_load(refreshed["path"].read_text())
    del data["tables"]
    refreshed["path"].write_text(yaml.safe_dump(data))
    before = len(emulator.requests())
    reference = refreshed["reference"]
    assert register_tables(load_usecase(refreshed["path"]), reference) == reference
    assert len(emulator.requests()) == before


def test_the_warehouse_and_the_location_are_named_when_wrong(refreshed, monkeypatch):
    uc = refreshed["uc"]
    monkeypatch.delenv("ESTEIRA_DATABRICKS_WAREHOUSE_ID")
    with pytest.raises(ConfigError, match="tables.warehouse_id or ESTEIRA_DATABRICKS_WAREHOUSE_ID"):
        unity_catalog.warehouse_id(uc)
    with pytest.raises(ConfigError, match="ESTEIRA_TABLE_ROOT"):
        unity_catalog.desired(uc, "/Volumes/main/esteira/artifacts/data/churn/churn_features")


def test_predictions_and_monitoring_tables_are_registered_under_the_use_case_name(emulator, refreshed):
    """Both written as batch inference and monitoring write them; every use case has a
    'predictions' and a 'monitoring' table, so their Unity Catalog names carry its name."""
    import datetime as dt

    import pandas as pd

    from esteira import tables
    from esteira.config import get_settings
    from esteira.monitoring.results import SCHEMA, write_result

    uc, settings = refreshed["uc"], get_settings()
    predictions = tables.table_uri(settings, uc, tables.PREDICTIONS)
    tables.append(predictions, pd.DataFrame({"customer_id": ["c1"], "event_ts": [pd.Timestamp("2026-01-02")],
                                             "model_name": ["churn"], "model_version": ["1"], "prediction": [1]}))
    row = {name: None for name in SCHEMA.names} | {
        "window_start": dt.datetime(2026, 1, 1), "window_end": dt.datetime(2026, 1, 2), "model_version": "1"}
    write_result(settings, uc, row)
    before = len(_sql(emulator))
    monitoring = tables.table_uri(settings, uc, tables.MONITORING)
    assert unity_catalog.register_written(uc, [predictions, monitoring]) == [
        "main.esteira.churn_predictions", "main.esteira.churn_monitoring"]
    sent = _sql(emulator, before)
    assert f"CREATE TABLE IF NOT EXISTS `main`.`esteira`.`churn_predictions` USING DELTA LOCATION '{predictions}'" in sent
    assert "COMMENT ON TABLE `main`.`esteira`.`churn_monitoring` IS 'churn monitoring'" in sent
    # Their writers store no keys with them (tables.append): no primary key, not feature tables.
    assert not any("ADD CONSTRAINT" in s for s in sent)
    assert emulator.tables()["main.esteira.churn_monitoring"]["location"] == monitoring
