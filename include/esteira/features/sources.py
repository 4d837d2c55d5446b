"""Where raw rows come from: one small interface, four kinds chosen by ``source.kind``.

Every source reads the rows of an interval ``[start, end)`` by the use case's timestamp
column, as :class:`RawChunk` frames the refresh validates like any other rows:

- ``landing_files``: one file per day in ``ESTEIRA_HOME/landing/<landing>`` (CSV or
  Parquet by the pattern's extension), in time order;
- ``file``: one CSV or Parquet file, a folder or a glob of them, streamed in Arrow batches
  (only the interval's rows are kept);
- ``delta``: a Delta table, read through :mod:`esteira.tables` at one pinned version (the
  refresh records it);
- ``sql``: a query on a database named by an Airflow Connection id, the interval bound as
  ``:start`` and ``:end`` (never formatted into the text).

A row whose timestamp is missing or does not parse at the grain belongs to no interval:
every read returns it, so the refresh quarantines it (keyed, so once) and nothing is lost.
"""

from __future__ import annotations

import glob
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Protocol
from urllib.parse import quote, urlsplit

import numpy as np
import pandas as pd

from esteira.config import Settings
from esteira.features.validation import SchemaMismatch, parse_timestamps, read_raw
from esteira.usecase import Grain, SourceSpec, UseCase

log = logging.getLogger("esteira.features")

_BATCH_ROWS = 65_536
_DRIVERS = {"postgres": "postgresql+psycopg2", "postgresql": "postgresql+psycopg2",
            "mysql": "mysql", "sqlite": "sqlite"}


class SourceError(RuntimeError):
    """A source cannot be read; the message names the source and the cause."""


class NoLandingData(FileNotFoundError):
    """Nothing was delivered for the interval: a scheduled run before the upstream did."""


@dataclass(frozen=True)
class RawChunk:
    """Rows as read (strings from CSV, typed from Parquet, Delta and SQL) and where from.

    ``lines`` locate each row in ``origin`` (1-based, after a CSV header) when
    ``by_line``; otherwise (tables, queries) a row is known by its content. ``day`` is the
    day a landing file covers: its rows stamped outside that day are bad.
    """

    rows: pd.DataFrame
    origin: str
    lines: np.ndarray
    by_line: bool = True
    day: date | None = None


class Source(Protocol):
    """Reads the rows of ``[start, end)``; ``ordered`` when chunks come in time order."""

    name: str
    ordered: bool

    def read(self, start: datetime, end: datetime, columns: list[str]) -> Iterator[RawChunk]: ...

    def version(self) -> int | None:
        """The Delta version read (None for sources without versions)."""


def _resolve(settings: Settings, path: str) -> str:
    """A relative path is relative to the use-case folder; URIs stay as they are."""
    if "://" in path or Path(path).is_absolute():
        return path
    return str(settings.usecases_dir / path)


def _in_interval(frame: pd.DataFrame, timestamp: str, grain: Grain, start: datetime,
                 end: datetime) -> np.ndarray:
    """Rows stamped in [start, end), and rows whose stamp is missing or does not parse."""
    stamps, _ = parse_timestamps(frame[timestamp], grain)
    inside = (stamps >= pd.Timestamp(start)) & (stamps < pd.Timestamp(end))
    return (inside | stamps.isna()).to_numpy()


def _missing(name: str, present: list[str], columns: list[str]) -> None:
    absent = [c for c in columns if c not in present]
    if absent:
        raise SchemaMismatch(f"{name}: columns missing: {', '.join(absent)}")


class LandingFiles:
    """Daily files; a missing day is an error when ``every_day`` (the upstream promises
    one file a day), else it is skipped with a warning."""

    ordered = True

    def __init__(self, folder: Path, pattern: str, every_day: bool, label: str = "events"):
        self.folder, self.pattern, self.every_day, self.label = folder, pattern, every_day, label
        self.name = f"landing files {folder / pattern}"

    def path(self, day: date) -> Path:
        return self.folder / self.pattern.format(date=day.isoformat())

    def read(self, start: datetime, end: datetime, columns: list[str]) -> Iterator[RawChunk]:
        days = [start.date() + timedelta(days=i) for i in range((end.date() - start.date()).days)]
        for day in days:
            path = self.path(day)
            if not path.exists():
                log.warning("%s: no %s file %s, skipped", day, self.label, path)
                continue
            rows = _read_parquet(path, columns) if path.suffix == ".parquet" else read_raw(path, columns)
            first = 1 if path.suffix == ".parquet" else 2
            yield RawChunk(rows, path.name, np.arange(len(rows), dtype=np.int64) + first, day=day)

    def check_delivered(self, start: date, end: date) -> None:
        """NoLandingData when no day of [start, end) has a file; FileNotFoundError when
        some are missing and the upstream delivers every day."""
        days = [start + timedelta(days=i) for i in range((end - start).days)]
        missing = [str(self.path(d)) for d in days if not self.path(d).exists()]
        if missing and len(missing) == len(days):
            raise NoLandingData(
                f"no raw events delivered for [{start}, {end}) yet: none of {missing[0]} ... exists"
            )
        if missing and self.every_day:
            raise FileNotFoundError(
                f"{len(missing)} events file(s) missing: {', '.join(missing[:5])} "
                "(source.every_day is true)"
            )

    def version(self) -> int | None:
        return None


