"""Validate raw rows against the schema declared in the use case.

Rows arrive as strings (read from CSV); each column is parsed by its declared type and
checked for nullability, range and allowed categories, all vectorized. A row breaking
any rule goes to quarantine with every reason, e.g.
``monthly_charges: not a number ('n/a'); plan: unknown category 'gold'``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from esteira.usecase import ColumnRule, UseCase

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


def _parse(raw: pd.Series, rule: ColumnRule) -> tuple[pd.Series, pd.Series, str]:
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
        stamp = pd.to_datetime(raw, format="ISO8601", utc=True, errors="coerce")
        typed = stamp.dt.tz_localize(None).astype("datetime64[us]")
        return typed, present & typed.isna(), "not a timestamp"
    if rule.type == "bool":
        lowered = raw.str.strip().str.lower()
        typed = pd.Series(pd.NA, index=raw.index, dtype="boolean")
        typed[lowered.isin(_TRUE)] = True
        typed[lowered.isin(_FALSE)] = False
        return typed, present & typed.isna(), "not a boolean"
    return raw.astype("string"), pd.Series(False, index=raw.index), ""


def _checks(name: str, raw: pd.Series, rule: ColumnRule) -> tuple[pd.Series, list[tuple]]:
    """The typed column and (mask, message) pairs for broken rules; ``{}`` in a message
    stands for the raw value, filled in only for the rows that broke the rule."""
    typed, unparsable, why = _parse(raw, rule)
    problems: list[tuple] = [(unparsable, f"{name}: {why} ('{{}}')")]
    if not rule.nullable:
        problems.append((raw.isna(), f"{name}: missing value (not nullable)"))
    if rule.min is not None and rule.type in ("int", "float"):
        problems.append(((typed < rule.min).fillna(False), f"{name}: {{}} below min {rule.min:g}"))
    if rule.max is not None and rule.type in ("int", "float"):
        problems.append(((typed > rule.max).fillna(False), f"{name}: {{}} above max {rule.max:g}"))
    if rule.allowed is not None:
        unknown = raw.notna() & ~raw.isin(rule.allowed)
        allowed = ", ".join(rule.allowed)
        problems.append((unknown, f"{name}: unknown category '{{}}' (allowed: {allowed})"))
    return typed, problems


def validate(raw: pd.DataFrame, uc: UseCase, day: date | None = None) -> Validated:
    """Split raw event rows into typed good rows and bad rows with their reasons.

    Besides the column rules, a repeated (entity, timestamp) key is bad after its first
    occurrence, and with ``day`` an event stamped outside that day is bad (so daily
    intervals never overlap and reruns stay exact).
    """
    return validate_rows(raw, uc.schema_.columns, [uc.entity, uc.timestamp], day)


def validate_rows(
    raw: pd.DataFrame,
    rules: dict[str, ColumnRule],
    key: list[str],
    day: date | None = None,
) -> Validated:
    """:func:`validate` for any set of column rules; ``key[1]`` is the event time."""
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
        typed[name], problems = _checks(name, raw[name], rule)
        for mask, message in problems:
            note(mask, message, raw[name])
    keys = pd.DataFrame({k: typed[k] for k in key})
    note(keys.notna().all(axis=1) & keys.duplicated(), "duplicate key (" + ", ".join(key) + ")")
    if day is not None:
        stamp = typed[key[1]]
        start = pd.Timestamp(day)
        outside = stamp.notna() & ((stamp < start) | (stamp >= start + timedelta(days=1)))
        note(outside, f"{key[1]}: outside the file's day {day.isoformat()}")

    bad_mask = (reasons != "").to_numpy()
    good = pd.DataFrame(typed)[~bad_mask].reset_index(drop=True)
    bad = raw[bad_mask].reset_index(drop=True)
    bad[REASON] = reasons[bad_mask].to_numpy()
    return Validated(good, bad, np.flatnonzero(bad_mask))
