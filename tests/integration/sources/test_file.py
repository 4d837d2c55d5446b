"""`source.kind: file`: one CSV or Parquet file, a folder or a glob, read by interval."""

from __future__ import annotations

from datetime import date, datetime

import pandas as pd
import pytest

from esteira import tables
from esteira.features import sources
from esteira.features.refresh import NoLandingData, refresh_features
from esteira.features.validation import SchemaMismatch
from tests.integration.sources.conftest import months, panel_usecase

_COLUMNS = ["person_id", "period", "sector", "hours", "wage"]


def _read(uc, settings, start, end) -> pd.DataFrame:
    chunks = list(sources.events_source(uc, settings).read(start, end, _COLUMNS))
    return pd.concat([c.rows for c in chunks], ignore_index=True) if chunks else pd.DataFrame()


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_an_interval_read_returns_exactly_its_rows(settings, rows, suffix):
    path = settings.usecases_dir / f"panel.{suffix}"
    rows.to_csv(path, index=False) if suffix == "csv" else rows.to_parquet(path, index=False)
    uc = panel_usecase({"kind": "file", "path": path.name})  # relative to the use-case folder
    got = _read(uc, settings, datetime(2024, 3, 1), datetime(2024, 6, 1))
    got["person_id"] = got["person_id"].astype(int)  # strings from a CSV
    unparsable = got["period"] == "2024-13"  # in no interval: every read returns it
    expected = months(rows, "2024-03", "2024-06")
    assert sorted(got[~unparsable & (got["person_id"] < 90)]["period"].astype(str)) == sorted(expected["period"])
    assert unparsable.sum() == 1 and (got["person_id"] == 99).sum() == 1


def test_a_folder_and_a_glob_read_the_same_rows(settings, rows):
    folder = settings.usecases_dir / "parts"
    folder.mkdir()
    for year, part in rows.groupby(rows["period"].str[:4]):
        part.to_parquet(folder / f"panel_{year}.parquet", index=False)
    by_folder = _read(panel_usecase({"kind": "file", "path": str(folder)}), settings,
                      datetime(2024, 11, 1), datetime(2025, 2, 1))
    by_glob = _read(panel_usecase({"kind": "file", "path": str(folder / "panel_*.parquet")}), settings,
                    datetime(2024, 11, 1), datetime(2025, 2, 1))
    pd.testing.assert_frame_equal(by_folder, by_glob)
    assert set(by_folder["period"]) >= {"2024-11", "2024-12", "2025-01"}
    assert "2025-02" not in set(by_folder["period"])


def test_refresh_computes_strictly_past_features_and_a_rerun_changes_nothing(settings, rows):
    path = settings.usecases_dir / "panel.parquet"
    rows.to_parquet(path, index=False)
    uc = panel_usecase({"kind": "file", "path": str(path)})
    refresh_features(uc, settings, date(2024, 1, 1), date(2024, 7, 1), run_id="r1")
    first = refresh_features(uc, settings, date(2024, 7, 1), date(2025, 1, 1), run_id="r1")
    assert first.rows_written == 12 * 6 and first.labels_written == 12 * 6
    features_uri = tables.table_uri(settings, uc, tables.FEATURES)
    digests = {k: tables.content_hash(tables.table_uri(settings, uc, k), ["row_key"] if k == tables.QUARANTINE
                                      else ["person_id", "period"]) for k in (tables.FEATURES, tables.LABELS, tables.QUARANTINE)}
    again = refresh_features(uc, settings, date(2024, 7, 1), date(2025, 1, 1), run_id="r1")
    assert again.rows_written == first.rows_written
    for kind, digest in digests.items():
        keys = ["row_key"] if kind == tables.QUARANTINE else ["person_id", "period"]
        assert tables.content_hash(tables.table_uri(settings, uc, kind), keys) == digest, kind

    features = tables.read_table(features_uri).sort_values(["person_id", "period"]).reset_index(drop=True)
    one = features[features["person_id"] == 1].set_index("period")
    raw = rows[rows["person_id"] == 1].set_index(pd.to_datetime(rows.loc[rows["person_id"] == 1, "period"]))
    july = pd.Timestamp("2024-07-01")
    assert one.loc[july, "wage_prev"] == raw.loc[pd.Timestamp("2024-06-01"), "wage"]  # the history read
    expected = raw.loc[pd.Timestamp("2024-04-01"):pd.Timestamp("2024-06-01"), "hours"].mean()
    assert one.loc[july, "hours_3m_before"] == pytest.approx(expected)
    assert pd.isna(one.loc[pd.Timestamp("2024-01-01"), "wage_prev"])
    quarantine = tables.read_table(tables.table_uri(settings, uc, tables.QUARANTINE))
    assert {"hours: 500.0 above max 100", "period: not a timestamp at grain month ('2024-13')"} <= set(quarantine["reason"])


def test_a_month_without_rows_is_nothing_to_do(settings, rows):
    path = settings.usecases_dir / "panel.csv"
    rows[rows["person_id"] < 90].to_csv(path, index=False)
    uc = panel_usecase({"kind": "file", "path": str(path)})
    with pytest.raises(NoLandingData, match=r"file source .*panel.csv: no rows in \[2030-01-01"):
        refresh_features(uc, settings, date(2030, 1, 1), date(2030, 2, 1), run_id="r")


def test_bad_input_names_the_source_or_the_column(settings, rows):
    path = settings.usecases_dir / "panel.csv"
    rows.drop(columns=["hours"]).to_csv(path, index=False)
    uc = panel_usecase({"kind": "file", "path": str(path)})
    with pytest.raises(SchemaMismatch, match=r"panel.csv: columns missing: hours"):
        refresh_features(uc, settings, date(2024, 1, 1), date(2024, 2, 1), run_id="r")
    (settings.usecases_dir / "broken.parquet").write_bytes(b"not parquet at all")
    uc = panel_usecase({"kind": "file", "path": "broken.parquet"})
    with pytest.raises(sources.SourceError, match=r"broken.parquet: not a readable Parquet file"):
        refresh_features(uc, settings, date(2024, 1, 1), date(2024, 2, 1), run_id="r")
    uc = panel_usecase({"kind": "file", "path": "nothing_here_*.csv"})
    with pytest.raises(sources.SourceError, match=r"\(source.path\): no such file"):
        refresh_features(uc, settings, date(2024, 1, 1), date(2024, 2, 1), run_id="r")
