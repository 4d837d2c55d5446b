"""Thin helpers over ``deltalake``: keyed merges, time travel, catalog metadata, hashes.

Catalog metadata lives in the table itself (Delta name, description and configuration,
set at creation), so a table copied elsewhere still says what it holds. Configuration
keys are ``esteira.*`` strings; lists are JSON.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
from deltalake import DeltaTable

from esteira.usecase import ColumnType

_ARROW_TYPES: dict[str, pa.DataType] = {
    "int": pa.int64(),
    "float": pa.float64(),
    "string": pa.string(),
    "category": pa.string(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("us"),
}
CONFIG_PREFIX = "esteira."


def arrow_type(column_type: ColumnType) -> pa.DataType:
    return _ARROW_TYPES[column_type]


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
    return DeltaTable.is_deltatable(uri)


def ensure_table(uri: str, schema: pa.Schema, info: TableInfo) -> DeltaTable:
    """Open the table, creating it (empty, with its catalog metadata) on first use."""
    if exists(uri):
        return DeltaTable(uri)
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


def _literal(value: object) -> str:
    if isinstance(value, pd.Timestamp):
        return f"'{value.isoformat(sep=' ')}'"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


def merge(
    uri: str,
    frame: pd.DataFrame,
    keys: Sequence[str],
    schema: pa.Schema,
    info: TableInfo,
    prune_on: str | None = None,
) -> dict:
    """Upsert ``frame`` by ``keys``: matched rows are replaced, new rows inserted.

    Merging the same rows again leaves the content identical. ``prune_on`` names an
    ordered key column (the event time): the merge then only scans target files whose
    statistics overlap the source's range. Returns delta-rs' merge metrics.
    """
    table = ensure_table(uri, schema, info)
    if frame.empty:
        return {"num_source_rows": 0}
    source = pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)
    predicate = " AND ".join(f"t.{k} = s.{k}" for k in keys)
    if prune_on is not None:
        low, high = frame[prune_on].min(), frame[prune_on].max()
        predicate += f" AND t.{prune_on} >= {_literal(low)} AND t.{prune_on} <= {_literal(high)}"
    return (
        table.merge(source, predicate=predicate, source_alias="s", target_alias="t")
        .when_matched_update_all()
        .when_not_matched_insert_all()
        .execute()
    )


def current_version(uri: str) -> int | None:
    """The latest version, or None when there is no table yet."""
    return DeltaTable(uri).version() if exists(uri) else None


def read_table(uri: str, version: int | None = None, columns: list[str] | None = None) -> pd.DataFrame:
    """The table (at ``version``, latest when None) as pandas."""
    return DeltaTable(uri, version=version).to_pandas(columns=columns)


def row_count(uri: str, version: int | None = None) -> int:
    return DeltaTable(uri, version=version).count()


def table_info(uri: str) -> dict:
    """Name, description, version, keys, owner and columns as stored with the table."""
    table = DeltaTable(uri)
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
    frame = read_table(uri, version).sort_values(list(keys), kind="stable").reset_index(drop=True)
    digest = hashlib.sha256(",".join(frame.columns).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()
