"""A corrected re-delivery on real Delta tables: the upstream sends a day's events file and
a labels file again with rows removed, values changed and other bad rows. The refresh
replaces exactly the rows that came from those files, in features, labels and quarantine;
the tables then hold what a first delivery of the corrected files gives, and a further rerun
changes no row (content hashes)."""

from __future__ import annotations

import csv
import dataclasses
from datetime import date, datetime

import pandas as pd
import pytest

from esteira import tables
from esteira.features.refresh import refresh_features

pytestmark = pytest.mark.integration

_KEY = ["customer_id", "event_ts"]
_START, _END = date(2026, 1, 1), date(2026, 1, 21)
_EVENTS = "events_2026-01-05.csv"
_LABELS = "labels_2026-01-18.csv"  # the labels of events of 2026-01-04 (14 days' delay)


def _rows(path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _write(path, rows: list[dict]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _bad(row: dict, second: int) -> dict:
    return dict(row, customer_id="9999", event_ts=f"2026-01-05T23:59:{second:02d}", monthly_charges="n/a")


def _hashes(result) -> dict[str, str]:
    """Content hashes of the three tables; quarantine without ``run_id`` (which says
    which run quarantined a row, so it differs between runs by design)."""
    quarantine = tables.read_table(result.quarantine_uri).drop(columns="run_id")
    quarantine = quarantine.sort_values("row_key").reset_index(drop=True)
    return {
        "features": tables.content_hash(result.table_uri, _KEY),
        "labels": tables.content_hash(result.labels_uri, _KEY),
        "quarantine": str(pd.util.hash_pandas_object(quarantine, index=False).sum()),
    }


def _key(row: dict) -> tuple[int, datetime]:
    return int(row["customer_id"]), datetime.fromisoformat(row["event_ts"]).replace(tzinfo=None)


def _by_key(frame: pd.DataFrame, column: str) -> dict:
    stamps = [stamp.to_pydatetime() for stamp in frame["event_ts"]]
    return dict(zip(zip(frame["customer_id"], stamps, strict=True), frame[column], strict=True))


def _keys(frame: pd.DataFrame) -> set:
    return set(_by_key(frame, "event_ts"))


def test_a_corrected_delivery_replaces_the_rows_of_its_files(churn, settings):
    folder = settings.landing_dir / churn.source.landing
    events, labels = _rows(folder / _EVENTS), _rows(folder / _LABELS)
    _write(folder / _EVENTS, [*events, _bad(events[0], 1)])
    first = refresh_features(churn, settings, _START, _END, run_id="first")
    quarantine = tables.read_table(first.quarantine_uri)
    assert "events_2026-01-05.csv:" + str(len(events) + 2) in set(quarantine["row_key"])

    # Rows the first delivery had as good ones: 5 removed, 5 changed, the rest kept.
    good = _keys(tables.read_table(first.table_uri))
    assert len(good) == first.rows_written
    removed, changed = [r for r in events if _key(r) in good][:5], [r for r in events if _key(r) in good][5:10]
    kept = [r for r in events if r not in removed and r not in changed]
    changed = [dict(row, monthly_charges="123.25") for row in changed]
    _write(folder / _EVENTS, [*changed, *kept, _bad(events[0], 2)])
    known = _keys(tables.read_table(first.labels_uri))
    gone, flipped = [r for r in labels if _key(r) in known][:3], [r for r in labels if _key(r) in known][3:6]
    flipped = [dict(row, churned=str(1 - int(row["churned"]))) for row in flipped]
    _write(folder / _LABELS, [*flipped, *[r for r in labels if r not in gone and _key(r) not in
                                          {_key(f) for f in flipped}]])

    # The corrected day alone: its features and quarantined rows are replaced at once.
    day = refresh_features(churn, settings, date(2026, 1, 5), date(2026, 1, 6), run_id="day")
    features = tables.read_interval(day.table_uri, "event_ts", datetime(2026, 1, 5), datetime(2026, 1, 6))
    before = tables.read_interval(first.table_uri, "event_ts", datetime(2026, 1, 5), datetime(2026, 1, 6),
                                  version=first.version)
    assert _keys(features) == _keys(before) - {_key(row) for row in removed}
    charges = _by_key(features, "monthly_charges")
    assert [charges[_key(row)] for row in changed] == [123.25] * 5
    bad_rows = tables.read_table(day.quarantine_uri)
    of_day = bad_rows[bad_rows["source_file"] == _EVENTS]
    assert list(of_day["event_ts"]) == ["2026-01-05T23:59:02"]  # the old bad row is gone
    others = quarantine[quarantine["source_file"] != _EVENTS]
    assert set(bad_rows[bad_rows["source_file"] != _EVENTS]["row_key"]) == set(others["row_key"])

    corrected = refresh_features(churn, settings, _START, _END, run_id="corrected")
    labels_now = tables.read_table(corrected.labels_uri)
    assert len(gone) == 3 and not _keys(labels_now) & {_key(row) for row in gone}
    churned = _by_key(labels_now, "churned")
    assert [churned[_key(row)] for row in flipped] == [int(row["churned"]) for row in flipped]

    # As if the corrected files had been the first delivery.
    fresh_settings = dataclasses.replace(settings, home=settings.home / "fresh")
    fresh_settings.landing_dir.parent.mkdir(parents=True, exist_ok=True)
    fresh_settings.landing_dir.symlink_to(settings.landing_dir)
    fresh = refresh_features(churn, fresh_settings, _START, _END, run_id="fresh")
    assert _hashes(corrected) == _hashes(fresh)
    assert (corrected.rows_written, corrected.labels_written) == (fresh.rows_written, fresh.labels_written)

    # Unchanged files again: every table keeps its content.
    again = refresh_features(churn, settings, _START, _END, run_id="again")
    assert _hashes(again) == _hashes(corrected)
    assert again.version > corrected.version  # a new commit with the same rows
