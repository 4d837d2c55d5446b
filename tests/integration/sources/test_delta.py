"""`source.kind: delta`: a Delta table read by interval at one pinned version, recorded."""

from __future__ import annotations

import dataclasses
from datetime import date, datetime

import pandas as pd
import pyarrow as pa
import pytest

from esteira import tables
from esteira.features import sources
from esteira.features.refresh import refresh_features
from esteira.features.training_set import build_training_set
from esteira.training.runs import lineage_tags
from tests.integration.sources.conftest import months, panel_usecase


@pytest.fixture
def upstream(settings, rows) -> str:
    """The panel as an upstream Delta table, ``period`` a real timestamp column."""
    uri = str(settings.home / "upstream" / "panel")
    good = rows[rows["period"] != "2024-13"].assign(period=lambda f: pd.to_datetime(f["period"]))
    tables.append(uri, pa.Table.from_pandas(good, preserve_index=False))
    return uri


def test_an_interval_read_returns_exactly_its_rows_at_the_pinned_version(settings, rows, upstream):
    uc = panel_usecase({"kind": "delta", "path": upstream})
    source = sources.events_source(uc, settings)
    tables.append(upstream, pa.Table.from_pandas(pd.DataFrame({
        "person_id": [1], "period": [pd.Timestamp("2024-03-01")], "sector": ["a"], "hours": [1.0], "wage": [1.0],
    }), preserve_index=False))  # a later commit the pinned source does not see
    got = pd.concat(c.rows for c in source.read(datetime(2024, 3, 1), datetime(2024, 5, 1), list(rows.columns)))
    expected = months(rows, "2024-03", "2024-05")
    assert len(got[got["person_id"] < 90]) == len(expected)
    assert got["period"].min() == pd.Timestamp("2024-03-01") and got["period"].max() == pd.Timestamp("2024-04-01")
    assert source.version() == 0


def test_refresh_records_the_source_version_and_a_rerun_changes_nothing(settings, upstream):
    uc = panel_usecase({"kind": "delta", "path": upstream})
    first = refresh_features(uc, settings, date(2024, 1, 1), date(2024, 6, 1), run_id="r")
    assert first.source_version == 0 and first.source == f"delta source {upstream}"
    assert first.rows_written == 60 and first.rows_quarantined == 1  # hours 500
    uri = tables.table_uri(settings, uc, tables.FEATURES)
    digest = tables.content_hash(uri, ["person_id", "period"])
    refresh_features(uc, settings, date(2024, 1, 1), date(2024, 6, 1), run_id="r")
    assert tables.content_hash(uri, ["person_id", "period"]) == digest
    quarantine = tables.read_table(tables.table_uri(settings, uc, tables.QUARANTINE))
    assert len(quarantine) == 1 and quarantine["row_key"].iloc[0].startswith("panel@v0:")
    # the training set's lineage names the source version its feature rows were read at
    _, lineage = build_training_set(uc, settings, datetime(2024, 1, 1), datetime(2024, 6, 1))
    assert (lineage.source, lineage.source_version) == (first.source, 0)
    assert lineage_tags(dataclasses.asdict(lineage))["lineage.source_version"] == "0"


def test_a_path_without_a_table_names_the_key(settings):
    uc = panel_usecase({"kind": "delta", "path": str(settings.home / "nothing")})
    with pytest.raises(sources.SourceError, match=r"delta source .*nothing \(source.path\): no Delta table"):
        refresh_features(uc, settings, date(2024, 1, 1), date(2024, 2, 1), run_id="r")
