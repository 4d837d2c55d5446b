"""The refresh on real Delta tables: idempotent merges, quarantine, the bad-share limit,
point-in-time training sets and the catalog."""

from __future__ import annotations

import csv
import dataclasses
from datetime import date, datetime

import pytest

from esteira import tables
from esteira.config import load_usecase
from esteira.features.catalog import describe_table, list_tables
from esteira.features.generator import generate_landing
from esteira.features.refresh import NoLandingData, TooManyBadRows, refresh_features
from esteira.features.training_set import build_training_set
from esteira.usecase import UseCase
from tests.helpers import shrink

pytestmark = pytest.mark.integration

_KEY = ["customer_id", "event_ts"]
_JAN, _FEB = date(2026, 1, 1), date(2026, 2, 1)


def _snapshot(uri: str, keys: list[str]) -> tuple[int, str]:
    return tables.row_count(uri), tables.content_hash(uri, keys)


def test_rerunning_an_interval_leaves_the_tables_identical(churn, settings):
    first = refresh_features(churn, settings, _JAN, _FEB, run_id="run-1")
    features = _snapshot(first.table_uri, _KEY)
    labels = _snapshot(first.labels_uri, _KEY)
    quarantine = _snapshot(first.quarantine_uri, ["row_key"])

    again = refresh_features(churn, settings, _JAN, _FEB, run_id="run-2")
    assert again.version > first.version  # a new commit...
    assert _snapshot(again.table_uri, _KEY) == features  # ...with the same content
    assert _snapshot(again.labels_uri, _KEY) == labels
    assert tables.row_count(again.quarantine_uri) == quarantine[0]
    assert features[0] == first.rows_written == first.raw_rows - first.rows_quarantined


def test_split_intervals_and_small_batches_compute_the_same_features(churn, settings):
    whole = refresh_features(churn, settings, _JAN, _FEB, run_id="whole")
    expected = _snapshot(whole.table_uri, _KEY)
    other_settings = dataclasses.replace(settings, home=settings.home / "other")
    other_settings.landing_dir.parent.mkdir(parents=True, exist_ok=True)
    other_settings.landing_dir.symlink_to(settings.landing_dir)
    for start, end in ((_JAN, date(2026, 1, 12)), (date(2026, 1, 12), _FEB)):
        refresh_features(churn, other_settings, start, end, run_id="part", batch_rows=500)
    assert _snapshot(other_settings.table_uri(churn.name, churn.features.table), _KEY) == expected


def _inject(path, rows: list[dict]) -> None:
    with path.open("a", newline="") as handle:
        csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n").writerows(rows)


def test_bad_rows_land_in_quarantine_with_their_reasons(settings):
    uc = shrink(load_usecase(settings.usecases_dir / "churn.yaml"), entities=100, days=10, bad_row_share=0.0)
    generate_landing(uc, settings.landing_dir / uc.source.landing)
    day_file = settings.landing_dir / "churn" / "events_2026-01-03.csv"
    good = dict(next(csv.DictReader(day_file.open())), customer_id="777")
    _inject(day_file, [
        dict(good, event_ts="2026-01-03T23:59:01", monthly_charges="n/a"),
        dict(good, event_ts="2026-01-03T23:59:02", customer_id=""),
        dict(good, event_ts="2026-01-03T23:59:03", payment_delay_days="400"),
        dict(good, event_ts="2026-01-03T23:59:04", plan="platinum"),
        dict(good, event_ts="2026-01-03T23:59:05"),
    ])

    result = refresh_features(uc, settings, date(2026, 1, 1), date(2026, 1, 6), run_id="r1")

    quarantine = tables.read_table(result.quarantine_uri).sort_values("line")
    assert quarantine["reason"].tolist() == [
        "monthly_charges: not a number ('n/a')",
        "customer_id: missing value (not nullable)",
        "payment_delay_days: 400 above max 120",
        "plan: unknown category 'platinum' (allowed: basic, standard, premium)",
    ]
    assert set(quarantine["source_file"]) == {"events_2026-01-03.csv"}
    assert set(quarantine["run_id"]) == {"r1"}
    assert quarantine["monthly_charges"].tolist()[0] == "n/a"
    features = tables.read_table(result.table_uri)
    assert (features["customer_id"] == 777).sum() == 1  # the good injected row
    assert result.rows_quarantined == 4
    assert result.raw_rows == result.rows_written + result.rows_quarantined
    assert len(features) == result.rows_written

    rerun = refresh_features(uc, settings, date(2026, 1, 1), date(2026, 1, 6), run_id="r2")
    quarantine = tables.read_table(rerun.quarantine_uri)
    assert len(quarantine) == 4 and set(quarantine["run_id"]) == {"r2"}


