"""The table seam on real Delta tables: a process that reads every kind of table the way
the product does exits 0, intervals are half-open, failures say which table, a partition
is replaced in one commit, and merges are idempotent."""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from esteira import tables
from esteira.config import get_settings, load_usecase
from esteira.features.generator import generate_landing
from esteira.features.refresh import refresh_features
from esteira.monitoring.results import SCHEMA, write_result
from tests.helpers import shrink

pytestmark = pytest.mark.integration

_ROOT = Path(__file__).resolve().parents[2]
_CHURN = _ROOT / "include" / "usecases" / "churn.yaml"
_JAN, _FEB = dt.datetime(2026, 1, 1), dt.datetime(2026, 2, 1)

# Makes the read path that aborts at exit fail loudly instead: deltalake's pyarrow scan
# reads through this Python filesystem handler (see esteira.tables). os._exit would hide an
# abort, so it is refused too.
_GUARD = """
import os, sys
import deltalake.fs

class _Refused:
    @staticmethod
    def from_table(*args, **kwargs):
        raise RuntimeError("read through deltalake's Python filesystem, the scan that aborts at exit")

def _no_exit(code):
    raise RuntimeError("os._exit would hide an abort at exit")

deltalake.fs.DeltaStorageHandler = _Refused
os._exit = _no_exit
"""

# Every kind of read the product does, through the product's own functions.
_PRODUCT_READS = _GUARD + """
import datetime as dt, json
from esteira import tables
from esteira.config import get_settings, load_usecase
from esteira.features.catalog import list_tables
from esteira.features.training_set import build_training_set
from esteira.monitoring.results import read_history
from esteira.monitoring.sampling import sample_table

uc, settings = load_usecase(sys.argv[1]), get_settings()
uri = {kind: tables.table_uri(settings, uc, kind) for kind in
       (tables.FEATURES, tables.LABELS, tables.QUARANTINE, tables.PREDICTIONS, tables.MONITORING)}
start, end = dt.datetime(2026, 1, 20), dt.datetime(2026, 1, 27)
frame, _ = build_training_set(uc, settings, dt.datetime(2026, 1, 1), end)
stream = tables.iter_batches(sys.argv[2], batch_size=1000)
read = {
    "window": len(tables.read_interval(uri["features"], uc.timestamp, start, end, uc.feature_names)),
    "training_set": len(frame),
    "newest_label": str(tables.newest_value(uri["labels"], uc.timestamp)),
    "newest_feature": str(tables.newest_value(uri["features"], uc.timestamp)),
    "predictions": len(tables.read_interval(uri["predictions"], uc.timestamp, start, end)),
    "monitoring": len(read_history(settings, uc)),
    "quarantine": len(tables.read_table(uri["quarantine"])),
    "catalog": len(list_tables(settings)),
    "hash": tables.content_hash(uri["features"], [uc.entity, uc.timestamp]),
    "sample": sample_table(sys.argv[2], 500, 1, columns=["x"], stratify_by="plan").sampled_rows,
    "first_batch": next(stream).num_rows,
}
print(json.dumps(read))
"""


def _large_table(uri: str, rows: int = 200_000, files: int = 4) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "id": np.arange(rows) % 1000,
        "ts": pd.date_range("2026-01-01", periods=rows, freq="min").astype("datetime64[us]"),
        "x": rng.random(rows),
        "plan": rng.choice(["basic", "premium"], rows),
    })
    for part in np.array_split(np.arange(rows), files):
        tables.append(uri, frame.iloc[part])


def _monitoring_row(day: int) -> dict:
    return {name: None for name in SCHEMA.names} | {
        "window_start": dt.datetime(2026, 1, day), "window_end": dt.datetime(2026, 1, day + 1),
        "model_name": "churn", "model_version": "1", "drift_share": 0.1, "breach": False,
        "retrain": False,
    }