def _read_parquet(path: Path, columns: list[str]) -> pd.DataFrame:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as error:  # noqa: BLE001 - pyarrow raises several types
        raise SourceError(f"{path}: not a readable Parquet file: {error}") from error
    _missing(str(path), parquet.schema_arrow.names, columns)
    return parquet.read(columns=columns, use_threads=False).to_pandas()


class Files:
    """One CSV or Parquet file, a folder of them or a glob, streamed in Arrow batches."""

    ordered = False

    def __init__(self, path: str, fmt: str | None, timestamp: str, grain: Grain,
                 batch_rows: int = _BATCH_ROWS):
        self.path, self.format, self.timestamp, self.grain = path, fmt, timestamp, grain
        self.batch_rows = batch_rows
        self.name = f"file source {path}"

    def files(self) -> list[Path]:
        if any(ch in self.path for ch in "*?["):
            found = sorted(Path(p) for p in glob.glob(self.path, recursive=True))
        elif Path(self.path).is_dir():
            found = sorted(p for p in Path(self.path).rglob("*") if p.suffix in (".csv", ".parquet"))
        else:
            found = [Path(self.path)] if Path(self.path).exists() else []
        if not found:
            raise SourceError(f"{self.name} (source.path): no such file, or no CSV/Parquet file in it")
        return found

    def _format(self, path: Path) -> str:
        fmt = self.format or path.suffix.lstrip(".").lower()
        if fmt not in ("csv", "parquet"):
            raise SourceError(f"{path}: neither .csv nor .parquet; set source.format")
        return fmt

    def read(self, start: datetime, end: datetime, columns: list[str]) -> Iterator[RawChunk]:
        for path in self.files():
            fmt = self._format(path)
            frames, lines, seen = [], [], 0
            for batch in (_csv_batches if fmt == "csv" else _parquet_batches)(path, columns, self.batch_rows):
                frame = batch.to_pandas()
                keep = _in_interval(frame, self.timestamp, self.grain, start, end)
                frames.append(frame[keep])
                lines.append(np.flatnonzero(keep) + seen + (2 if fmt == "csv" else 1))
                seen += len(frame)
            if frames:
                rows = pd.concat(frames, ignore_index=True)
                yield RawChunk(rows, path.name, np.concatenate(lines).astype(np.int64))

    def version(self) -> int | None:
        return None


def _csv_batches(path: Path, columns: list[str], batch_rows: int):
    """CSV cells as strings (only an empty cell is missing, as in the landing files)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    read = pacsv.ReadOptions(block_size=1 << 22, use_threads=False)
    try:
        header = pacsv.open_csv(path, read_options=read).schema.names
        _missing(str(path), header, columns)
        convert = pacsv.ConvertOptions(
            include_columns=columns, column_types={c: pa.string() for c in columns},
            null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=False,
        )
        yield from pacsv.open_csv(path, read_options=read, convert_options=convert)
    except SchemaMismatch:
        raise
    except Exception as error:  # noqa: BLE001 - pyarrow raises several types
        raise SourceError(f"{path}: cannot read the CSV file: {error}") from error


def _parquet_batches(path: Path, columns: list[str], batch_rows: int):
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as error:  # noqa: BLE001 - pyarrow raises several types
        raise SourceError(f"{path}: not a readable Parquet file: {error}") from error
    _missing(str(path), parquet.schema_arrow.names, columns)
    yield from parquet.iter_batches(batch_size=batch_rows, columns=columns, use_threads=False)


class DeltaSource:
    """A Delta table, read at the version it had when the source was opened."""

    ordered = False

    def __init__(self, uri: str, timestamp: str, grain: Grain):
        from esteira import tables

        self.uri, self.timestamp, self.grain = uri, timestamp, grain
        self.name = f"delta source {uri}"
        try:
            self._version = tables.current_version(uri)
        except tables.TableReadError as error:
            raise SourceError(f"{self.name} (source.path): {error}") from error
        if self._version is None:
            raise SourceError(f"{self.name} (source.path): no Delta table there")
        self._schema = tables.arrow_schema(uri, self._version)

    def _filters(self, start: datetime, end: datetime) -> list[tuple] | None:
        """Push the interval down when the column's type allows (file pruning by stats)."""
        import pyarrow as pa

        kind = self._schema.field(self.timestamp).type
        if pa.types.is_timestamp(kind):
            return [(self.timestamp, ">=", start), (self.timestamp, "<", end)]
        if pa.types.is_date(kind):
            return [(self.timestamp, ">=", start.date()), (self.timestamp, "<=", end.date())]
        return None

    def read(self, start: datetime, end: datetime, columns: list[str]) -> Iterator[RawChunk]:
        from esteira import tables

        _missing(self.name, self._schema.names, columns)
        frames = []
        try:
            for batch in tables.iter_batches(self.uri, columns, self._version, self._filters(start, end)):
                frame = batch.to_pandas()
                frames.append(frame[_in_interval(frame, self.timestamp, self.grain, start, end)])
        except tables.TableReadError as error:
            raise SourceError(f"{self.name}: {error}") from error
        if frames:
            rows = pd.concat(frames, ignore_index=True)
            yield RawChunk(rows, f"{Path(self.uri).name}@v{self._version}",
                           np.full(len(rows), -1, dtype=np.int64), by_line=False)

    def version(self) -> int | None:
        return self._version


