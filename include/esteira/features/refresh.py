"""The feature refresh: a source's rows of an interval → validation → features → Delta.

The rows come through the use case's source (``esteira.features.sources``). Landing files
are processed a day at a time with only the lookback the windows need kept in memory;
other sources stream their interval's rows, which are sorted by time before the windows.
Feature rows are merged in batches of ``batch_rows``. Every write is a merge
keyed by (entity, event time), so rerunning an interval leaves the tables identical.
Invariant per run: raw event rows = feature rows written + rows quarantined.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from esteira import tables
from esteira.config import Settings
from esteira.features import sources
from esteira.features.definitions import (
    Batch,
    check_definitions,
    compute_features,
    history_columns,
    history_start,
    shift_back,
)
from esteira.features.sources import NoLandingData, RawChunk
from esteira.features.validation import REASON, Validated, validate, validate_rows
from esteira.usecase import ColumnRule, UseCase

log = logging.getLogger("esteira.features")

_BATCH_ROWS = 100_000
QUARANTINE_KEY = "row_key"


class TooManyBadRows(RuntimeError):
    """The share of bad rows in a file is above ``schema.max_bad_share``."""

    def __init__(self, source: str, bad: int, total: int, limit: float, quarantine_uri: str):
        self.share, self.limit = bad / total, limit
        super().__init__(
            f"{source}: {bad} of {total} rows are bad ({self.share:.1%}), above the limit "
            f"schema.max_bad_share={limit:.1%}; the bad rows and their reasons are in "
            f"the quarantine table {quarantine_uri}"
        )


@dataclass(frozen=True)
class RefreshResult:
    """References to what a refresh wrote (small enough for XCom and Asset metadata)."""

    table_uri: str
    version: int
    rows_written: int
    rows_quarantined: int
    raw_rows: int
    start: date
    end: date
    labels_uri: str
    labels_version: int
    labels_written: int
    labels_quarantined: int
    quarantine_uri: str


def feature_schema(uc: UseCase) -> pa.Schema:
    rules = uc.schema_.columns
    fields = [
        (uc.entity, tables.arrow_type(rules[uc.entity].type)),
        (uc.timestamp, tables.arrow_type("timestamp")),
    ]
    fields += [(f.name, tables.arrow_type(f.type)) for f in uc.features.definitions]
    return pa.schema(fields)


def label_rules(uc: UseCase) -> dict[str, ColumnRule]:
    binary = uc.problem_type == "binary_classification"
    label = ColumnRule(type="int", nullable=False, min=0, max=1) if binary else ColumnRule(
        type="float", nullable=False
    )
    return {
        uc.entity: uc.schema_.columns[uc.entity],
        uc.timestamp: ColumnRule(type="timestamp", nullable=False),
        uc.label.column: label,
    }


def labels_schema(uc: UseCase) -> pa.Schema:
    return pa.schema([(name, tables.arrow_type(rule.type)) for name, rule in label_rules(uc).items()])


def _raw_columns(uc: UseCase) -> list[str]:
    columns = list(uc.schema_.columns)
    return columns + [uc.label.column] if uc.label.column not in columns else columns


def quarantine_schema(uc: UseCase) -> pa.Schema:
    fields = [
        (QUARANTINE_KEY, pa.string()),
        ("source_file", pa.string()),
        ("line", pa.int64()),
        ("run_id", pa.string()),
        (REASON, pa.string()),
    ]
    return pa.schema(fields + [(c, pa.string()) for c in _raw_columns(uc)])


def _infos(uc: UseCase) -> dict[str, tables.TableInfo]:
    rules = uc.schema_.columns
    key_columns = [
        {"name": uc.entity, "type": rules[uc.entity].type, "description": "entity key"},
        {"name": uc.timestamp, "type": "timestamp", "description": "event time (naive UTC)"},
    ]
    features = [
        {
            "name": f.name,
            "type": f.type,
            "description": f.description,
            "function": f.function,
            "source": f.source or "",
            "window": f.window or "",
        }
        for f in uc.features.definitions
    ]
    common = {"owner": uc.features.owner or uc.owner, "usecase": uc.name}
    label_columns = key_columns + [
        {"name": uc.label.column, "type": label_rules(uc)[uc.label.column].type,
         "description": f"label, known {uc.label.delay_days} days after the event"}
    ]
    return {
        tables.FEATURES: tables.TableInfo(
            name=tables.table_name(uc, tables.FEATURES), description=uc.features.description,
            keys=[uc.entity, uc.timestamp], kind=tables.FEATURES, columns=key_columns + features,
            **common,
        ),
        tables.LABELS: tables.TableInfo(
            name=tables.table_name(uc, tables.LABELS),
            description=f"Labels of {uc.name} ('{uc.label.column}') by event",
            keys=[uc.entity, uc.timestamp], kind=tables.LABELS, columns=label_columns, **common,
        ),
        tables.QUARANTINE: tables.TableInfo(
            name=tables.table_name(uc, tables.QUARANTINE),
            description=f"Raw rows of {uc.name} that broke the schema, with the reasons",
            keys=[QUARANTINE_KEY], kind=tables.QUARANTINE, **common,
        ),
    }


def _days(start: date, end: date) -> list[date]:
    return [start + timedelta(days=i) for i in range((end - start).days)]


def _quarantine_rows(uc: UseCase, checked: Validated, path: Path, run_id: str) -> pd.DataFrame:
    bad = checked.bad.copy()
    line = checked.bad_index.astype(np.int64) + 2  # 1-based, after the header line
    bad.insert(0, QUARANTINE_KEY, path.name + ":" + pd.Series(line).astype(str))
    bad.insert(1, "source_file", path.name)
    bad.insert(2, "line", line)
    bad.insert(3, "run_id", run_id)
    for column in _raw_columns(uc):
        if column not in bad:
            bad[column] = None
    return bad


class _Writer:
    """Buffers rows per table and merges a table's buffer once it is large enough."""

    def __init__(self, uc: UseCase, settings: Settings, batch_rows: int) -> None:
        infos = _infos(uc)
        key = [uc.entity, uc.timestamp]
        self.batch_rows = batch_rows
        self.targets = {
            tables.FEATURES: (tables.table_uri(settings, uc, tables.FEATURES), key,
                              feature_schema(uc), infos[tables.FEATURES], uc.timestamp),
            tables.LABELS: (tables.table_uri(settings, uc, tables.LABELS), key, labels_schema(uc),
                            infos[tables.LABELS], uc.timestamp),
            tables.QUARANTINE: (tables.table_uri(settings, uc, tables.QUARANTINE), [QUARANTINE_KEY],
                                quarantine_schema(uc), infos[tables.QUARANTINE], None),
        }
        self.pending: dict[str, list[pd.DataFrame]] = {name: [] for name in self.targets}

    def uri(self, name: str) -> str:
        return self.targets[name][0]

    def add(self, name: str, frame: pd.DataFrame) -> None:
        if not frame.empty:
            self.pending[name].append(frame)
        if sum(len(f) for f in self.pending[name]) >= self.batch_rows:
            self.flush(name)

    def flush(self, name: str) -> int:
        uri, keys, schema, info, prune_on = self.targets[name]
        frames, self.pending[name] = self.pending[name], []
        frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=schema.names)
        merged = tables.merge(uri, frame, keys, schema, info, prune_on=prune_on)
        log.info("merged %d rows into %s", len(frame), uri)
        return merged["version"]


