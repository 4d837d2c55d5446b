"""The use case's Delta tables as Unity Catalog external tables (``tables:`` in the YAML):
features, labels, quarantine, predictions (``<usecase>_predictions``) and monitoring
(``<usecase>_monitoring``).

After each write the table is created over its location, or kept current: the table and
column comments are the use case's descriptions (the features' as the YAML says now, the
others as stored with the Delta table), and the primary key is the table's keys with the event time as
the ``TIMESERIES`` column, which makes Databricks treat the table as a time-series feature
table. Only what differs from Unity Catalog's record of the table (read with the Tables
API) is sent, one DDL statement at a time through the SQL Statement Execution API on a
warehouse: each such statement is a metadata-only commit on the Delta table, so an
unchanged table gets none, and the data versions recorded in lineage read the same rows.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from esteira import tables
from esteira.config import ConfigError
from esteira.usecase import UseCase

if TYPE_CHECKING:
    from airflow.providers.databricks.hooks.databricks import DatabricksHook
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.service.catalog import TableInfo

_POLL_FIRST, _POLL_MAX = 0.2, 2.0


class StatementFailed(RuntimeError):
    """A DDL statement ended FAILED or CANCELED on the warehouse; the message is the warehouse's."""


@dataclass(frozen=True)
class UcTable:
    """What Unity Catalog should hold about one Delta table."""

    full_name: str
    location: str
    comment: str
    column_comments: Mapping[str, str]
    keys: Sequence[str]
    timeseries: str | None = None

    @property
    def constraint(self) -> str:
        return f"{_plain(self.full_name).rsplit('.', 1)[-1]}_pk"


@dataclass
class Registration:
    """The tables registered and the statements sent for them (empty when all was current)."""

    tables: list[str] = field(default_factory=list)
    statements: list[str] = field(default_factory=list)