def test_too_many_bad_rows_fail_the_run_naming_share_and_limit(settings):
    uc = shrink(load_usecase(settings.usecases_dir / "churn.yaml"), entities=100, days=3, bad_row_share=0.2)
    generate_landing(uc, settings.landing_dir / uc.source.landing)
    with pytest.raises(TooManyBadRows, match=r"events_2026-01-01\.csv: \d+ of \d+ rows are bad \(\d+\.\d%\), "
                       r"above the limit schema\.max_bad_share=5\.0%") as failure:
        refresh_features(uc, settings, date(2026, 1, 1), date(2026, 1, 3), run_id="r")
    assert failure.value.share > 0.05
    quarantine = settings.table_uri("churn", "churn_features_quarantine")
    assert tables.row_count(quarantine) > 0  # the evidence is kept


def test_a_missing_events_file_fails_before_writing(churn, settings):
    (settings.landing_dir / "churn" / "events_2026-01-05.csv").unlink()
    with pytest.raises(FileNotFoundError, match="events_2026-01-05.csv"):
        refresh_features(churn, settings, _JAN, _FEB, run_id="r")
    assert tables.current_version(settings.table_uri("churn", "churn_features")) is None


def test_an_interval_nothing_was_delivered_for_says_so(churn, settings):
    """A scheduled run before the upstream delivered: NoLandingData, which the job turns
    into a skipped task rather than a failure."""
    from esteira.compute.job import StepJob
    from esteira.jobs import feature_refresh
    from esteira.results import NothingToDo

    with pytest.raises(NoLandingData, match=r"no raw events delivered for \[2026-06-01"):
        refresh_features(churn, settings, date(2026, 6, 1), date(2026, 6, 2), run_id="r")
    job = StepJob("feature_refresh", str(settings.usecases_dir / "churn.yaml"), {
        "params": {"interval_start": "2026-06-01", "interval_end": "2026-06-02"},
        "airflow": {"run_id": "r"},
    })
    nothing = feature_refresh.run(job)
    assert isinstance(nothing, NothingToDo)
    assert nothing.reason.startswith("no raw events delivered for [2026-06-01")


def test_training_sets_are_point_in_time_and_record_the_versions(churn, settings):
    first = refresh_features(churn, settings, _JAN, date(2026, 1, 25), run_id="r1")
    second = refresh_features(churn, settings, date(2026, 1, 25), date(2026, 2, 10), run_id="r2")
    frame, ref = build_training_set(churn, settings, datetime(2026, 1, 1), datetime(2026, 1, 27))
    assert ref.version == second.version and ref.labels_version == second.labels_version
    assert ref.rows == len(frame) > 0
    assert list(frame.columns) == [*_KEY, "feature_timestamp", *churn.feature_names, "churned"]
    assert (frame["feature_timestamp"] <= frame["event_ts"]).all()
    assert frame["event_ts"].between(datetime(2026, 1, 1), datetime(2026, 1, 27), inclusive="left").all()
    assert set(frame["churned"]) == {0, 1}

    pinned, pinned_ref = build_training_set(
        churn, settings, datetime(2026, 1, 1), datetime(2026, 1, 27),
        version=first.version, labels_version=first.labels_version,
    )
    assert (pinned_ref.version, pinned_ref.labels_version) == (first.version, first.labels_version)
    # the older version knows no event after 24 January: later labels get older rows
    assert pinned["feature_timestamp"].max() < datetime(2026, 1, 25) <= frame["feature_timestamp"].max()
    assert len(pinned) <= len(frame)


def test_the_catalog_lists_and_describes_tables(churn, settings):
    refresh_features(churn, settings, _JAN, date(2026, 1, 8), run_id="r")
    names = [t["name"] for t in list_tables(settings)]
    assert names == ["churn_features", "churn_features_labels", "churn_features_quarantine"]
    described = describe_table(settings, "churn_features")
    assert described["owner"] == churn.features.owner and described["keys"] == _KEY
    assert described["description"] == churn.features.description
    columns = {c["name"]: c for c in described["columns"]}
    assert columns["minutes_7d_mean"]["description"] == "Mean session minutes over the last 7 days"
    assert columns["minutes_7d_mean"]["window"] == "7d" and columns["plan"]["type"] == "category"
    with pytest.raises(LookupError, match="churn/churn_features"):
        describe_table(settings, "no_such_table")


def test_the_demand_use_case_refreshes_into_a_regression_training_set(demand: UseCase, settings):
    result = refresh_features(demand, settings, date(2026, 1, 1), date(2026, 1, 31), run_id="r")
    assert result.raw_rows == 30 * 30 == result.rows_written + result.rows_quarantined
    frame, ref = build_training_set(demand, settings, datetime(2026, 1, 1), datetime(2026, 1, 31))
    assert ref.rows == len(frame) > 0.9 * 29 * 30
    assert frame["units_sold"].dtype == "float64" and frame["units_sold"].gt(0).all()
    assert frame["records_7d_count"].between(1, 7).all()