class _Windows:
    """Groups validated days into chunks of about ``chunk_rows`` rows and computes their
    features with the ``lookback`` days of history before the chunk.

    Memory holds one chunk plus the lookback; computing several days at once keeps the
    history from being re-sorted for every single day.
    """

    def __init__(self, uc: UseCase, chunk_rows: int) -> None:
        self.uc, self.chunk_rows = uc, chunk_rows
        self.lookback = lookback_days(uc)
        self.keep = history_columns(uc)
        self.history: pd.DataFrame | None = None
        self.chunk: list[pd.DataFrame] = []

    def remember(self, good: pd.DataFrame, day: date) -> None:
        """Keep what the windows of the days after ``day`` need."""
        if not self.lookback:
            return
        frames = [good[self.keep]] if self.history is None else [self.history, good[self.keep]]
        history = pd.concat(frames, ignore_index=True)
        cutoff = pd.Timestamp(day + timedelta(days=1 - self.lookback))
        self.history = history[history[self.uc.timestamp] >= cutoff].reset_index(drop=True)

    def add(self, good: pd.DataFrame, day: date, last: bool) -> list[pd.DataFrame]:
        """Queue one day; returns the features of the chunk when it is full (or ``last``)."""
        self.chunk.append(good)
        if not last and sum(len(f) for f in self.chunk) < self.chunk_rows:
            return []
        target = pd.concat(self.chunk, ignore_index=True)
        self.chunk = []
        past = target[self.keep].iloc[:0] if self.history is None else self.history
        batch = Batch.build(past, target, self.uc.entity, self.uc.timestamp)
        self.remember(target, day)
        return [compute_features(batch, self.uc)]


