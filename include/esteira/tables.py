"""The one seam to Delta tables: names, opening, reading, keyed merges, partition
replacement, versions and history. No other module opens a ``DeltaTable``.

Catalog metadata lives in the table itself (Delta name, description and configuration,
set at creation), so a table copied elsewhere still says what it holds. Configuration
keys are ``esteira.*`` strings; lists are JSON.

Reads never go through deltalake's pyarrow dataset scan. That scan reads through a Python
filesystem object, so the buffers it holds are Python objects; its background threads
can release the last of them while the interpreter is finalizing, and a thread that needs
the GIL then is terminated mid-destructor: the process aborts ("terminate called without
an active exception", exit 134) after its work succeeded (delta-rs #2184). Here each data
file is opened through pyarrow's own filesystem and decoded one batch at a time on the
calling thread (``ParquetFile.iter_batches(use_threads=False)``), so nothing is left
running, or holding a Python object, when the process exits; memory stays bounded by a
batch. Rows are filtered with tuple filters (``[(column, op, value), ...]``, a list of
such lists meaning OR), which also prune files by the statistics in the Delta log.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    from deltalake import DeltaTable

    from esteira.config import Settings
    from esteira.usecase import ColumnType, UseCase

FEATURES = "features"
LABELS = "labels"
QUARANTINE = "quarantine"
PREDICTIONS = "predictions"
MONITORING = "monitoring"

CONFIG_PREFIX = "esteira."
# Commit metadata of a feature table's writes: where the rows came from (`commit_metadata_of`).
SOURCE_KEY = f"{CONFIG_PREFIX}source"
SOURCE_VERSION_KEY = f"{CONFIG_PREFIX}source_version"
_BATCH_ROWS = 65_536
_COMPARISONS = {
    "=": "equal",
    "==": "equal",
    "!=": "not_equal",
    "<": "less",
    "<=": "less_equal",
    ">": "greater",
    ">=": "greater_equal",
}

Filter = tuple[str, str, Any]
Filters = Sequence[Filter] | Sequence[Sequence[Filter]]


class TableNotFound(LookupError):
    """There is no Delta table at the URI yet."""


class TableReadError(RuntimeError):
    """A table exists but cannot be read (a corrupt log, a missing data file, ...)."""


def table_name(uc: UseCase, kind: str) -> str:
    """The name of the use case's table of ``kind`` (one of the kinds above)."""
    names = {
        FEATURES: uc.features.table,
        LABELS: f"{uc.features.table}_labels",
        QUARANTINE: f"{uc.features.table}_quarantine",
        PREDICTIONS: PREDICTIONS,
        MONITORING: MONITORING,
    }
    if kind not in names:
        raise ValueError(f"unknown table kind {kind!r}; one of {sorted(names)}")
    return names[kind]


def table_uri(settings: Settings, uc: UseCase, kind: str) -> str:
    return settings.table_uri(uc.name, table_name(uc, kind))


def arrow_type(column_type: ColumnType) -> pa.DataType:
    import pyarrow as pa

    types = {
        "int": pa.int64(),
        "float": pa.float64(),
        "string": pa.string(),
        "category": pa.string(),
        "bool": pa.bool_(),
        "timestamp": pa.timestamp("us"),
    }
    return types[column_type]


@dataclass(frozen=True)
class TableInfo:
    """What the catalog shows about a table; stored with it at creation."""

    name: str
    description: str
    keys: list[str]
    owner: str = ""
    usecase: str = ""
    kind: str = ""
    columns: list[dict[str, str]] = field(default_factory=list)

    def configuration(self) -> dict[str, str]:
        return {
            f"{CONFIG_PREFIX}owner": self.owner,
            f"{CONFIG_PREFIX}usecase": self.usecase,
            f"{CONFIG_PREFIX}kind": self.kind,
            f"{CONFIG_PREFIX}keys": json.dumps(self.keys),
            f"{CONFIG_PREFIX}columns": json.dumps(self.columns),
        }


def exists(uri: str) -> bool:
    from deltalake import DeltaTable

    return DeltaTable.is_deltatable(uri)


def open_table(uri: str, version: int | None = None) -> DeltaTable:
    """The table at ``version`` (latest when None).

    Raises TableNotFound when there is no table at ``uri``, TableReadError when its log
    cannot be read.
    """
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return DeltaTable(uri, version=version)
    except TableNotFoundError:
        raise TableNotFound(f"no Delta table at {uri}") from None
    except Exception as error:  # noqa: BLE001 - deltalake raises several unrelated types
        raise _read_error(uri, error) from error


