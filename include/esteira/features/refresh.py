"""The feature refresh: a source's rows of an interval → validation → features → Delta.

The rows come through the use case's source (``esteira.features.sources``). Landing files
are processed a day at a time with only the lookback the windows need kept in memory;
other sources stream their interval's rows, which are sorted by time before the windows.
Rows are written in batches of ``batch_rows``. A run owns the rows of what it read: the
time ranges of its days (a landing file's day, or the interval of a table or query) in the
feature and label tables, and the landing files in quarantine. Each write replaces what it
owns (delete and insert in one Delta commit), so a corrected re-delivery leaves the tables
as if it had been the first one (rows it no longer has are gone), and rerunning unchanged
files leaves them identical. Quarantined rows of tables and queries are known only by their
content and are merged by it. Features of later days whose windows look back at a corrected
day change when those days are refreshed again.
Invariant per run: raw event rows = feature rows written + rows quarantined.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

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
_LABEL_SUFFIX = ":label"  # row keys of label rows quarantined from an events file


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
    source: str = ""
    source_version: int | None = None


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


def _quarantine_rows(
    uc: UseCase, checked: Validated, chunk: RawChunk, run_id: str, suffix: str = ""
) -> pd.DataFrame:
    """Bad rows as strings, keyed by origin and line (or, from tables and queries, by
    their content), so a rerun quarantines each row once."""
    bad = checked.bad.copy()
    for column in bad.columns.drop(REASON):
        bad[column] = [None if pd.isna(v) else str(v) for v in bad[column]]
    line = chunk.lines[checked.bad_index]
    if chunk.by_line:
        where = pd.Series(line).astype(str)
    else:
        content = bad.drop(columns=[REASON]).astype(str)
        where = pd.Series(pd.util.hash_pandas_object(content, index=False).to_numpy()).map("{:016x}".format)
    bad.insert(0, QUARANTINE_KEY, chunk.origin + ":" + where + suffix)
    bad.insert(1, "source_file", chunk.origin)
    bad.insert(2, "line", line)
    bad.insert(3, "run_id", run_id)
    for column in _raw_columns(uc):
        if column not in bad:
            bad[column] = None
    return bad


def source_metadata(source: sources.Source) -> dict[str, str]:
    """What each feature commit records of where its rows came from: the source,
    and its Delta version when it has one (so a training set's lineage can name it)."""
    version = source.version()
    return {tables.SOURCE_KEY: source.name} | ({} if version is None else {tables.SOURCE_VERSION_KEY: str(version)})


class _Writer:
    """Buffers rows per table and writes a table's buffer once it is large enough,
    replacing what the run claimed since the last write: time ranges of the feature and
    label tables, landing files of the quarantine (``claim``). A buffer is written early
    only when it has a claim: the rows of a range must all be in the write that replaces it.
    """

    def __init__(self, uc: UseCase, settings: Settings, batch_rows: int, source: sources.Source) -> None:
        infos = _infos(uc)
        key = [uc.entity, uc.timestamp]
        self.batch_rows = batch_rows
        self.metadata = source_metadata(source)
        self.targets = {
            tables.FEATURES: (tables.table_uri(settings, uc, tables.FEATURES), key,
                              feature_schema(uc), infos[tables.FEATURES], uc.timestamp),
            tables.LABELS: (tables.table_uri(settings, uc, tables.LABELS), key, labels_schema(uc),
                            infos[tables.LABELS], uc.timestamp),
            tables.QUARANTINE: (tables.table_uri(settings, uc, tables.QUARANTINE), [QUARANTINE_KEY],
                                quarantine_schema(uc), infos[tables.QUARANTINE], None),
        }
        self.pending: dict[str, list[pd.DataFrame]] = {name: [] for name in self.targets}
        self.ranges: dict[str, list[tuple[datetime, datetime]]] = {tables.FEATURES: [], tables.LABELS: []}
        self.files: dict[bool, set[str]] = {False: set(), True: set()}

    def uri(self, name: str) -> str:
        return self.targets[name][0]

    def claim(self, name: str, start: datetime, end: datetime) -> None:
        """The run owns the rows of ``name`` stamped in [start, end)."""
        self.ranges[name].append((start, end))

    def claim_file(self, origin: str, labels_of_events: bool = False) -> None:
        """The run owns the quarantined rows of a landing file (its label rows, when the
        labels are a column of the events)."""
        self.files[labels_of_events].add(origin)

    def add(self, name: str, frame: pd.DataFrame) -> None:
        if not frame.empty:
            self.pending[name].append(frame)
        claimed = self.ranges[name] if name in self.ranges else True
        if claimed and sum(len(f) for f in self.pending[name]) >= self.batch_rows:
            self.flush(name)

    def flush(self, name: str) -> int:
        uri, keys, schema, info, timestamp = self.targets[name]
        frames, self.pending[name] = self.pending[name], []
        frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=schema.names)
        if name == tables.QUARANTINE:
            return self._flush_quarantine(frame)
        ranges, self.ranges[name] = self.ranges[name], []
        metadata = self.metadata if name == tables.FEATURES else None
        if not ranges:
            return tables.merge(uri, frame, keys, schema, info, prune_on=timestamp,
                                commit_metadata=metadata)["version"]
        version = tables.replace_where(uri, frame, _ranges_predicate(timestamp, ranges), schema, info,
                                       commit_metadata=metadata)
        log.info("replaced %s with %d rows in %s", _describe(ranges), len(frame), uri)
        return version

    def _flush_quarantine(self, frame: pd.DataFrame) -> int:
        uri, keys, schema, info, _ = self.targets[tables.QUARANTINE]
        files, self.files = self.files, {False: set(), True: set()}
        from_labels = frame[QUARANTINE_KEY].str.endswith(_LABEL_SUFFIX)
        owned = (frame["source_file"].isin(files[False]) & ~from_labels) | (
            frame["source_file"].isin(files[True]) & from_labels
        )
        version = None
        if files[False] or files[True]:
            version = tables.replace_where(uri, frame[owned], _files_predicate(files), schema, info)
            log.info("replaced the quarantined rows of %d file(s) with %d rows in %s",
                     len(files[False] | files[True]), int(owned.sum()), uri)
        if version is None or not owned.all():
            version = tables.merge(uri, frame[~owned], keys, schema, info)["version"]
        return version


