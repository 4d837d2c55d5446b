"""Seeded samples of a bounded size, from in-memory frames or from tables of any size.

Why: Evidently holds the frames it compares several times over, and its run time grows with
the row count; on a million rows it needs minutes and more than a GiB. A fixed, seeded sample
bounds both, and keeps the sensitivity of the drift tests the same from window to window
(see ``bench/drift.py`` for the figures and the note on sample size and test power).

How: "bottom-k" sampling. Every row gets a seeded uniform key and the k rows with the smallest
keys are kept, which is a uniform sample without replacement. The k smallest can be updated
one Arrow record batch at a time, so a Parquet dataset or a Delta table is read in memory
bounded by the sample plus one batch. Stratified samples keep each stratum's share of the rows
exactly (largest-remainder quotas); their counts come from a first pass over that column only.
The keys are drawn in row order, so a frame and the same rows read batch by batch give the
same sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.dataset as ds

_ALL = ""
_NULL = "<null>"
_MAX_STRATA = 100
_BATCH_ROWS = 65_536


@dataclass(frozen=True, eq=False)
class Sample:
    """A sample and where it came from: the sizes go into the monitoring results."""

    frame: pd.DataFrame
    source_rows: int
    seed: int
    stratify_by: str | None = None

    @property
    def sampled_rows(self) -> int:
        return len(self.frame)


def sample_frame(
    frame: pd.DataFrame, size: int, seed: int, stratify_by: str | None = None
) -> Sample:
    """At most ``size`` rows of ``frame`` (all of them, in order, when it is not larger)."""
    import pyarrow as pa

    if size <= 0:
        raise ValueError(f"sample size must be positive, got {size}")
    strata = _strata(pa.array(frame[stratify_by])) if stratify_by is not None else None
    quotas = {_ALL: size} if strata is None else _quotas(_counts(strata), size)
    keys = np.random.default_rng(seed).random(len(frame))
    keep = np.sort(_bottom_k(keys, strata, quotas))
    return Sample(
        frame=frame.iloc[keep].reset_index(drop=True),
        source_rows=len(frame),
        seed=seed,
        stratify_by=stratify_by,
    )


def sample_dataset(
    dataset: ds.Dataset,
    size: int,
    seed: int,
    columns: list[str] | None = None,
    stratify_by: str | None = None,
    filter: ds.Expression | None = None,
    batch_rows: int = _BATCH_ROWS,
) -> Sample:
    """At most ``size`` rows of a pyarrow dataset, reading one record batch at a time.

    ``columns`` limits what is read (the stratum column is read as well); ``filter`` selects
    rows first (e.g. a time window). Peak memory is about the sample plus one batch.
    """
    import pyarrow as pa

    if size <= 0:
        raise ValueError(f"sample size must be positive, got {size}")
    read = columns
    if columns is not None and stratify_by is not None and stratify_by not in columns:
        read = [*columns, stratify_by]
    quotas = (
        {_ALL: size}
        if stratify_by is None
        else _quotas(_dataset_counts(dataset, stratify_by, filter, batch_rows), size)
    )
    rng = np.random.default_rng(seed)
    kept: pa.Table | None = None
    kept_keys = np.empty(0)
    kept_pos = np.empty(0, dtype=np.int64)
    kept_strata: np.ndarray | None = None if stratify_by is None else np.empty(0, dtype=object)
    seen = 0
    scanner = dataset.scanner(columns=read, filter=filter, batch_size=batch_rows)
    for batch in scanner.to_batches():
        if batch.num_rows == 0:
            continue
        table = pa.Table.from_batches([batch])
        keys = np.concatenate([kept_keys, rng.random(batch.num_rows)])
        pos = np.concatenate([kept_pos, np.arange(seen, seen + batch.num_rows)])
        seen += batch.num_rows
        candidates = table if kept is None else pa.concat_tables([kept, table])
        strata = None
        if kept_strata is not None:
            strata = np.concatenate([kept_strata, _strata(table.column(stratify_by))])
        keep = _bottom_k(keys, strata, quotas)
        kept, kept_keys, kept_pos = candidates.take(pa.array(keep)), keys[keep], pos[keep]
        if strata is not None:
            kept_strata = strata[keep]
    if kept is None:
        empty = (
            dataset.schema if read is None else pa.schema([dataset.schema.field(c) for c in read])
        )
        return Sample(empty.empty_table().to_pandas(), 0, seed, stratify_by)
    order = np.argsort(kept_pos, kind="stable")
    return Sample(
        frame=kept.take(pa.array(order)).to_pandas(),
        source_rows=seen,
        seed=seed,
        stratify_by=stratify_by,
    )


def open_parquet(path: str) -> ds.Dataset:
    """A Parquet file or a folder of them, as a lazily read dataset."""
    import pyarrow.dataset as ds

    return ds.dataset(path, format="parquet")


def open_delta(table_uri: str, version: int | None = None) -> ds.Dataset:
    """A Delta table at ``version`` (latest when None), as a lazily read dataset."""
    from deltalake import DeltaTable

    return DeltaTable(table_uri, version=version).to_pyarrow_dataset()


def _strata(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Stratum labels as strings, nulls as their own stratum."""
    import pyarrow as pa
    import pyarrow.compute as pc

    labels = pc.fill_null(pc.cast(values, pa.string()), _NULL)
    return np.asarray(labels.to_numpy(zero_copy_only=False), dtype=object)


