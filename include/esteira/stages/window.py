"""Which data a run sees: the days a person chose, else the run's data interval, else the
newest days of a table (a run started by an Asset event has no data interval).

Never `now()`: a rerun of the same run sees the same data (STYLE.md, rule 5).
"""

from __future__ import annotations

import dataclasses
import datetime as dt


class WindowError(ValueError):
    """The requested window is malformed."""


class NoDataYet(LookupError):
    """There is no table, or no row, to take the newest days from."""


@dataclasses.dataclass(frozen=True)
class RunWindow:
    """``[start, end)`` in whole days."""

    start: dt.date
    end: dt.date

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise WindowError(f"interval_end {self.end} must be after interval_start {self.start}")

    @property
    def start_at(self) -> dt.datetime:
        return dt.datetime.combine(self.start, dt.time())

    @property
    def end_at(self) -> dt.datetime:
        return dt.datetime.combine(self.end, dt.time())

    def __str__(self) -> str:
        return f"[{self.start}, {self.end})"


def _date(value: str, name: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise WindowError(f"param {name}={value!r} is not a date (YYYY-MM-DD)") from None


def requested_window(
    interval_start: str | None,
    interval_end: str | None,
    data_start: dt.datetime | None,
    data_end: dt.datetime | None,
) -> RunWindow | None:
    """The Params ``interval_start``/``interval_end`` when given, else the data interval;
    None when the run has neither (a manual or Asset-triggered run)."""
    if interval_start or interval_end:
        if not (interval_start and interval_end):
            raise WindowError("give both interval_start and interval_end, or neither")
        return RunWindow(_date(interval_start, "interval_start"), _date(interval_end, "interval_end"))
    if data_start is None or data_end is None:
        return None
    start, end = data_start.date(), data_end.date()
    if start == end:
        start = end - dt.timedelta(days=1)
    return RunWindow(start, end)


def job_window(arguments: dict) -> RunWindow | None:
    """`requested_window` of a step job's arguments (the run's ``params`` and its
    ``data_interval`` as ISO timestamps), as `EsteiraStepOperator` passes them."""
    params = arguments.get("params") or {}
    interval = arguments.get("data_interval") or {}
    start, end = (dt.datetime.fromisoformat(interval[k]) if interval.get(k) else None for k in ("start", "end"))
    return requested_window(params.get("interval_start"), params.get("interval_end"), start, end)


def require_window(window: RunWindow | None) -> RunWindow:
    if window is None:
        raise WindowError(
            "this run has no data interval (a manual trigger): set interval_start and interval_end"
        )
    return window


def latest_window(table_uri: str, timestamp: str, days: int) -> RunWindow:
    """The last ``days`` days present in the table at ``table_uri``."""
    from esteira import tables

    if not tables.exists(table_uri):
        raise NoDataYet(f"no feature table at {table_uri} yet: run a feature refresh first")
    newest = tables.newest_value(table_uri, timestamp)
    if newest is None:
        raise NoDataYet(f"{table_uri} is empty: nothing to process yet")
    end = newest.date() + dt.timedelta(days=1)
    return RunWindow(end - dt.timedelta(days=days), end)
