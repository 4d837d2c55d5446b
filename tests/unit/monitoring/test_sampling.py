"""Sampling: bounded, seeded, stratified exactly, and the same whether a frame is in memory
or read batch by batch from Parquet or Delta."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest
from deltalake import write_deltalake

from esteira import tables
from esteira.monitoring.sampling import open_parquet, sample_dataset, sample_frame, sample_table
from tests.unit.monitoring.frames import churn_frame


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    data = churn_frame(20_000, seed=5)
    data["churned"] = (np.arange(len(data)) % 10 == 0).astype(int)  # exactly 10% positives
    return data


def test_small_frames_are_kept_whole_and_in_order(frame):
    sample = sample_frame(frame.head(500), size=1000, seed=1)
    assert sample.source_rows == sample.sampled_rows == 500
    pd.testing.assert_frame_equal(sample.frame, frame.head(500))


def test_large_frames_are_bounded_without_repeats_and_seeded(frame):
    first = sample_frame(frame.assign(row=range(len(frame))), size=1000, seed=1)
    again = sample_frame(frame.assign(row=range(len(frame))), size=1000, seed=1)
    other = sample_frame(frame.assign(row=range(len(frame))), size=1000, seed=2)
    assert (first.source_rows, first.sampled_rows) == (20_000, 1000)
    assert first.frame["row"].is_unique and first.frame["row"].is_monotonic_increasing
    pd.testing.assert_frame_equal(first.frame, again.frame)
    assert not first.frame["row"].equals(other.frame["row"])


def test_sample_is_uniform_over_the_rows(frame):
    rows = sample_frame(frame.assign(row=range(len(frame))), size=4000, seed=3).frame["row"]
    counts, _ = np.histogram(rows, bins=4, range=(0, len(frame)))
    assert counts.min() > 900 and counts.max() < 1100


def test_stratified_sample_keeps_class_shares_exactly(frame):
    sample = sample_frame(frame, size=997, seed=4, stratify_by="churned")
    assert sample.sampled_rows == 997
    assert sample.frame["churned"].value_counts().to_dict() == {0: 897, 1: 100}  # 897.3 and 99.7
    assert sample.stratify_by == "churned"


def test_nulls_are_a_stratum_of_their_own(frame):
    sample = sample_frame(frame, size=2000, seed=4, stratify_by="device")
    expected = frame["device"].value_counts(dropna=False, normalize=True) * 2000
    got = sample.frame["device"].value_counts(dropna=False)
    assert (abs(got - expected) <= 1).all()
    assert sample.frame["device"].isna().sum() > 0


def test_stratifying_by_a_continuous_column_is_refused(frame):
    with pytest.raises(ValueError, match="distinct values"):
        sample_frame(frame, size=100, seed=1, stratify_by="monthly_charges")


@pytest.mark.parametrize("stratify", [None, "churned"])
def test_parquet_read_in_batches_gives_the_in_memory_sample(frame, tmp_path, stratify):
    path = tmp_path / "rows.parquet"
    frame.to_parquet(path, row_group_size=3000)
    from_disk = sample_dataset(
        open_parquet(str(path)), size=1500, seed=9, stratify_by=stratify, batch_rows=2048
    )
    in_memory = sample_frame(pd.read_parquet(path), size=1500, seed=9, stratify_by=stratify)
    assert from_disk.source_rows == 20_000
    pd.testing.assert_frame_equal(from_disk.frame, in_memory.frame)


def test_columns_and_filter_limit_what_is_read(frame, tmp_path):
    path = tmp_path / "rows.parquet"
    frame.to_parquet(path)
    sample = sample_dataset(
        open_parquet(str(path)),
        size=100,
        seed=1,
        columns=["plan", "monthly_charges"],
        stratify_by="churned",
        filter=ds.field("plan") == "premium",
    )
    assert list(sample.frame.columns) == ["plan", "monthly_charges", "churned"]
    assert set(sample.frame["plan"]) == {"premium"}
    assert sample.source_rows == int((frame["plan"] == "premium").sum())


@pytest.mark.parametrize("stratify", [None, "churned"])
def test_delta_read_in_batches_gives_the_in_memory_sample(frame, tmp_path, stratify):
    uri = str(tmp_path / "features")
    write_deltalake(uri, frame)
    from_table = sample_table(uri, size=1500, seed=9, stratify_by=stratify, batch_rows=2048)
    in_memory = sample_frame(tables.read_table(uri), size=1500, seed=9, stratify_by=stratify)
    assert from_table.source_rows == 20_000
    pd.testing.assert_frame_equal(from_table.frame, in_memory.frame)


def test_delta_table_at_a_version(frame, tmp_path):
    uri = str(tmp_path / "features")
    write_deltalake(uri, frame.head(3000))
    write_deltalake(uri, frame.tail(5000), mode="append")
    assert sample_table(uri, size=10_000, seed=1, version=0).source_rows == 3000
    latest = sample_table(uri, size=1000, seed=1)
    assert (latest.source_rows, latest.sampled_rows) == (8000, 1000)


def test_empty_selection_gives_an_empty_sample(frame, tmp_path):
    path = tmp_path / "rows.parquet"
    frame.to_parquet(path)
    sample = sample_dataset(
        open_parquet(str(path)), size=10, seed=1, columns=["plan"], filter=ds.field("plan") == "x"
    )
    assert (sample.source_rows, sample.sampled_rows) == (0, 0)
    assert list(sample.frame.columns) == ["plan"]


def test_partitioned_delta_with_a_filter_on_partition_and_data_columns(frame, tmp_path):
    uri = str(tmp_path / "partitioned")
    write_deltalake(uri, frame.assign(day=np.arange(len(frame)) % 4), partition_by=["day"])
    sample = sample_table(
        uri,
        size=500,
        seed=1,
        columns=["day", "plan"],
        stratify_by="churned",
        filters=[("day", ">=", 2), ("monthly_charges", ">", 50)],
    )
    expected = frame[(np.arange(len(frame)) % 4 >= 2) & (frame["monthly_charges"] > 50)]
    assert sample.source_rows == len(expected)
    assert set(sample.frame["day"]) == {2, 3}
    assert list(sample.frame.columns) == ["day", "plan", "churned"]


def test_empty_frame_gives_an_empty_sample(frame):
    sample = sample_frame(frame.head(0), size=10, seed=1, stratify_by="churned")
    assert (sample.source_rows, sample.sampled_rows) == (0, 0)