def ensure_table(uri: str, schema: pa.Schema, info: TableInfo) -> DeltaTable:
    """Open the table, creating it (empty, with its catalog metadata) on first use."""
    from deltalake import DeltaTable

    if exists(uri):
        return open_table(uri)
    if "://" not in uri:
        Path(uri).mkdir(parents=True, exist_ok=True)
    return DeltaTable.create(
        uri,
        schema,
        mode="ignore",
        name=info.name,
        description=info.description,
        configuration=info.configuration(),
        raise_if_key_not_exists=False,
    )


def current_version(uri: str) -> int | None:
    """The latest version, or None when there is no table yet."""
    return open_table(uri).version() if exists(uri) else None


def arrow_schema(uri: str, version: int | None = None) -> pa.Schema:
    """The table's columns as Arrow types (what every read returns)."""
    return _schema(open_table(uri, version))


def iter_batches(
    uri: str,
    columns: list[str] | None = None,
    version: int | None = None,
    filters: Filters | None = None,
    batch_size: int = _BATCH_ROWS,
) -> Iterator[pa.RecordBatch]:
    """Non-empty record batches of at most ``batch_size`` rows with the table's types.

    Streams: memory holds one batch. Raises TableNotFound, or TableReadError naming the
    table and the cause.
    """
    yield from _batches(uri, open_table(uri, version), columns, filters, batch_size)


def read_table(
    uri: str,
    version: int | None = None,
    columns: list[str] | None = None,
    filters: Filters | None = None,
) -> pd.DataFrame:
    """The table (at ``version``, latest when None) as pandas, optionally filtered."""
    import pyarrow as pa

    table = open_table(uri, version)
    schema = _schema(table)
    names = schema.names if columns is None else list(columns)
    batches = list(_batches(uri, table, names, filters, _BATCH_ROWS))
    projected = pa.schema([schema.field(name) for name in names])
    return pa.Table.from_batches(batches, schema=projected).to_pandas()


def read_interval(
    uri: str,
    timestamp: str,
    start: datetime,
    end: datetime,
    columns: list[str] | None = None,
    version: int | None = None,
) -> pd.DataFrame:
    """Rows with ``start <= timestamp < end``; an empty frame with ``columns`` when the
    table does not exist yet. Raises TableReadError for any other failure."""
    import pandas as pd

    try:
        return read_table(uri, version, columns, [(timestamp, ">=", start), (timestamp, "<", end)])
    except TableNotFound:
        return pd.DataFrame(columns=columns or [])


def newest_value(uri: str, column: str) -> Any | None:
    """The largest value of ``column``; None when the table is empty or not there yet."""
    import pyarrow.compute as pc

    if not exists(uri):
        return None
    newest = None
    for batch in iter_batches(uri, [column]):
        top = pc.max(batch.column(0)).as_py()
        if top is not None and (newest is None or top > newest):
            newest = top
    return newest


def merge(
    uri: str,
    frame: pd.DataFrame | pa.Table,
    keys: Sequence[str],
    schema: pa.Schema,
    info: TableInfo | None,
    prune_on: str | None = None,
    update_when: str | None = None,
    commit_metadata: Mapping[str, str] | None = None,
) -> dict:
    """Upsert ``frame`` by ``keys``: matched rows are replaced, new rows inserted.

    Merging the same rows again leaves the content identical. ``prune_on`` names an
    ordered key column (the event time): the merge then only scans target files whose
    statistics overlap the source's range. ``update_when`` (SQL over ``t`` and ``s``)
    replaces a matched row only when it holds, so an unchanged row keeps its lineage.
    ``info`` describes the table this call creates on first use (None: it must exist).
    ``commit_metadata`` is stored with the commit (see `commit_metadata`).
    Returns delta-rs' merge metrics and the table's new ``version``.
    """
    import pyarrow.compute as pc

    table = open_table(uri) if info is None else ensure_table(uri, schema, info)
    source = _arrow(frame, schema)
    if source.num_rows == 0:
        return {"num_source_rows": 0, "version": table.version()}
    predicate = " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)
    if prune_on is not None:
        bounds = pc.min_max(source.column(prune_on)).as_py()
        low, high = bounds["min"], bounds["max"]
        predicate += (
            f" AND t.`{prune_on}` >= {_literal(low)} AND t.`{prune_on}` <= {_literal(high)}"
        )
    metrics = (
        table.merge(source, predicate=predicate, source_alias="s", target_alias="t",
                    commit_properties=_commit(commit_metadata))
        .when_matched_update_all(predicate=update_when)
        .when_not_matched_insert_all()
        .execute()
    )
    return {**metrics, "version": table.version()}