def _ranges_predicate(column: str, ranges: list[tuple[datetime, datetime]]) -> str:
    """SQL for rows stamped in any of ``ranges`` (adjacent ones joined)."""
    joined: list[list[datetime]] = []
    for start, end in sorted(ranges):
        if joined and start <= joined[-1][1]:
            joined[-1][1] = max(joined[-1][1], end)
        else:
            joined.append([start, end])
    return " OR ".join(
        f"(`{column}` >= '{start.isoformat(sep=' ')}' AND `{column}` < '{end.isoformat(sep=' ')}')"
        for start, end in joined
    )


def _files_predicate(files: dict[bool, set[str]]) -> str:
    """SQL for the quarantined rows of the claimed files (events rows or label rows)."""
    def listed(names: set[str]) -> str:
        return ", ".join("'" + name.replace("'", "''") + "'" for name in sorted(names))

    parts = [
        f"(source_file IN ({listed(names)}) AND {QUARANTINE_KEY} {'' if labels else 'NOT '}"
        f"LIKE '%{_LABEL_SUFFIX}')"
        for labels, names in files.items() if names
    ]
    return " OR ".join(parts)


def _describe(ranges: list[tuple[datetime, datetime]]) -> str:
    return f"[{min(s for s, _ in ranges)}, {max(e for _, e in ranges)})"


