"""Which data a run sees: from its Params when a person chose, else its data interval.

Never `now()`: a rerun of the same run sees the same data (STYLE.md, rule 5).
"""

from __future__ import annotations

import datetime as dt


class IntervalError(ValueError):
    pass


def _date(value: str, name: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise IntervalError(f"param {name}={value!r} is not a date (YYYY-MM-DD)") from None


def resolve_interval(params: dict, context: dict) -> tuple[dt.date, dt.date]:
    """[start, end) in whole days; Params ``interval_start``/``interval_end`` win."""
    start_param = params.get("interval_start") or ""
    end_param = params.get("interval_end") or ""
    if start_param or end_param:
        if not (start_param and end_param):
            raise IntervalError("give both interval_start and interval_end, or neither")
        start, end = _date(start_param, "interval_start"), _date(end_param, "interval_end")
    else:
        begin = context.get("data_interval_start")
        finish = context.get("data_interval_end")
        if begin is None or finish is None:
            raise IntervalError(
                "this run has no data interval (a manual trigger): set interval_start and interval_end"
            )
        start, end = begin.date(), finish.date()
        if start == end:
            start = end - dt.timedelta(days=1)
    if end <= start:
        raise IntervalError(f"interval_end {end} must be after interval_start {start}")
    return start, end


def interval_or_latest(params: dict, context: dict, table_uri: str, timestamp: str, days: int):
    """Like `resolve_interval`, but a run started by an Asset event (no data interval)
    takes the last ``days`` days present in the table at ``table_uri``."""
    if params.get("interval_start") or params.get("interval_end") or context.get("data_interval_start"):
        return resolve_interval(params, context)
    import pyarrow.compute as pc
    from deltalake import DeltaTable

    newest = pc.max(DeltaTable(table_uri).to_pyarrow_table(columns=[timestamp])[timestamp]).as_py()
    if newest is None:
        raise IntervalError(f"{table_uri} is empty: nothing to process yet")
    end = newest.date() + dt.timedelta(days=1)
    return end - dt.timedelta(days=days), end