def warehouse_id(uc: UseCase, environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    value = (uc.tables.warehouse_id if uc.tables else None) or env.get("ESTEIRA_DATABRICKS_WAREHOUSE_ID")
    if not value:
        raise ConfigError(
            f"use case '{uc.name}' registers its tables in Unity Catalog (tables:), which needs a SQL "
            "warehouse: set tables.warehouse_id or ESTEIRA_DATABRICKS_WAREHOUSE_ID"
        )
    return value


def desired(uc: UseCase, uri: str) -> UcTable:
    """The Unity Catalog record of the Delta table at ``uri``, from what is stored with it."""
    if uc.tables is None:
        raise ConfigError(f"use case '{uc.name}' has no tables: section (tables.catalog, tables.schema)")
    if uri.startswith(("/Volumes/", "dbfs:/Volumes/")):
        raise ConfigError(
            f"{uri}: Unity Catalog creates no table in a volume; set ESTEIRA_TABLE_ROOT to an external "
            "location URI (abfss://..., s3://..., gs://...) to register the tables (tables:)"
        )
    info = tables.table_info(uri)
    keys = list(info["keys"])  # none stored (the predictions table): no primary key
    stored = info["name"] or uri.rstrip("/").rsplit("/", 1)[-1]
    # Every use case has a table named 'predictions' and one 'monitoring': one schema holds several.
    name = f"{uc.name}_{stored}" if stored in (tables.PREDICTIONS, tables.MONITORING) else stored
    # The YAML as it is now: the descriptions stored with the table are those of its creation.
    described = {f.name: f.description for f in uc.features.definitions if f.description}
    comments = {c["name"]: described.get(c["name"]) or c.get("description", "") for c in info["columns"]}
    features = info["kind"] == tables.FEATURES
    return UcTable(
        full_name=".".join(_quote(p) for p in (uc.tables.catalog, uc.tables.schema_, name)),
        location=uri,
        comment=(uc.features.description if features else "") or info["description"],
        column_comments={name: text for name, text in comments.items() if text},
        keys=keys,
        timeseries=uc.timestamp if uc.timestamp in keys else None,
    )


def plan(table: UcTable, current: TableInfo | None) -> list[str]:
    """The DDL statements that bring Unity Catalog from ``current`` (None: no table) to ``table``."""
    name = table.full_name
    if current is not None and current.storage_location and current.storage_location.rstrip("/") != table.location.rstrip("/"):
        raise ConfigError(
            f"Unity Catalog table {_plain(name)} is over {current.storage_location}, not {table.location}: "
            "another table holds the name; change tables.catalog / tables.schema or drop it"
        )
    columns = {c.name: c for c in (current.columns or [])} if current is not None else {}
    sql = [] if current is not None else [f"CREATE TABLE IF NOT EXISTS {name} USING DELTA LOCATION {_string(table.location)}"]
    if table.comment and (current is None or (current.comment or "") != table.comment):
        sql.append(f"COMMENT ON TABLE {name} IS {_string(table.comment)}")
    for column, comment in table.column_comments.items():
        if current is None or column not in columns or (columns[column].comment or "") != comment:
            sql.append(f"ALTER TABLE {name} ALTER COLUMN {_quote(column)} COMMENT {_string(comment)}")
    for key in table.keys:
        if current is None or key not in columns or columns[key].nullable is not False:
            sql.append(f"ALTER TABLE {name} ALTER COLUMN {_quote(key)} SET NOT NULL")
    existing = _primary_key(current)
    wanted = (table.constraint, list(table.keys), [table.timeseries] if table.timeseries else [])
    if table.keys and existing != wanted:
        if existing is not None:
            sql.append(f"ALTER TABLE {name} DROP CONSTRAINT IF EXISTS {_quote(existing[0])}")
        keys = ", ".join(_quote(k) + (" TIMESERIES" if k == table.timeseries else "") for k in table.keys)
        sql.append(f"ALTER TABLE {name} ADD CONSTRAINT {_quote(table.constraint)} PRIMARY KEY ({keys})")
    return sql


def register(uc: UseCase, uris: Sequence[str], workspace: WorkspaceClient, hook: DatabricksHook,
             timeout_seconds: float = 600) -> Registration:
    """Create or bring current the Unity Catalog table of each Delta table in ``uris``
    (tables not written yet are left for a later run). Raises StatementFailed."""
    from databricks.sdk.errors import NotFound

    warehouse = warehouse_id(uc)
    result = Registration()
    for uri in uris:
        if not tables.exists(uri):
            continue
        table = desired(uc, uri)
        try:
            current = workspace.tables.get(_plain(table.full_name))
        except NotFound:
            current = None
        for statement in plan(table, current):
            execute(hook, warehouse, statement, timeout_seconds)
            result.statements.append(statement)
        result.tables.append(_plain(table.full_name))
    return result


def register_written(uc: UseCase, uris: Sequence[str]) -> list[str]:
    """``register`` on the Airflow connection's workspace; the names of the tables registered."""
    from esteira.databricks import workspace

    return register(uc, uris, workspace.client(), workspace.hook()).tables


def execute(hook: DatabricksHook, warehouse: str, statement: str, timeout_seconds: float = 600) -> None:
    """Run one statement asynchronously (``wait_timeout: 0s``) and poll it to its end; on
    ``timeout_seconds`` cancel it. Raises StatementFailed with the warehouse's error."""
    body: dict[str, Any] = {"statement": statement, "warehouse_id": warehouse, "wait_timeout": "0s"}
    statement_id = hook.post_sql_statement(body)
    deadline, pause = time.monotonic() + timeout_seconds, _POLL_FIRST
    state = hook.get_sql_statement_state(statement_id)
    while not state.is_terminal:
        if time.monotonic() > deadline:
            hook.cancel_sql_statement(statement_id)
            raise StatementFailed(f"statement {statement_id} still {state.state} after {timeout_seconds:.0f} s "
                                  f"(cancelled) on warehouse {warehouse}: {statement}")
        time.sleep(pause)
        pause = min(pause * 2, _POLL_MAX)
        state = hook.get_sql_statement_state(statement_id)
    if not state.is_successful:
        raise StatementFailed(
            f"statement {statement_id} {state.state} on warehouse {warehouse}: "
            f"{state.error_code or '-'}: {state.error_message or 'no error message'} | {statement}"
        )


def _primary_key(current: TableInfo | None) -> tuple[str, list[str], list[str]] | None:
    for constraint in (current.table_constraints or []) if current is not None else []:
        key = constraint.primary_key_constraint
        if key is not None:
            return key.name, list(key.child_columns or []), list(key.timeseries_columns or [])
    return None


def _quote(identifier: str) -> str:
    return f"`{identifier}`"


def _plain(full_name: str) -> str:
    return full_name.replace("`", "")


def _string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
