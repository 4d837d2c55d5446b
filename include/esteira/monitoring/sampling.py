"""Seeded samples of a bounded size, from in-memory frames or from tables of any size.

Why: Evidently holds the frames it compares several times over, and its run time grows with
the row count; on a million rows it needs about a minute and more than a GiB. A fixed, seeded
sample bounds both, and keeps the sensitivity of the drift tests the same from window to
window (see ``bench/drift.py`` for the figures and the note on sample size and test power).

How: "bottom-k" sampling. Every row gets a seeded uniform key and the k rows with the smallest
keys are kept, which is a uniform sample without replacement. The k smallest can be updated
one Arrow record batch at a time, so a Parquet dataset or a Delta table is read in memory
bounded by 1.25 samples plus one batch. Stratified samples keep each stratum's share of the rows
exactly (largest-remainder quotas); their counts come from a first pass over that column only.
The keys are drawn in row order, so a frame and the same rows read batch by batch give the
same sample.

Files are read with ``ParquetFile.iter_batches``, which decodes a row group a batch at a
time; the dataset scanner decodes whole row groups (a million rows in a Delta file written
with the defaults) and peaked at about twice the memory. Delta tables are streamed by
`esteira.tables.iter_batches`, which reads them the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from esteira import tables

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.dataset as ds

_NULL = "<null>"
_MAX_STRATA = 100
_BATCH_ROWS = 16_384
# Waiting rows are merged into the sample once they are this share of it (1/4: memory holds
# 1.25 samples at most, and a 10M-row stream is merged a few dozen times, not per batch).
_MERGE_SHARE = 4


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

    _check_size(size)
    values = None if stratify_by is None else pa.array(frame[stratify_by])
    strata = _Strata.of(size, None if values is None else _Counter().add(_labels(values)))
    keys = np.random.default_rng(seed).random(len(frame))
    codes = strata.codes(values, len(frame))
    keep = np.sort(_bottom_k(keys, codes, strata.quotas))
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
    """At most ``size`` rows of a pyarrow dataset (Parquet files), one record batch at a time.

    ``columns`` limits what is read (the stratum column is read as well); ``filter`` selects
    rows first (e.g. a time window). Peak memory is about the sample plus one batch.
    """
    return sample_batches(
        lambda names: _tables(dataset, names, filter, batch_rows),
        dataset.schema, size, seed, columns, stratify_by,
    )


def sample_table(
    table_uri: str,
    size: int,
    seed: int,
    columns: list[str] | None = None,
    stratify_by: str | None = None,
    version: int | None = None,
    filters: tables.Filters | None = None,
    batch_rows: int = _BATCH_ROWS,
) -> Sample:
    """At most ``size`` rows of a Delta table at ``version`` (latest when None), read one
    record batch at a time; ``filters`` are tuple filters (see `esteira.tables`)."""
    import pyarrow as pa

    def read(names: list[str] | None) -> Iterator[pa.Table]:
        for batch in tables.iter_batches(table_uri, names, version, filters, batch_rows):
            yield pa.Table.from_batches([batch])

    return sample_batches(read, tables.arrow_schema(table_uri, version), size, seed, columns, stratify_by)


def sample_batches(
    read: Callable[[list[str] | None], Iterator[pa.Table]],
    schema: pa.Schema,
    size: int,
    seed: int,
    columns: list[str] | None = None,
    stratify_by: str | None = None,
) -> Sample:
    """At most ``size`` rows of the tables ``read(names)`` yields (several sources chained
    are one stream); ``schema`` types an empty sample. Bottom-k over the stream, after a
    first pass over the stratum column when stratifying."""
    import pyarrow as pa

    _check_size(size)
    names = columns
    if columns is not None and stratify_by is not None and stratify_by not in columns:
        names = [*columns, stratify_by]
    counts = None
    if stratify_by is not None:
        counts = _Counter()
        for table in read([stratify_by]):
            counts.add(_labels(table.column(0)))
    strata = _Strata.of(size, counts)
    rng = np.random.default_rng(seed)
    reservoir = _Reservoir(strata.quotas)
    for table in read(names):
        values = None if stratify_by is None else table.column(stratify_by)
        reservoir.offer(table, rng.random(table.num_rows), strata.codes(values, table.num_rows))
    reservoir.merge()
    if reservoir.kept is None:
        fields = [schema.field(name) for name in (schema.names if names is None else names)]
        return Sample(pa.schema(fields).empty_table().to_pandas(), 0, seed, stratify_by)
    order = np.argsort(reservoir.positions, kind="stable")
    frame, rows = reservoir.kept.take(pa.array(order)).to_pandas(), reservoir.seen
    del reservoir
    # Arrow's allocator keeps freed batches for reuse; hand them back before Evidently runs.
    pa.default_memory_pool().release_unused()
    return Sample(frame, source_rows=rows, seed=seed, stratify_by=stratify_by)


def open_parquet(path: str) -> ds.Dataset:
    """A Parquet file or a folder of them, as a lazily read dataset."""
    import pyarrow.dataset as ds

    return ds.dataset(path, format="parquet")


def _check_size(size: int) -> None:
    if size <= 0:
        raise ValueError(f"sample size must be positive, got {size}")


class _Counter:
    """Rows per stratum label, refusing continuous columns."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def add(self, labels: pa.Array | pa.ChunkedArray) -> _Counter:
        import pyarrow.compute as pc

        for item in pc.value_counts(labels).to_pylist():
            self.counts[item["values"]] = self.counts.get(item["values"], 0) + item["counts"]
        if len(self.counts) > _MAX_STRATA:
            raise ValueError(
                f"cannot stratify by a column with more than {_MAX_STRATA} distinct values; "
                "use a class label, not a continuous value"
            )
        return self


