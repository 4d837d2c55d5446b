"""Materialization into the real online stores (SQLite and Redis) after a refresh:
what it writes, idempotent reruns, incremental new days, the latest row, the freshness rule."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pandas as pd
import pytest

from esteira import tables
from esteira.features.online import check_skew, entity_key, is_stale, materialize, open_store
from esteira.stages.window import RunWindow
from tests.helpers import TEST_START

from .conftest import refresh_and_publish

pytestmark = pytest.mark.integration

_DAY = dt.timedelta(days=1)
_FIRST = RunWindow(TEST_START, TEST_START + 10 * _DAY)
_NEXT_DAY = RunWindow(_FIRST.end, _FIRST.end + _DAY)


def _features(churn, settings) -> pd.DataFrame:
    return tables.read_table(tables.table_uri(settings, churn, tables.FEATURES))


def test_a_refresh_materializes_each_entitys_latest_row(churn, settings):
    reference = refresh_and_publish(churn, _FIRST, run_id="first")
    online = reference["online"]
    table = _features(churn, settings)
    latest = table.sort_values(churn.timestamp).drop_duplicates(churn.entity, keep="last")
    assert online["version"] == reference["version"]
    assert online["entities"] == online["written"] == len(latest) == table[churn.entity].nunique()
    assert online["deleted"] == 0
    assert online["skew_checked"] == min(100, len(latest)) and online["skew_mismatched"] == 0

    store = open_store(settings, churn)
    keys = [entity_key(churn, k) for k in latest[churn.entity]]
    entries = store.get_many(keys)
    assert store.materialized_version() == reference["version"]
    for (_, row), entry in zip(latest.iterrows(), entries, strict=True):
        assert entry.feature_ts == row[churn.timestamp].to_pydatetime()
        assert entry.version == reference["version"]
        for name in churn.feature_names:
            expected = row[name]
            if pd.isna(expected):
                assert entry.features[name] is None
            else:
                assert entry.features[name] == expected, name


def test_rerunning_a_refresh_writes_nothing_to_the_online_store(churn, settings):
    first = refresh_and_publish(churn, _FIRST, run_id="first")
    store = open_store(settings, churn)
    before = store.get_many(list(store.digests()))
    again = refresh_and_publish(churn, _FIRST, run_id="again")
    assert again["version"] > first["version"]
    assert again["online"] == {**first["online"], "version": again["version"], "written": 0}
    assert store.get_many([e.key for e in before]) == before  # rows and their versions kept
    assert store.materialized_version() == again["version"]


def test_a_new_day_rewrites_only_the_entities_whose_latest_row_changed(churn, settings):
    refresh_and_publish(churn, _FIRST, run_id="first")
    store = open_store(settings, churn)
    before = {e.key: e for e in store.get_many(list(store.digests()))}
    reference = refresh_and_publish(churn, _NEXT_DAY, run_id="next")
    table = _features(churn, settings)
    new_day = table[table[churn.timestamp] >= pd.Timestamp(_NEXT_DAY.start_at)]
    changed = {entity_key(churn, k) for k in new_day[churn.entity]}
    assert 0 < reference["online"]["written"] == len(changed) < len(before)

    after = {e.key: e for e in store.get_many(list(store.digests()))}
    for key, entry in after.items():
        if key in changed:
            assert entry.version == reference["version"]
            assert entry.feature_ts >= _NEXT_DAY.start_at
        else:
            assert entry == before[key]


def test_an_entity_gone_from_the_table_is_deleted(churn, settings):
    refresh_and_publish(churn, _FIRST, run_id="first")
    store = open_store(settings, churn)
    uri = tables.table_uri(settings, churn, tables.FEATURES)
    gone = int(_features(churn, settings)[churn.entity].iloc[0])
    version = tables.replace_where(uri, _features(churn, settings).iloc[:0],
                                   f"{churn.entity} = {gone}", _schema(churn), _info(churn))
    result = materialize(churn, settings, version)
    assert (result.written, result.deleted) == (0, 1)
    assert store.get_many([entity_key(churn, gone)]) == [None]


def test_the_freshness_rule_of_online_max_age(churn, settings):
    refresh_and_publish(churn, _FIRST, run_id="first")
    store = open_store(settings, churn)
    entry = store.get_many(sorted(store.digests())[:1])[0]
    assert not is_stale(churn, entry.feature_ts, entry.feature_ts + 2 * _DAY)  # max_age 2d
    assert is_stale(churn, entry.feature_ts, entry.feature_ts + 2 * _DAY + dt.timedelta(seconds=1))
    never = churn.model_copy(update={"online": churn.online.model_copy(update={"max_age": None})})
    assert not is_stale(never, entry.feature_ts, entry.feature_ts + 365 * _DAY)


def _schema(churn):
    from esteira.features.refresh import feature_schema

    return feature_schema(churn)


def _info(churn):
    from esteira.features.refresh import _infos

    return _infos(churn)[tables.FEATURES]


def test_the_skew_check_counts_entries_that_differ_from_the_table(churn, settings):
    refresh_and_publish(churn, _FIRST, run_id="first")
    store = open_store(settings, churn)
    clean = check_skew(churn, settings)
    assert clean.checked == len(store.digests()) and clean.mismatched == []

    entry = store.get_many(sorted(store.digests())[:1])[0]
    tampered = dataclasses.replace(entry, features={**entry.features, "monthly_charges": -1.0})
    store.write([tampered], [], store.materialized_version())  # its digest unchanged
    assert check_skew(churn, settings).mismatched == [entry.key]
    unrepaired = materialize(churn, settings, skew_sample=1000)  # its digest says it is current
    assert (unrepaired.written, unrepaired.skew_mismatched) == (0, 1)
    store.write([], [entry.key], store.materialized_version())
    assert check_skew(churn, settings).mismatched == [entry.key]  # missing
    repaired = materialize(churn, settings, skew_sample=1000)
    assert (repaired.written, repaired.skew_mismatched) == (1, 0)
    assert check_skew(churn, settings).mismatched == []


def test_monitoring_records_how_many_online_entries_differ_from_the_table(mlflow_server, churn, settings):
    from mlflow import MlflowClient

    from esteira.monitoring.drift import compute_drift
    from esteira.monitoring.monitor import run_monitoring
    from esteira.monitoring.results import read_history
    from esteira.stages.drift_monitoring import online_skew
    from tests.unit.monitoring.frames import churn_frame, churn_usecase

    assert online_skew(churn, settings) is None  # nothing materialized yet: recorded as null
    refresh_and_publish(churn, _FIRST, run_id="first")
    store = open_store(settings, churn)
    entry = store.get_many(sorted(store.digests())[:1])[0]
    store.write([dataclasses.replace(entry, features={**entry.features, "plan": "gold"})], [],
                store.materialized_version())

    skew = online_skew(churn, settings)
    assert skew.mismatched == [entry.key] and skew.checked == len(store.digests())
    judged = churn_usecase(sample_size=500)
    start = dt.datetime(2026, 3, 20)
    outcome = run_monitoring(judged, settings, compute_drift(churn_frame(800, seed=1), churn_frame(600, seed=2), judged),
                             start, start + _DAY, "1", {"test_roc_auc": 0.8}, None, "skew", skew=skew)
    row = read_history(settings, judged).iloc[-1]
    assert (row["online_skew_checked"], row["online_skew_mismatched"]) == (skew.checked, 1)
    assert MlflowClient(mlflow_server).get_run(outcome.report.run_id).data.metrics["online_skew_mismatched"] == 1.0


def test_a_row_stamped_after_now_is_not_served_before_its_time(churn, settings):
    refresh_and_publish(churn, _FIRST, run_id="first")
    store = open_store(settings, churn)
    key = sorted(store.digests())[0]
    current = store.get_many([key])[0]
    uri = tables.table_uri(settings, churn, tables.FEATURES)
    row = _features(churn, settings).query(f"{churn.entity} == {int(key)}").tail(1)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    future = row.assign(**{churn.timestamp: now + _DAY, "monthly_charges": 99.5})
    tables.merge(uri, future, [churn.entity, churn.timestamp], _schema(churn), _info(churn))

    assert materialize(churn, settings, now=now).written == 0  # the lookup now: the same row
    assert store.get_many([key])[0] == current and check_skew(churn, settings).mismatched == []
    later = materialize(churn, settings, now=now + 2 * _DAY)  # a later refresh: its time came
    assert later.written == 1 and store.get_many([key])[0].features["monthly_charges"] == 99.5
    assert check_skew(churn, settings).mismatched == []
