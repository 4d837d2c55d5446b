"""The feature catalog: every Delta table under the data folder, described by the
metadata stored with it (see :mod:`esteira.tables`)."""

from __future__ import annotations

from pathlib import Path

from esteira import tables
from esteira.config import Settings

_SUMMARY = ("name", "usecase", "kind", "description", "owner", "keys", "version", "rows", "uri")


def _table_uris(settings: Settings) -> list[str]:
    """Delta tables at ``data_dir/<usecase>/<table>``, sorted by path."""
    if not settings.data_dir.exists():
        return []
    logs = sorted(settings.data_dir.glob("*/*/_delta_log"))
    return [str(log.parent) for log in logs if tables.exists(str(log.parent))]


def list_tables(settings: Settings) -> list[dict]:
    """One summary per table: name, use case, kind, description, owner, keys, version, rows, uri."""
    return [{k: info[k] for k in _SUMMARY} for info in map(tables.table_info, _table_uris(settings))]


def describe_table(settings: Settings, name: str) -> dict:
    """Everything stored about one table, columns included.

    ``name`` is the table name (``churn_features``) or ``<usecase>/<table>`` when two use
    cases share a table name. Raises LookupError naming the known tables.
    """
    matches = [
        uri for uri in _table_uris(settings)
        if name in (Path(uri).name, f"{Path(uri).parent.name}/{Path(uri).name}")
    ]
    if len(matches) != 1:
        known = ", ".join(f"{Path(u).parent.name}/{Path(u).name}" for u in _table_uris(settings))
        problem = "is ambiguous" if matches else "is not a table"
        raise LookupError(f"'{name}' {problem} (known: {known or 'none'})")
    return tables.table_info(matches[0])