def append(
    uri: str, data: pd.DataFrame | pa.Table, info: TableInfo | None = None, schema: pa.Schema | None = None
) -> int:
    """Append rows (creating the table with them); returns the new version.

    ``info`` names and describes a table this call creates; the catalog configuration is
    only written by `ensure_table` (``write_deltalake`` refuses keys it does not know).
    """
    from deltalake import write_deltalake

    named = {} if info is None else {"name": info.name, "description": info.description}
    write_deltalake(uri, _arrow(data, schema), mode="append", **named)
    return open_table(uri).version()


def replace_where(
    uri: str, frame: pd.DataFrame | pa.Table, predicate: str, schema: pa.Schema, info: TableInfo,
    commit_metadata: Mapping[str, str] | None = None,
) -> int:
    """Delete the rows matching ``predicate`` (SQL) and insert ``frame`` in one commit.

    Every row of ``frame`` must match ``predicate`` (delta-rs refuses the write otherwise),
    so a re-delivered partition replaces exactly the rows it came with. Returns the version.
    """
    from deltalake import write_deltalake

    ensure_table(uri, schema, info)
    write_deltalake(uri, _arrow(frame, schema), mode="overwrite", predicate=predicate,
                    commit_properties=_commit(commit_metadata))
    return open_table(uri).version()


def _commit(metadata: Mapping[str, str] | None):
    from deltalake import CommitProperties

    return CommitProperties(custom_metadata=dict(metadata)) if metadata else None


def commit_metadata_of(uri: str, version: int, prefix: str = CONFIG_PREFIX) -> dict[str, str]:
    """The ``prefix`` keys a writer stored with commit ``version`` (empty when none)."""
    entry = next((h for h in history(uri) if h.get("version") == version), {})
    return {key: str(value) for key, value in entry.items() if key.startswith(prefix)}


def history(uri: str) -> list[dict]:
    """The table's commits, newest first (operation, parameters, metrics, version)."""
    return open_table(uri).history()


def row_count(uri: str, version: int | None = None) -> int:
    """Rows according to the file statistics in the log (no data file is read)."""
    return open_table(uri, version).count()


def table_info(uri: str) -> dict:
    """Name, description, version, keys, owner and columns as stored with the table."""
    table = open_table(uri)
    metadata = table.metadata()
    config: Mapping[str, str] = metadata.configuration
    return {
        "name": metadata.name,
        "description": metadata.description,
        "uri": uri,
        "version": table.version(),
        "rows": table.count(),
        "usecase": config.get(f"{CONFIG_PREFIX}usecase", ""),
        "kind": config.get(f"{CONFIG_PREFIX}kind", ""),
        "owner": config.get(f"{CONFIG_PREFIX}owner", ""),
        "keys": json.loads(config.get(f"{CONFIG_PREFIX}keys", "[]")),
        "columns": json.loads(config.get(f"{CONFIG_PREFIX}columns", "[]")),
    }