def refresh_features(
    uc: UseCase,
    settings: Settings,
    start: date,
    end: date,
    run_id: str,
    batch_rows: int = _BATCH_ROWS,
) -> RefreshResult:
    """Refresh the feature and labels tables for the landing days in [start, end).

    Raises FileNotFoundError when an events file of the interval is missing, and
    TooManyBadRows (after quarantining the file's bad rows) when a file's bad share
    passes ``schema.max_bad_share``. Missing labels files are logged and skipped.
    """
    if end <= start:
        raise ValueError(f"empty interval [{start}, {end})")
    check_definitions(uc)
    folder = settings.landing_dir / uc.source.landing
    columns = list(uc.schema_.columns)

    def events_path(day: date) -> Path:
        return folder / uc.source.events_pattern.format(date=day.isoformat())

    days = _days(start, end)
    missing = [str(events_path(d)) for d in days if not events_path(d).exists()]
    if missing and len(missing) == len(days):
        raise NoLandingData(
            f"no raw events delivered for [{start}, {end}) yet: none of {missing[0]} ... exists"
        )
    if missing:
        raise FileNotFoundError(f"{len(missing)} events file(s) missing: {', '.join(missing[:5])}")

    writer = _Writer(uc, settings, batch_rows)
    windows = _Windows(uc, batch_rows)
    for day in _days(start - timedelta(days=windows.lookback), start):
        if events_path(day).exists():
            windows.remember(validate(read_raw(events_path(day), columns), uc, day).good, day)

    raw_rows = written = quarantined = 0
    for day in days:
        path = events_path(day)
        raw = read_raw(path, columns)
        checked = validate(raw, uc, day)
        bad = len(checked.bad)
        raw_rows, quarantined = raw_rows + len(raw), quarantined + bad
        if bad:
            writer.add(tables.QUARANTINE, _quarantine_rows(uc, checked, path, run_id))
        if raw.shape[0] and bad / len(raw) > uc.schema_.max_bad_share:
            writer.flush(tables.QUARANTINE)
            raise TooManyBadRows(path.name, bad, len(raw), uc.schema_.max_bad_share,
                                 writer.uri(tables.QUARANTINE))
        log.info("%s: %d raw rows, %d good, %d quarantined", day, len(raw), len(checked.good), bad)
        for features in windows.add(checked.good, day, last=day == days[-1]):
            writer.add(tables.FEATURES, features)
            written += len(features)

    labels_written, labels_quarantined = _ingest_labels(uc, writer, folder, days, run_id)
    version = writer.flush(tables.FEATURES)
    labels_version = writer.flush(tables.LABELS)
    writer.flush(tables.QUARANTINE)
    log.info(
        "refreshed %s [%s, %s): %d raw rows = %d feature rows + %d quarantined; "
        "%d labels (%d quarantined); feature table version %d",
        uc.name, start, end, raw_rows, written, quarantined, labels_written,
        labels_quarantined, version,
    )
    return RefreshResult(
        table_uri=writer.uri(tables.FEATURES), version=version, rows_written=written,
        rows_quarantined=quarantined, raw_rows=raw_rows, start=start, end=end,
        labels_uri=writer.uri(tables.LABELS), labels_version=labels_version,
        labels_written=labels_written, labels_quarantined=labels_quarantined,
        quarantine_uri=writer.uri(tables.QUARANTINE),
    )


def _ingest_labels(
    uc: UseCase, writer: _Writer, folder: Path, days: list[date], run_id: str
) -> tuple[int, int]:
    """Queue the labels files of ``days``; a file dated D labels events of D - delay."""
    rules = label_rules(uc)
    written = quarantined = 0
    for day in days:
        path = folder / uc.source.labels_pattern.format(date=day.isoformat())
        if not path.exists():
            log.warning("%s: no labels file %s, skipped", day, path)
            continue
        event_day = day - timedelta(days=uc.label.delay_days)
        checked = validate_rows(read_raw(path, list(rules)), rules, [uc.entity, uc.timestamp], event_day)
        if len(checked.bad):
            writer.add(tables.QUARANTINE, _quarantine_rows(uc, checked, path, run_id))
            log.warning("%s: %d bad label rows quarantined", path.name, len(checked.bad))
        writer.add(tables.LABELS, checked.good)
        written, quarantined = written + len(checked.good), quarantined + len(checked.bad)
    return written, quarantined