class _Windows:
    """Groups validated days into chunks of about ``chunk_rows`` rows and computes their
    features with the ``lookback`` days of history before the chunk.

    Memory holds one chunk plus the lookback; computing several days at once keeps the
    history from being re-sorted for every single day.
    """

    def __init__(self, uc: UseCase, chunk_rows: int) -> None:
        self.uc, self.chunk_rows = uc, chunk_rows
        self.windowed = any(f.window for f in uc.features.definitions)
        self.keep = history_columns(uc)
        self.history: pd.DataFrame | None = None
        self.chunk: list[pd.DataFrame] = []

    def remember(self, good: pd.DataFrame, until: datetime) -> None:
        """Keep what the windows of the rows stamped from ``until`` on need."""
        if not self.windowed:
            return
        frames = [good[self.keep]] if self.history is None else [self.history, good[self.keep]]
        history = pd.concat(frames, ignore_index=True)
        cutoff = pd.Timestamp(history_start(self.uc, until))
        self.history = history[history[self.uc.timestamp] >= cutoff].reset_index(drop=True)

    def add(self, good: pd.DataFrame, until: datetime, last: bool) -> list[pd.DataFrame]:
        """Queue rows stamped before ``until``; returns the features of the chunk when it
        is full (or ``last``)."""
        if len(good):
            self.chunk.append(good)
        if not self.chunk or (not last and sum(len(f) for f in self.chunk) < self.chunk_rows):
            return []
        target = pd.concat(self.chunk, ignore_index=True)
        self.chunk = []
        past = target[self.keep].iloc[:0] if self.history is None else self.history
        batch = Batch.build(past, target, self.uc.entity, self.uc.timestamp, self.uc.grain)
        self.remember(target, until)
        return [compute_features(batch, self.uc)]


def refresh_features(
    uc: UseCase,
    settings: Settings,
    start: date,
    end: date,
    run_id: str,
    batch_rows: int = _BATCH_ROWS,
) -> RefreshResult:
    """Refresh the feature and labels tables for the source's rows in [start, end).

    Raises NoLandingData when the interval has no rows yet, FileNotFoundError when a
    landing file of the interval is missing and ``source.every_day``, SourceError or
    SchemaMismatch (naming the source, key or column) when the source cannot be read, and
    TooManyBadRows (after quarantining the bad rows) when a file's, table's or query's
    bad share passes ``schema.max_bad_share``. Missing labels files are logged and skipped.
    """
    if end <= start:
        raise ValueError(f"empty interval [{start}, {end})")
    check_definitions(uc)
    columns = _raw_columns(uc) if uc.labels_from_events else list(uc.schema_.columns)
    source = sources.events_source(uc, settings)
    start_at, end_at = _at(start), _at(end)
    if isinstance(source, sources.LandingFiles):
        source.check_delivered(start, end)

    writer = _Writer(uc, settings, batch_rows, source)
    windows = _Windows(uc, batch_rows)
    if windows.windowed:
        for chunk in source.read(history_start(uc, start_at), start_at, columns):
            windows.remember(validate(chunk.rows, uc, chunk.day).good, start_at)

    raw_rows = written = quarantined = 0
    unordered: list[pd.DataFrame] = []
    days: list[date] = []  # read, their features not written yet
    for chunk in source.read(start_at, end_at, columns):
        raw = chunk.rows
        checked = validate(raw, uc, chunk.day)
        bad = len(checked.bad)
        raw_rows, quarantined = raw_rows + len(raw), quarantined + bad
        if isinstance(source, sources.LandingFiles):
            writer.claim_file(chunk.origin)
        if bad:
            writer.add(tables.QUARANTINE, _quarantine_rows(uc, checked, chunk, run_id))
        if raw.shape[0] and bad / len(raw) > uc.schema_.max_bad_share:
            writer.flush(tables.QUARANTINE)
            raise TooManyBadRows(chunk.origin, bad, len(raw), uc.schema_.max_bad_share,
                                 writer.uri(tables.QUARANTINE))
        log.info("%s: %d raw rows, %d good, %d quarantined", chunk.origin, len(raw), len(checked.good), bad)
        if not source.ordered:
            unordered.append(checked.good)
            continue
        days.append(chunk.day)
        for features in windows.add(checked.good, _at(chunk.day + timedelta(days=1)), last=False):
            _claim_days(writer, days)
            writer.add(tables.FEATURES, features)
            written += len(features)
    if not raw_rows and not source.ordered:
        raise NoLandingData(f"{source.name}: no rows in [{start}, {end}) yet")
    good, repeated = _unique(uc, unordered, source.name, run_id)
    if len(repeated):
        writer.add(tables.QUARANTINE, repeated)
        quarantined += len(repeated)
    if source.ordered:
        _claim_days(writer, days)
    else:
        writer.claim(tables.FEATURES, start_at, end_at)
    for features in windows.add(good, end_at, last=True):
        writer.add(tables.FEATURES, features)
        written += len(features)

    labels_written, labels_quarantined = _ingest_labels(uc, settings, source, writer, start, end, run_id)
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
        quarantine_uri=writer.uri(tables.QUARANTINE), source=source.name,
        source_version=source.version(),
    )


