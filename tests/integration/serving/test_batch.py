"""Batch inference scores an interval with the champion and merges idempotently."""

from __future__ import annotations

import dataclasses
import datetime as dt

import mlflow
import numpy as np
import pandas as pd
import pytest
from deltalake import write_deltalake
from pandas.testing import assert_frame_equal

from esteira import tables
from esteira.serving.batch import NoChampionError, score_batch
from tests.integration.serving import models
from tests.integration.serving.conftest import fresh_usecase

pytestmark = pytest.mark.integration

DAY = dt.datetime(2026, 3, 2)


def write_features(uc, settings, days: int = 3, per_day: int = 20) -> pd.DataFrame:
    rows = models.frame(uc, days * per_day, seed=11)
    rows.insert(0, uc.entity, np.arange(len(rows)) % 17 + 1)
    offsets = pd.to_timedelta(np.arange(len(rows)) * (24 * 60 // per_day), unit="min")
    rows.insert(1, uc.timestamp, (pd.Timestamp(DAY) - pd.Timedelta(days=1) + offsets).astype("datetime64[us]"))
    write_deltalake(settings.table_uri(uc.name, uc.features.table), rows, mode="overwrite")
    return rows


def predictions(settings, uc) -> pd.DataFrame:
    frame = tables.read_table(tables.table_uri(settings, uc, tables.PREDICTIONS))
    return frame.sort_values([uc.entity, uc.timestamp, "model_version"]).reset_index(drop=True)


def test_scores_the_interval_with_the_champion(uc, settings, champion):
    features = write_features(uc, settings)

    result = score_batch(uc, settings, DAY, DAY + dt.timedelta(days=1), run_id="scheduled__2026-03-02")

    inside = features[(features[uc.timestamp] >= DAY) & (features[uc.timestamp] < DAY + dt.timedelta(days=1))]
    assert result["rows"] == len(inside) == 20
    assert result["model_version"] == champion
    assert result["table_uri"] == settings.table_uri(uc.name, "predictions")
    table = predictions(settings, uc)
    assert result["version"] == tables.current_version(result["table_uri"]) == 0
    inside = inside.sort_values([uc.entity, uc.timestamp]).reset_index(drop=True)
    assert table[uc.timestamp].tolist() == inside[uc.timestamp].tolist()
    model = mlflow.sklearn.load_model(f"models:/{uc.model_name}/{champion}")
    x = inside[uc.feature_names]
    expected = mlflow.pyfunc.load_model(f"models:/{uc.model_name}/{champion}").predict(x)
    assert table["prediction"].tolist() == expected.astype(float).tolist()
    assert np.allclose(table["probability"], model.predict_proba(x)[:, 1])
    assert set(table["model_name"]) == {uc.model_name}
    assert set(table["run_id"]) == {"scheduled__2026-03-02"}
    assert table["scored_at"].notna().all()


def test_a_rerun_leaves_the_predictions_table_identical(uc, settings, champion):
    write_features(uc, settings)
    start, end = DAY + dt.timedelta(days=1), DAY + dt.timedelta(days=2)
    score_batch(uc, settings, start, end, run_id="scheduled__2026-03-03")
    before = predictions(settings, uc)

    score_batch(uc, settings, start, end, run_id="scheduled__2026-03-03")
    score_batch(uc, settings, start, end, run_id="manual__rerun")

    assert_frame_equal(predictions(settings, uc), before)
    last = tables.history(tables.table_uri(settings, uc, tables.PREDICTIONS))[0]
    assert last["operation"] == "MERGE" and last["operationMetrics"]["num_target_rows_updated"] == 0


def test_an_empty_interval_scores_nothing(uc, settings, champion):
    write_features(uc, settings)
    before = predictions(settings, uc)

    result = score_batch(uc, settings, DAY + dt.timedelta(days=30), DAY + dt.timedelta(days=31), "r")

    assert result["rows"] == 0
    assert_frame_equal(predictions(settings, uc), before)


def test_a_new_champion_adds_its_own_rows(settings, tmp_path):
    settings = dataclasses.replace(settings, home=tmp_path)
    uc = fresh_usecase()
    first = models.register(uc, models.train(uc, seed=1))
    models.set_champion(uc, first)
    write_features(uc, settings)
    score_batch(uc, settings, DAY, DAY + dt.timedelta(days=1), "run-a")
    second = models.register(uc, models.train(uc, seed=2, kind="linear"))
    models.set_champion(uc, second)

    result = score_batch(uc, settings, DAY, DAY + dt.timedelta(days=1), "run-b")

    table = predictions(settings, uc)
    assert result["model_version"] == second
    assert table.groupby("model_version").size().to_dict() == {first: 20, second: 20}
    assert set(table.loc[table["model_version"] == first, "run_id"]) == {"run-a"}


def test_without_a_champion_it_fails_clearly(settings):
    uc = fresh_usecase()
    with pytest.raises(NoChampionError, match="has no 'champion' alias"):
        score_batch(uc, settings, DAY, DAY + dt.timedelta(days=1), "r")