def content_hash(uri: str, keys: Sequence[str], version: int | None = None) -> str:
    """A hash of the rows independent of file layout and row order (for tests and lineage)."""
    import pandas as pd

    frame = read_table(uri, version).sort_values(list(keys), kind="stable").reset_index(drop=True)
    digest = hashlib.sha256(",".join(frame.columns).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def _batches(
    uri: str, table: DeltaTable, columns: list[str] | None, filters: Filters | None, batch_size: int
) -> Iterator[pa.RecordBatch]:
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    groups = _groups(filters)
    try:
        schema = _schema(table)
        wanted = schema.names if columns is None else list(columns)
        needed = list(dict.fromkeys(wanted + [column for group in groups for column, _, _ in group]))
        fields = [schema.field(name) for name in needed]
        # The dataset only lists the files, with partition values and statistics; it is
        # never scanned.
        dataset = table.to_pyarrow_dataset(filesystem=_native_filesystem(table))
        for fragment in dataset.get_fragments(filter=_expression(groups, schema)):
            partition = ds.get_partition_keys(fragment.partition_expression)
            with fragment.open() as source:
                parquet = pq.ParquetFile(source)
                present = [name for name in needed if name in parquet.schema_arrow.names]
                for batch in parquet.iter_batches(
                    batch_size=batch_size, columns=present, use_threads=False
                ):
                    batch = _complete(batch, fields, partition)
                    if groups:
                        batch = batch.filter(_mask(batch, groups))
                    if batch.num_rows:
                        yield batch.select(wanted)
    except Exception as error:  # noqa: BLE001 - pyarrow and deltalake raise many types
        raise _read_error(uri, error) from error


def _read_error(uri: str, error: Exception) -> TableReadError:
    cause = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return TableReadError(f"cannot read the Delta table at {uri}: {type(error).__name__}: {cause}")


def _schema(table: DeltaTable) -> pa.Schema:
    import pyarrow as pa

    return pa.schema(table.schema().to_arrow())


def _native_filesystem(table: DeltaTable):
    """pyarrow's own filesystem rooted at the table (buffers owned by Arrow, not Python)."""
    import pyarrow.fs as pafs

    filesystem, root = pafs.FileSystem.from_uri(table.table_uri)  # always a URL, file:// too
    return pafs.SubTreeFileSystem(root, filesystem)


def _complete(batch: pa.RecordBatch, fields: list[pa.Field], partition: dict) -> pa.RecordBatch:
    """The columns of ``fields`` in that order and type: a file lacks partition columns, and
    columns added to the table after it was written (null)."""
    import pyarrow as pa

    columns = [
        batch.column(f.name).cast(f.type)
        if f.name in batch.schema.names
        else pa.array([partition.get(f.name)] * batch.num_rows, type=f.type)
        for f in fields
    ]
    return pa.RecordBatch.from_arrays(columns, schema=pa.schema(fields))


def _groups(filters: Filters | None) -> list[list[Filter]]:
    """Tuple filters as OR-of-AND groups."""
    if not filters:
        return []
    if isinstance(filters[0], tuple):
        return [list(filters)]
    return [list(group) for group in filters]


def _predicate(groups: list[list[Filter]], operand: Callable[[str], tuple[Any, pa.DataType]]):
    """The filters over ``operand(column)``: arrays (a row mask) or dataset fields (an
    expression that prunes files by their log statistics)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    result = None
    for group in groups:
        both = None
        for column, op, value in group:
            left, type_ = operand(column)
            if op in ("in", "not in"):
                test = pc.is_in(left, value_set=pa.array(list(value), type=type_))
                test = pc.invert(test) if op == "not in" else test
            elif op in _COMPARISONS:
                test = getattr(pc, _COMPARISONS[op])(left, pa.scalar(value, type=type_))
            else:
                raise ValueError(f"unknown filter operator {op!r} in ({column!r}, {op!r}, ...)")
            both = test if both is None else pc.and_kleene(both, test)
        result = both if result is None else pc.or_kleene(result, both)
    return result


def _expression(groups: list[list[Filter]], schema: pa.Schema):
    import pyarrow.dataset as ds

    return _predicate(groups, lambda c: (ds.field(c), schema.field(c).type)) if groups else None


def _mask(batch: pa.RecordBatch, groups: list[list[Filter]]) -> pa.Array:
    """Which rows pass, computed on this thread; a null never passes."""
    import pyarrow.compute as pc

    mask = _predicate(groups, lambda c: (batch.column(c), batch.schema.field(c).type))
    return pc.fill_null(mask, False)


def _literal(value: object) -> str:
    if isinstance(value, datetime):
        return f"'{value.isoformat(sep=' ')}'"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


def _arrow(data: pd.DataFrame | pa.Table, schema: pa.Schema | None) -> pa.Table:
    """``data`` as Arrow, with the columns of ``schema`` in its order and types when given."""
    import pyarrow as pa

    if isinstance(data, pa.Table):
        return data if schema is None else data.select(schema.names).cast(schema)
    if schema is None:
        return pa.Table.from_pandas(data, preserve_index=False)
    return pa.Table.from_pandas(data[schema.names], schema=schema, preserve_index=False)