def _at(day: date) -> datetime:
    return datetime.combine(day, time())


def _claim_days(writer: _Writer, days: list[date]) -> None:
    """The features of these days (each a landing file) are the run's; empties ``days``."""
    for day in days:
        writer.claim(tables.FEATURES, _at(day), _at(day + timedelta(days=1)))
    days.clear()


def _unique(
    uc: UseCase, frames: list[pd.DataFrame], origin: str, run_id: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Good rows of several files or batches with each (entity, timestamp) once, sorted by
    time; a key seen again is quarantined (the first one stays)."""
    if not frames:
        return pd.DataFrame(), pd.DataFrame()
    good = pd.concat(frames, ignore_index=True)
    key = [uc.entity, uc.timestamp]
    again = good.duplicated(key).to_numpy()
    bad = good[again].reset_index(drop=True).assign(**{REASON: "duplicate key (" + ", ".join(key) + ")"})
    chunk = RawChunk(bad, origin, np.full(len(bad), -1, dtype=np.int64), by_line=False)
    repeated = Validated(good.iloc[:0], bad, np.arange(len(bad)))
    good = good[~again].sort_values(uc.timestamp, kind="stable").reset_index(drop=True)
    return good, _quarantine_rows(uc, repeated, chunk, run_id) if len(bad) else pd.DataFrame()


def _ingest_labels(
    uc: UseCase, settings: Settings, events: sources.Source, writer: _Writer,
    start: date, end: date, run_id: str,
) -> tuple[int, int]:
    """Queue the labels that became known in [start, end): those of the events stamped
    ``label.delay`` earlier. A landing labels file dated D holds the labels of D - delay."""
    rules = label_rules(uc)
    key = [uc.entity, uc.timestamp]
    own = sources.labels_source(uc, settings)
    if isinstance(own, sources.LandingFiles):
        chunks, lo, hi = own.read(_at(start), _at(end), list(rules)), None, None
    else:
        lo = shift_back(_at(start), uc.label.delay_window, uc.grain)
        hi = shift_back(_at(end), uc.label.delay_window, uc.grain)
        chunks = (own or events).read(lo, hi, list(rules) if own else _raw_columns(uc))
    written = quarantined = 0
    for chunk in chunks:
        if own is None:
            chunk = _known_labels(uc, chunk)
        event_day = chunk.day - timedelta(days=uc.label.delay_days) if chunk.day else None
        checked = validate_rows(chunk.rows[list(rules)], rules, key, event_day, uc.grain,
                                within=(lo, hi) if lo else None)
        if isinstance(own, sources.LandingFiles):
            writer.claim(tables.LABELS, _at(event_day), _at(event_day + timedelta(days=1)))
            writer.claim_file(chunk.origin)
        elif own is None and isinstance(events, sources.LandingFiles):
            writer.claim_file(chunk.origin, labels_of_events=True)
        if len(checked.bad):
            suffix = _LABEL_SUFFIX if own is None else ""
            writer.add(tables.QUARANTINE, _quarantine_rows(uc, checked, chunk, run_id, suffix))
            log.warning("%s: %d bad label rows quarantined", chunk.origin, len(checked.bad))
        writer.add(tables.LABELS, checked.good)
        written, quarantined = written + len(checked.good), quarantined + len(checked.bad)
    if lo is not None:
        writer.claim(tables.LABELS, lo, hi)
    return written, quarantined


def _known_labels(uc: UseCase, chunk: RawChunk) -> RawChunk:
    """The rows of an events chunk that are good events and carry a label (a missing label
    is not known yet; a bad event is quarantined by the events pass already)."""
    events = validate(chunk.rows, uc, chunk.day)
    good = np.setdiff1d(np.arange(len(chunk.rows)), events.bad_index)
    good = good[chunk.rows[uc.label.column].iloc[good].notna().to_numpy()]
    return dataclasses.replace(chunk, rows=chunk.rows.iloc[good].reset_index(drop=True),
                               lines=chunk.lines[good])