def connection_url(conn_id: str) -> str:
    """The SQLAlchemy URL of the Airflow Connection ``conn_id``, from ``AIRFLOW_CONN_<ID>``
    (Airflow's own environment form: a URI such as ``postgres://user:pw@host:5432/db``, or
    JSON with ``conn_type``, ``host``, ``port``, ``login``, ``password``, ``schema``).

    Only environment connections are resolved (no Airflow import, so this works in a
    Databricks job too); a connection kept in Airflow's database is not seen here.
    """
    variable = f"AIRFLOW_CONN_{conn_id.upper()}"
    raw = os.environ.get(variable)
    if not raw:
        raise SourceError(
            f"source.conn_id '{conn_id}': no connection; set {variable} (a URI or JSON) "
            "in the environment of the stack and its workers"
        )
    if raw.lstrip().startswith("{"):
        spec = json.loads(raw)
        scheme, host, port = spec.get("conn_type", ""), spec.get("host", ""), spec.get("port")
        login, password, database = spec.get("login"), spec.get("password"), spec.get("schema", "")
    else:
        parts = urlsplit(raw)
        scheme, host, port = parts.scheme, parts.hostname or "", parts.port
        login, password, database = parts.username, parts.password, parts.path.lstrip("/")
    driver = _DRIVERS.get(scheme.replace("-", "_"))
    if driver is None:
        raise SourceError(f"source.conn_id '{conn_id}': conn_type {scheme!r} is not one of {sorted(_DRIVERS)}")
    if driver == "sqlite":
        return f"sqlite:///{host or database}"
    auth = ""
    if login:
        auth = quote(login, safe="") + (":" + quote(password, safe="") if password else "") + "@"
    return f"{driver}://{auth}{host}{f':{port}' if port else ''}/{database}"


class SqlSource:
    """A query whose ``:start`` and ``:end`` bind the interval, streamed in partitions."""

    ordered = False

    def __init__(self, conn_id: str, query: str, timestamp: str, grain: Grain,
                 batch_rows: int = _BATCH_ROWS):
        self.conn_id, self.query, self.timestamp, self.grain = conn_id, query, timestamp, grain
        self.batch_rows = batch_rows
        self.name = f"sql source (conn_id {conn_id})"

    def read(self, start: datetime, end: datetime, columns: list[str]) -> Iterator[RawChunk]:
        import sqlalchemy as sa

        engine = sa.create_engine(connection_url(self.conn_id))
        frames = []
        try:
            with engine.connect() as connection:
                result = connection.execution_options(stream_results=True).execute(
                    sa.text(self.query), {"start": start, "end": end}
                )
                names = list(result.keys())
                _missing(f"{self.name}: source.query", names, columns)
                for partition in result.partitions(self.batch_rows):
                    frame = pd.DataFrame(partition, columns=names)[columns]
                    frames.append(frame[_in_interval(frame, self.timestamp, self.grain, start, end)])
        except sa.exc.SQLAlchemyError as error:
            cause = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
            raise SourceError(f"{self.name}: source.query failed: {cause}") from error
        finally:
            engine.dispose()
        if frames:
            rows = pd.concat(frames, ignore_index=True)
            yield RawChunk(rows, f"sql:{self.conn_id}", np.full(len(rows), -1, dtype=np.int64),
                           by_line=False)

    def version(self) -> int | None:
        return None


def open_source(spec: SourceSpec, uc: UseCase, settings: Settings, pattern: str | None = None) -> Source:
    """The source ``spec`` declares (``pattern``: landing_files' events or labels pattern)."""
    if spec.kind == "landing_files":
        folder = settings.landing_dir / spec.landing
        label = "labels" if pattern == spec.labels_pattern else "events"
        return LandingFiles(folder, pattern or spec.events_pattern, spec.every_day, label)
    if spec.kind == "file":
        return Files(_resolve(settings, spec.path), spec.format, uc.timestamp, uc.grain)
    if spec.kind == "delta":
        return DeltaSource(_resolve(settings, spec.path), uc.timestamp, uc.grain)
    return SqlSource(spec.conn_id, spec.query, uc.timestamp, uc.grain)


def events_source(uc: UseCase, settings: Settings) -> Source:
    return open_source(uc.source, uc, settings)


def labels_source(uc: UseCase, settings: Settings) -> Source | None:
    """The labels' own source; None when the label is a column of the events."""
    if uc.labels_from_events:
        return None
    if isinstance(uc.label.source, SourceSpec):
        return open_source(uc.label.source, uc, settings)
    return open_source(uc.source, uc, settings, pattern=uc.source.labels_pattern)