def _counts(strata: np.ndarray) -> dict[str, int]:
    labels, counts = np.unique(strata, return_counts=True)
    return _checked({str(k): int(v) for k, v in zip(labels, counts, strict=True)})


def _dataset_counts(
    dataset: ds.Dataset, column: str, filter: ds.Expression | None, batch_rows: int
) -> dict[str, int]:
    counts: dict[str, int] = {}
    scanner = dataset.scanner(columns=[column], filter=filter, batch_size=batch_rows)
    for batch in scanner.to_batches():
        labels, n = np.unique(_strata(batch.column(0)), return_counts=True)
        for label, count in zip(labels, n, strict=True):
            counts[str(label)] = counts.get(str(label), 0) + int(count)
        _checked(counts)
    return counts


def _checked(counts: dict[str, int]) -> dict[str, int]:
    if len(counts) > _MAX_STRATA:
        raise ValueError(
            f"cannot stratify by a column with more than {_MAX_STRATA} distinct values; "
            "use a class label, not a continuous value"
        )
    return counts


def _quotas(counts: dict[str, int], size: int) -> dict[str, int]:
    """Rows to keep per stratum: proportional, summing to ``size`` (largest remainder)."""
    total = sum(counts.values())
    if total <= size:
        return dict(counts)
    exact = {label: size * n / total for label, n in counts.items()}
    quotas = {label: int(share) for label, share in exact.items()}
    by_remainder = sorted(exact, key=lambda label: (quotas[label] - exact[label], label))
    for label in by_remainder[: size - sum(quotas.values())]:
        quotas[label] += 1
    return quotas


def _bottom_k(keys: np.ndarray, strata: np.ndarray | None, quotas: dict[str, int]) -> np.ndarray:
    """Positions of the rows with the smallest keys, up to each stratum's quota."""
    if strata is None:
        return _smallest(keys, quotas[_ALL], np.arange(len(keys)))
    labels, inverse = np.unique(strata, return_inverse=True)
    picks = [
        _smallest(keys[rows], quotas.get(str(label), 0), rows)
        for j, label in enumerate(labels)
        for rows in [np.flatnonzero(inverse == j)]
    ]
    return np.concatenate(picks) if picks else np.empty(0, dtype=np.int64)


def _smallest(keys: np.ndarray, k: int, rows: np.ndarray) -> np.ndarray:
    if len(keys) <= k:
        return rows
    if k == 0:
        return rows[:0]
    return rows[np.argpartition(keys, k - 1)[:k]]
