"""Validate raw rows against the schema declared in the use case.

Rows arrive as strings (read from CSV) or typed (Parquet, Delta, SQL); each column is
parsed by its declared type and checked for nullability, range and allowed categories,
all vectorized. A row breaking any rule goes to quarantine with every reason, e.g.
``monthly_charges: not a number ('n/a'); plan: unknown category 'gold'``.

A timestamp may be a datetime, a date, an integer year or a ``YYYY-MM`` period; at a
period grain it is floored to its period's start, and a value coarser than the grain
(a year at ``grain: month``) is a bad row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from esteira.features.definitions import period_start
from esteira.usecase import ColumnRule, Grain, UseCase

REASON = "reason"
_TRUE = ("true", "1", "yes", "t", "y")
_FALSE = ("false", "0", "no", "f", "n")


class SchemaMismatch(ValueError):
    """A whole file does not fit the schema (missing columns): no row can be judged."""


@dataclass(frozen=True)
class Validated:
    """Typed good rows, and bad rows as their raw strings plus a ``reason`` column.

    ``bad_index`` holds the positions of the bad rows in the input, so callers can
    trace them back to their line in the file.
    """

    good: pd.DataFrame
    bad: pd.DataFrame
    bad_index: np.ndarray


def read_raw(path: Path, columns: list[str]) -> pd.DataFrame:
    """Read a CSV as strings; only empty cells are missing ('n/a' stays a value to judge)."""
    raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    missing = [c for c in columns if c not in raw.columns]
    if missing:
        raise SchemaMismatch(f"{path}: columns missing from the file: {', '.join(missing)}")
    return raw[columns]


# The longest text that is coarser than the grain: "2026-03" (7) is a month, "2026" (4)
# a year; a date is as fine as grain event needs.
_COARSER_UP_TO = {"event": 7, "day": 7, "week": 7, "month": 4}


def parse_timestamps(raw: pd.Series, grain: Grain = "event") -> tuple[pd.Series, pd.Series]:
    """Naive-UTC ``datetime64[us]`` stamps floored to the grain's period, and the mask of
    present values that do not parse at ``grain``."""
    present = raw.notna()
    coarser = pd.Series(False, index=raw.index)
    if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
        whole = raw.where(np.isfinite(raw.astype("float64")) & (raw.astype("float64") % 1 == 0))
        raw = whole.astype("Int64").astype("string")
        coarser = present & (grain != "year")
    elif raw.dtype in (object, "string") and grain in _COARSER_UP_TO:
        try:
            coarser = (raw.str.len() <= _COARSER_UP_TO[grain]).fillna(False).astype(bool)
        except AttributeError:  # dates, not text
            pass
    stamp = pd.to_datetime(raw, format="ISO8601", utc=True, errors="coerce")
    typed = period_start(stamp.dt.tz_localize(None).astype("datetime64[us]"), grain)
    typed = typed.mask(coarser)
    return typed, present & typed.isna()


def _parse(raw: pd.Series, rule: ColumnRule, grain: Grain = "event") -> tuple[pd.Series, pd.Series, str]:
    """The typed column, the mask of present values that failed to parse, and why."""
    present = raw.notna()
    if rule.type in ("int", "float"):
        number = pd.to_numeric(raw, errors="coerce")
        finite = np.isfinite(number.to_numpy(dtype=np.float64, na_value=np.nan))
        if rule.type == "float":
            return number.astype("float64"), present & ~finite, "not a number"
        whole = finite & (np.mod(np.where(finite, number, 0), 1) == 0)
        typed = number.where(whole).astype("Int64")
        return typed, present & ~whole, "not an integer"
    if rule.type == "timestamp":
        typed, unparsable = parse_timestamps(raw, grain)
        return typed, unparsable, "not a timestamp" + ("" if grain == "event" else f" at grain {grain}")
    if rule.type == "bool":
        if pd.api.types.is_bool_dtype(raw):
            typed = raw.astype("boolean")
            return typed, pd.Series(False, index=raw.index), ""
        lowered = raw.astype("string").str.strip().str.lower()
        typed = pd.Series(pd.NA, index=raw.index, dtype="boolean")
        typed[lowered.isin(_TRUE).fillna(False).astype(bool)] = True
        typed[lowered.isin(_FALSE).fillna(False).astype(bool)] = False
        return typed, present & typed.isna(), "not a boolean"
    return raw.astype("string"), pd.Series(False, index=raw.index), ""


def _checks(
    name: str, raw: pd.Series, rule: ColumnRule, grain: Grain = "event"
) -> tuple[pd.Series, list[tuple]]:
    """The typed column and (mask, message) pairs for broken rules; ``{}`` in a message
    stands for the raw value, filled in only for the rows that broke the rule."""
    typed, unparsable, why = _parse(raw, rule, grain)
    problems: list[tuple] = [(unparsable, f"{name}: {why} ('{{}}')")]
    if not rule.nullable:
        problems.append((raw.isna(), f"{name}: missing value (not nullable)"))
    if rule.min is not None and rule.type in ("int", "float"):
        problems.append(((typed < rule.min).fillna(False), f"{name}: {{}} below min {rule.min:g}"))
    if rule.max is not None and rule.type in ("int", "float"):
        problems.append(((typed > rule.max).fillna(False), f"{name}: {{}} above max {rule.max:g}"))
    if rule.allowed is not None:
        unknown = raw.notna() & ~raw.astype("string").isin(rule.allowed).fillna(False).astype(bool)
        allowed = ", ".join(rule.allowed)
        problems.append((unknown, f"{name}: unknown category '{{}}' (allowed: {allowed})"))
    return typed, problems


def validate(raw: pd.DataFrame, uc: UseCase, day: date | None = None) -> Validated:
    """Split raw event rows into typed good rows and bad rows with their reasons.

    Besides the column rules, a repeated (entity, timestamp) key is bad after its first
    occurrence, and with ``day`` an event stamped outside that day is bad (so daily
    intervals never overlap and reruns stay exact).
    """
    return validate_rows(raw, uc.schema_.columns, [uc.entity, uc.timestamp], day, uc.grain)


def validate_rows(
    raw: pd.DataFrame,
    rules: dict[str, ColumnRule],
    key: list[str],
    day: date | None = None,
    grain: Grain = "event",
    within: tuple[datetime, datetime] | None = None,
) -> Validated:
    """:func:`validate` for any set of column rules; ``key[1]`` is the event time, and an
    event stamped outside ``within`` (``[start, end)``) is bad too."""
    raw = raw.reset_index(drop=True)
    reasons = pd.Series("", index=raw.index, dtype=object)

    def note(mask: pd.Series, message: str, values: pd.Series | None = None) -> None:
        mask = np.asarray(mask, dtype=bool)
        if not mask.any():
            return
        text = message
        if values is not None and "{}" in message:
            before, after = message.split("{}")
            text = before + values[mask].astype(str) + after
        current = reasons[mask]
        reasons[mask] = current.where(current == "", current + "; ") + text

    typed: dict[str, pd.Series] = {}
    for name, rule in rules.items():
        typed[name], problems = _checks(name, raw[name], rule, grain)
        for mask, message in problems:
            note(mask, message, raw[name])
    keys = pd.DataFrame({k: typed[k] for k in key})
    note(keys.notna().all(axis=1) & keys.duplicated(), "duplicate key (" + ", ".join(key) + ")")
    if day is not None:
        stamp = typed[key[1]]
        start = pd.Timestamp(day)
        outside = stamp.notna() & ((stamp < start) | (stamp >= start + timedelta(days=1)))
        note(outside, f"{key[1]}: outside the file's day {day.isoformat()}")
    if within is not None:
        stamp = typed[key[1]]
        outside = stamp.notna() & ((stamp < pd.Timestamp(within[0])) | (stamp >= pd.Timestamp(within[1])))
        note(outside, f"{key[1]}: outside [{within[0]}, {within[1]})")

    bad_mask = (reasons != "").to_numpy()
    good = pd.DataFrame(typed)[~bad_mask].reset_index(drop=True)
    bad = raw[bad_mask].reset_index(drop=True)
    bad[REASON] = reasons[bad_mask].to_numpy()
    return Validated(good, bad, np.flatnonzero(bad_mask))