@pytest.fixture
def belt_tables(esteira_home):
    """The five tables of a use case, written by the product's writers, and a large one."""
    settings = get_settings()
    uc = shrink(load_usecase(_CHURN), entities=150, days=40)
    generate_landing(uc, settings.landing_dir / uc.source.landing)
    refresh_features(uc, settings, _JAN.date(), _FEB.date(), run_id="r")
    features = tables.read_table(tables.table_uri(settings, uc, tables.FEATURES))
    scored = features[[uc.entity, uc.timestamp]].assign(
        prediction=1.0, probability=0.5, model_name=uc.model_name, model_version="1",
        run_id="r", scored_at=pd.Timestamp("2026-02-01").as_unit("us"),
    )
    tables.append(tables.table_uri(settings, uc, tables.PREDICTIONS), scored)
    for day in (20, 21):
        write_result(settings, uc, _monitoring_row(day))
    large = str(esteira_home / "large")
    _large_table(large)
    return settings, uc, large


def test_a_process_reading_every_kind_of_table_exits_cleanly(belt_tables):
    _, _, large = belt_tables
    for _ in range(3):  # the abort this guards against was intermittent
        done = subprocess.run(
            [sys.executable, "-c", _PRODUCT_READS, str(_CHURN), large],
            capture_output=True, text=True, timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        read = json.loads(done.stdout.strip().splitlines()[-1])
        assert read["window"] > 0 and read["training_set"] > 0 and read["predictions"] > 0
        assert (read["monitoring"], read["catalog"], read["first_batch"]) == (2, 5, 1000)
        assert read["sample"] == 500 and read["quarantine"] > 0


def test_the_guard_catches_the_scan_that_aborts_at_exit(belt_tables):
    """A caller that went back to deltalake's own scan fails the test above."""
    _, _, large = belt_tables
    scan = _GUARD + "from deltalake import DeltaTable\nprint(len(DeltaTable(sys.argv[1]).to_pandas()))"
    done = subprocess.run([sys.executable, "-c", scan, large], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "Python filesystem" in done.stderr


@pytest.fixture
def stamped(tmp_path) -> str:
    uri = str(tmp_path / "stamped")
    stamps = pd.to_datetime(["2026-01-01 23:59:59.999999", "2026-01-02", "2026-01-02 12:00",
                             "2026-01-03", "2026-01-03 00:00:00.000001"], format="ISO8601").astype("datetime64[us]")
    tables.append(uri, pd.DataFrame({"k": range(5), "ts": stamps}))
    return uri


def test_an_interval_holds_its_start_and_not_its_end(stamped):
    rows = tables.read_interval(stamped, "ts", dt.datetime(2026, 1, 2), dt.datetime(2026, 1, 3))
    assert rows["k"].tolist() == [1, 2]
    utc_minus_3 = dt.timezone(dt.timedelta(hours=-3))
    shifted = tables.read_interval(
        stamped, "ts", dt.datetime(2026, 1, 1, 21, tzinfo=utc_minus_3), dt.datetime(2026, 1, 3)
    )
    assert shifted["k"].tolist() == [1, 2]  # aware bounds compare in UTC, as the table stores
    assert tables.read_interval(stamped, "ts", dt.datetime(2027, 1, 1), dt.datetime(2027, 1, 2)).empty


def test_a_missing_table_reads_as_empty_with_the_columns_asked_for(tmp_path):
    rows = tables.read_interval(str(tmp_path / "nothing"), "ts", _JAN, _FEB, ["k", "ts"])
    assert rows.empty and list(rows.columns) == ["k", "ts"]
    assert tables.current_version(str(tmp_path / "nothing")) is None
    assert tables.newest_value(str(tmp_path / "nothing"), "ts") is None
    with pytest.raises(tables.TableNotFound, match="nothing"):
        tables.read_table(str(tmp_path / "nothing"))


def test_a_missing_data_file_is_a_read_error_naming_the_table(stamped):
    next(Path(stamped).glob("*.parquet")).unlink()
    with pytest.raises(tables.TableReadError, match=re.escape(f"{stamped}: FileNotFoundError")):
        tables.read_interval(stamped, "ts", _JAN, _FEB)


def test_a_corrupt_log_is_a_read_error_naming_the_table(stamped):
    (Path(stamped) / "_delta_log" / "00000000000000000000.json").write_text("{not json\n")
    with pytest.raises(tables.TableReadError, match=re.escape(f"cannot read the Delta table at {stamped}")):
        tables.read_interval(stamped, "ts", _JAN, _FEB)


_DAY_SCHEMA = pa.schema([("k", pa.int64()), ("day", pa.timestamp("us")), ("v", pa.float64())])
_DAY_INFO = tables.TableInfo(name="days", description="rows by day", keys=["k", "day"], kind="test")


def _day(day: int, values: dict[int, float]) -> pd.DataFrame:
    return pd.DataFrame({"k": list(values), "day": dt.datetime(2026, 1, day), "v": list(values.values())})


def _of_day(day: int) -> str:
    return f"day = '2026-01-{day:02d} 00:00:00'"


def test_replace_where_swaps_a_partition_in_one_commit(tmp_path):
    uri = str(tmp_path / "days")
    for day in (1, 2):
        tables.replace_where(uri, _day(day, {1: 1.0, 2: 2.0, 3: 3.0}), _of_day(day), _DAY_SCHEMA, _DAY_INFO)
    before = tables.current_version(uri)

    version = tables.replace_where(uri, _day(1, {1: 9.0, 4: 4.0}), _of_day(1), _DAY_SCHEMA, _DAY_INFO)

    assert version == before + 1
    assert tables.history(uri)[0]["operationParameters"]["mode"] == "Overwrite"
    rows = tables.read_table(uri).sort_values(["day", "k"])
    assert rows.loc[rows["day"] == dt.datetime(2026, 1, 1), ["k", "v"]].values.tolist() == [[1, 9.0], [4, 4.0]]
    assert rows.loc[rows["day"] == dt.datetime(2026, 1, 2), "k"].tolist() == [1, 2, 3]
    digest = tables.content_hash(uri, ["day", "k"])
    tables.replace_where(uri, _day(1, {1: 9.0, 4: 4.0}), _of_day(1), _DAY_SCHEMA, _DAY_INFO)
    assert tables.content_hash(uri, ["day", "k"]) == digest
    assert tables.table_info(uri)["keys"] == ["k", "day"]


def test_merge_is_idempotent_and_update_when_keeps_unchanged_rows(tmp_path):
    uri = str(tmp_path / "merged")
    first = _day(1, {1: 1.0, 2: 2.0}).assign(run=["a", "a"])
    schema = pa.schema([*_DAY_SCHEMA, ("run", pa.string())])
    tables.merge(uri, first, ["k", "day"], schema, _DAY_INFO)
    rerun = _day(1, {1: 1.0, 2: 5.0}).assign(run=["b", "b"])

    metrics = tables.merge(uri, rerun, ["k", "day"], schema, None, update_when="t.v IS DISTINCT FROM s.v")

    assert metrics["version"] == tables.current_version(uri)
    rows = tables.read_table(uri).sort_values("k")
    assert rows[["k", "v", "run"]].values.tolist() == [[1, 1.0, "a"], [2, 5.0, "b"]]
    tables.merge(uri, rerun, ["k", "day"], schema, None, prune_on="day")
    digest = tables.content_hash(uri, ["k", "day"])
    tables.merge(uri, rerun, ["k", "day"], schema, None, prune_on="day")
    assert tables.content_hash(uri, ["k", "day"]) == digest


def test_streaming_reads_bounded_batches_with_partitions_and_filters(tmp_path):
    uri = str(tmp_path / "large")
    _large_table(uri, rows=20_000, files=2)
    sizes = [batch.num_rows for batch in tables.iter_batches(uri, ["x"], batch_size=3000)]
    assert max(sizes) <= 3000 and sum(sizes) == 20_000
    premium = tables.read_table(uri, columns=["x"], filters=[("plan", "=", "premium"), ("id", "in", [1, 2])])
    expected = tables.read_table(uri).query("plan == 'premium' and id in (1, 2)")
    assert list(premium.columns) == ["x"] and premium["x"].tolist() == expected["x"].tolist()
    assert tables.newest_value(uri, "ts") == dt.datetime(2026, 1, 1) + dt.timedelta(minutes=19_999)


def test_table_names_are_the_ones_the_belt_has_always_used():
    uc = load_usecase(_CHURN)
    names = {kind: tables.table_name(uc, kind) for kind in
             (tables.FEATURES, tables.LABELS, tables.QUARANTINE, tables.PREDICTIONS, tables.MONITORING)}
    assert names == {
        "features": "churn_features", "labels": "churn_features_labels",
        "quarantine": "churn_features_quarantine", "predictions": "predictions",
        "monitoring": "monitoring",
    }
    with pytest.raises(ValueError, match="unknown table kind 'nope'"):
        tables.table_name(uc, "nope")
