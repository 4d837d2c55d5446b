"""What the online server served, for monitoring: partitioned Parquet written off the request path.

Requests only put a reference on an in-memory queue bounded by bytes (a record count would
let a burst of large requests hold gigabytes); one background thread turns batches into
Parquet files under ``<data_dir>/<uc>/inference_log/date=YYYY-MM-DD/`` (written to a
temporary name and renamed, so readers never see half a file). When the queue holds its
limit the record is dropped and counted rather than making a request wait.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from esteira.config import Settings
from esteira.usecase import UseCase

_log = logging.getLogger(__name__)
_STOP = object()
META_COLUMNS = ("request_id", "logged_at", "model_name", "model_version", "row")


@dataclass(frozen=True)
class Record:
    """One served request: its inputs as signature-ordered arrays and the predictions."""

    request_id: str
    logged_at: float  # epoch seconds, UTC
    model_name: str
    model_version: str
    inputs: dict[str, np.ndarray]
    predictions: Any


def record_bytes(record: Record) -> int:
    """About what a queued record holds in memory (a string cell counted as 64 bytes)."""
    arrays = [*record.inputs.values(), np.asarray(record.predictions)]
    return 256 + sum(a.nbytes if a.dtype != object else 64 * a.size for a in arrays)


def log_dir(settings: Settings, uc: UseCase) -> Path:
    return settings.data_dir / uc.name / "inference_log"


class InferenceLog:
    """A background writer; ``append`` never blocks, ``close`` flushes what is queued."""

    def __init__(
        self,
        root: Path,
        flush_seconds: float = 1.0,
        max_batch_rows: int = 50_000,
        max_queue_bytes: int = 64_000_000,
        on_drop: Callable[[], None] | None = None,
    ) -> None:
        self.root = Path(root)
        self.flush_seconds = flush_seconds
        self.max_batch_rows = max_batch_rows
        self.max_queue_bytes = max_queue_bytes
        self.queued_bytes = 0
        self._queue: queue.Queue = queue.Queue()
        self._bytes_lock = threading.Lock()
        self._on_drop = on_drop
        self._thread: threading.Thread | None = None
        self.dropped = 0
        self.written_rows = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="esteira-inference-log", daemon=True
            )
            self._thread.start()

    def append(self, record: Record) -> None:
        size = record_bytes(record)
        with self._bytes_lock:
            if self.queued_bytes + size > self.max_queue_bytes:
                self.dropped += 1
                full = True
            else:
                self.queued_bytes += size
                full = False
        if full:
            if self._on_drop is not None:
                self._on_drop()
            return
        self._queue.put_nowait((record, size))

    def close(self, timeout: float = 30.0) -> None:
        """Write everything queued so far, then stop the writer thread."""
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        pending: list[Record] = []
        rows = 0
        deadline = time.monotonic() + self.flush_seconds
        while True:
            try:
                item = self._queue.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                item = None
            if item is _STOP:
                self._flush(pending)
                return
            if item is not None:
                record, size = item
                with self._bytes_lock:
                    self.queued_bytes -= size
                pending.append(record)
                rows += len(next(iter(record.inputs.values()), ()))
            if rows >= self.max_batch_rows or time.monotonic() >= deadline:
                self._flush(pending)
                pending, rows = [], 0
                deadline = time.monotonic() + self.flush_seconds

    def _flush(self, records: list[Record]) -> None:
        if not records:
            return
        try:
            for day, table in _tables(records):
                self._write(day, table)
                self.written_rows += table.num_rows
        except Exception:  # the log must never take the server down; the loss is logged
            _log.exception("inference log: could not write %d records", len(records))

    def _write(self, day: str, table) -> None:
        import pyarrow.parquet as pq

        folder = self.root / f"date={day}"
        folder.mkdir(parents=True, exist_ok=True)
        name = f"part-{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet"
        tmp = folder / f".{name}.tmp"
        pq.write_table(table, tmp)
        tmp.rename(folder / name)


def _tables(records: list[Record]):
    """One Arrow table per (day, input columns): a model swap may change the signature."""
    import pyarrow as pa

    groups: dict[tuple[str, tuple[str, ...]], list[Record]] = {}
    for r in records:
        day = dt.datetime.fromtimestamp(r.logged_at, dt.UTC).strftime("%Y-%m-%d")
        groups.setdefault((day, tuple(r.inputs)), []).append(r)
    for (day, names), group in groups.items():
        counts = [len(r.inputs[names[0]]) if names else 0 for r in group]
        micros = np.array([int(r.logged_at * 1_000_000) for r in group], dtype="datetime64[us]")
        columns = {
            "request_id": pa.array(np.repeat([r.request_id for r in group], counts)),
            "logged_at": pa.array(np.repeat(micros, counts)),
            "model_name": pa.array(np.repeat([r.model_name for r in group], counts)),
            "model_version": pa.array(np.repeat([r.model_version for r in group], counts)),
            "row": pa.array(np.concatenate([np.arange(c, dtype=np.int32) for c in counts])),
        }
        for name in names:
            columns[name] = _input_column(np.concatenate([r.inputs[name] for r in group]))
        columns["prediction"] = _predictions(group)
        yield day, pa.table(columns)


def _input_column(values: np.ndarray):
    """A string column as strings and nulls: a request parsed by MLflow's rules may hold NaN
    (an empty CSV cell) or a number sent for a string."""
    import pyarrow as pa

    if values.dtype != object:
        return pa.array(values)
    try:
        return pa.array(values, type=pa.string(), from_pandas=True)  # str, None, NaN: in C
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([v if isinstance(v, str) else None if v is None or v != v else str(v)
                         for v in values.tolist()], type=pa.string())


def _predictions(group: list[Record]):
    import pyarrow as pa

    values = [np.asarray(r.predictions) for r in group]
    if all(v.ndim == 1 and v.dtype.kind in "biuf" for v in values):
        return pa.array(np.concatenate(values).astype(np.float64))
    return pa.array([str(x) for v in values for x in v.tolist()])


def read_inference_log(
    settings: Settings, uc: UseCase, start: dt.datetime, end: dt.datetime
) -> Any:
    """Rows logged in ``[start, end)`` (naive UTC) as a pandas DataFrame, oldest first.

    Columns: request_id, logged_at, model_name, model_version, row (position in the
    request), one column per model input, prediction (float64 for numeric outputs).
    """
    import pandas as pd
    import pyarrow.parquet as pq

    root = log_dir(settings, uc)
    frames = []
    day = start.date()
    while day <= end.date():
        folder = root / f"date={day.isoformat()}"
        if folder.is_dir():
            frames.extend(pq.read_table(p).to_pandas() for p in sorted(folder.glob("*.parquet")))
        day += dt.timedelta(days=1)
    if not frames:
        return pd.DataFrame(columns=[*META_COLUMNS, *uc.feature_names, "prediction"])
    log = pd.concat(frames, ignore_index=True)
    log["logged_at"] = log["logged_at"].astype("datetime64[us]")
    inside = (log["logged_at"] >= pd.Timestamp(start)) & (log["logged_at"] < pd.Timestamp(end))
    return (
        log[inside].sort_values(["logged_at", "request_id", "row"]).reset_index(drop=True)
    )