@dataclass(frozen=True)
class _Strata:
    """Stratum labels (sorted), and rows to keep of each: proportional, summing to the
    sample size (largest remainder, ties to the first label)."""

    labels: tuple[str, ...]
    quotas: np.ndarray

    @staticmethod
    def of(size: int, counts: _Counter | None) -> _Strata:
        if counts is None:
            return _Strata((), np.array([size]))
        labels = tuple(sorted(counts.counts))
        rows = np.array([counts.counts[label] for label in labels], dtype=np.int64)
        total = int(rows.sum())
        if total <= size:
            return _Strata(labels, rows)
        exact = size * rows / total
        quotas = np.floor(exact).astype(np.int64)
        by_remainder = np.argsort(quotas - exact, kind="stable")
        quotas[by_remainder[: size - int(quotas.sum())]] += 1
        return _Strata(labels, quotas)

    def codes(self, values: pa.Array | pa.ChunkedArray | None, rows: int) -> np.ndarray:
        """Each row's stratum index; -1 for a label not counted (quota 0)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if values is None:
            return np.zeros(rows, dtype=np.int64)
        index = pc.index_in(_labels(values), value_set=pa.array(self.labels, pa.string()))
        return pc.fill_null(index, -1).to_numpy(zero_copy_only=False).astype(np.int64)


class _Reservoir:
    """The rows with the smallest keys offered so far, up to each stratum's quota.

    A row whose key is above its stratum's largest kept key (once the quota is full) can
    never enter, so it is dropped on arrival. The rows that may enter wait in a buffer and
    are merged with the kept rows once the buffer holds a quarter of the sample's rows: one
    copy of the sample per quarter sample of entering rows, not one per batch (the limits
    of a stale merge are looser, never tighter, so no row that belongs is dropped). Memory
    holds at most 1.25 samples and one batch.
    """

    def __init__(self, quotas: np.ndarray) -> None:
        self.quotas = quotas
        self.kept: pa.Table | None = None
        self.keys = np.empty(0)
        self.codes = np.empty(0, dtype=np.int64)
        self.positions = np.empty(0, dtype=np.int64)
        self.seen = 0
        self._limits = self._limits_of(self.keys, self.codes)
        self._waiting: list[tuple[pa.Table, np.ndarray, np.ndarray, np.ndarray]] = []
        self._waiting_rows = 0

    def offer(self, table: pa.Table, keys: np.ndarray, codes: np.ndarray) -> None:
        import pyarrow as pa

        positions = np.arange(self.seen, self.seen + table.num_rows)
        self.seen += table.num_rows
        entering = keys < self._limits[codes]
        if not entering.any():
            return
        if not entering.all():
            table = table.filter(pa.array(entering))
            keys, codes, positions = keys[entering], codes[entering], positions[entering]
        self._waiting.append((table, keys, codes, positions))
        self._waiting_rows += table.num_rows
        if self._waiting_rows >= max(int(self.quotas.sum()) // _MERGE_SHARE, 1):
            self.merge()

    def merge(self) -> None:
        """Keep the smallest keys of the kept and the waiting rows."""
        import pyarrow as pa

        if not self._waiting:
            return
        tables, keys, codes, positions = zip(*self._waiting, strict=True)
        candidates = pa.concat_tables(([] if self.kept is None else [self.kept]) + list(tables))
        keys = np.concatenate([self.keys, *keys])
        codes = np.concatenate([self.codes, *codes])
        keep = _bottom_k(keys, codes, self.quotas)
        self.kept = candidates.take(pa.array(keep))
        self.keys, self.codes = keys[keep], codes[keep]
        self.positions = np.concatenate([self.positions, *positions])[keep]
        self._limits = self._limits_of(self.keys, self.codes)
        self._waiting, self._waiting_rows = [], 0

    def _limits_of(self, keys: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Per stratum code, the key a row must be under to enter; the last entry is for
        code -1 (never enters)."""
        limits = np.full(len(self.quotas) + 1, -np.inf)
        for code, quota in enumerate(self.quotas):
            mine = keys[codes == code]
            limits[code] = np.inf if len(mine) < quota else (mine.max() if len(mine) else -np.inf)
        return limits


def _tables(
    dataset: ds.Dataset, columns: list[str] | None, filter: ds.Expression | None, batch_rows: int
) -> Iterator[pa.Table]:
    """Non-empty tables of at most ``batch_rows`` rows, typed as the dataset's schema.

    With a filter, every column of a batch is read so that any expression can be evaluated;
    partition values come from the fragment's partition expression.
    """
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    wanted = dataset.schema.names if columns is None else columns
    needed = dataset.schema.names if filter is not None else wanted
    fields = [dataset.schema.field(name) for name in needed]
    for fragment in dataset.get_fragments(filter=filter):
        partition = ds.get_partition_keys(fragment.partition_expression)
        parquet = pq.ParquetFile(fragment.open())
        in_file = [name for name in needed if name in parquet.schema_arrow.names]
        for batch in parquet.iter_batches(
            batch_size=batch_rows, columns=in_file, use_threads=False
        ):
            table = _complete(pa.Table.from_batches([batch]), fields, partition)
            if filter is not None:
                table = table.filter(filter)
            if table.num_rows:
                yield table.select(wanted)


def _complete(table: pa.Table, fields: list[pa.Field], partition: dict) -> pa.Table:
    """The columns of ``fields`` in that order and type: a file lacks partition columns, and
    columns added to the table after it was written (null)."""
    import pyarrow as pa

    columns = [
        table.column(field.name).cast(field.type)
        if field.name in table.column_names
        else pa.array([partition.get(field.name)] * table.num_rows, type=field.type)
        for field in fields
    ]
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def _labels(values: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Stratum labels as strings, nulls as a stratum of their own."""
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.fill_null(pc.cast(values, pa.string()), _NULL)


def _bottom_k(keys: np.ndarray, codes: np.ndarray, quotas: np.ndarray) -> np.ndarray:
    """Positions of the rows with the smallest keys, up to each stratum's quota."""
    picks = []
    for code, quota in enumerate(quotas):
        rows = np.flatnonzero(codes == code)
        if len(rows) > quota:
            rows = rows[np.argpartition(keys[rows], quota - 1)[:quota]] if quota else rows[:0]
        picks.append(rows)
    return np.concatenate(picks) if picks else np.empty(0, dtype=np.int64)
