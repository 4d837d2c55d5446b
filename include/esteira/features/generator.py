"""Deterministic synthetic landing data for the demo and the tests (no downloads).

Each day is drawn from its own numpy Generator seeded by (seed, stream, day index), so
any sub-range produces exactly the same files as the full range, byte for byte. Entity
traits (plan, habits, risk) are drawn once from (seed, 0). Labels are computed from the
clean, pre-drift values, so the drift switch changes what models see but not the truth
behind it, which is what monitoring has to notice.

Two kinds:

- ``churn``: subscription customers with 0..2 activity events a day; the label (cancels
  within the next days) depends on plan, support tickets, payment delays, a per-customer
  trend in session minutes and the monthly charge.
- ``demand``: one record per store and day at opening time; the label is the units sold
  that day (a regression target), driven by store size, promotions, price and weather.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from esteira.usecase import GeneratorSpec, UseCase

_TRAITS, _EVENTS, _LABELS, _BAD, _DRIFT = 0, 1, 2, 3, 4
_DAY_SECONDS = 86_400
_CYCLE_DAYS = 28


@dataclass(frozen=True)
class _Day:
    """One day of clean events (typed columns, NaN/None for missing) and their labels."""

    columns: dict[str, np.ndarray]
    labels: np.ndarray


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _stamps(day: date, seconds: np.ndarray) -> np.ndarray:
    return np.datetime64(day.isoformat(), "s") + seconds.astype("timedelta64[s]")


class _Churn:
    _PLANS = np.array(["basic", "standard", "premium"])
    _REGIONS = np.array(["north", "south", "east", "west"])
    _DEVICES = np.array(["mobile", "desktop", "tv"])

    def __init__(self, spec: GeneratorSpec) -> None:
        rng = np.random.default_rng([spec.seed, _TRAITS])
        n = spec.entities
        self.seed = spec.seed
        self.ids = np.arange(1, n + 1, dtype=np.int64) + 10_000
        self.plan = rng.choice(3, n, p=[0.5, 0.3, 0.2])
        self.region = rng.choice(4, n, p=[0.3, 0.25, 0.25, 0.2])
        self.device = rng.choice(3, n, p=[0.55, 0.3, 0.15])
        self.charges = np.array([29.9, 54.9, 89.9])[self.plan] * rng.uniform(0.8, 1.3, n)
        self.activity = rng.uniform(0.15, 0.85, n)
        self.ticket_rate = rng.gamma(0.7, 0.12, n)
        late = rng.random(n) < 0.25
        self.delay_mean = np.where(late, rng.uniform(4, 30, n), 0.2)
        self.minutes = rng.lognormal(np.log(35), 0.5, n)
        self.trend = rng.normal(0, 0.01, n)
        # Each customer's usage swings over a 4-week cycle of its own phase: a signal per
        # customer, while the population's distribution stays the same from day to day.
        self.phase = rng.integers(0, _CYCLE_DAYS, n)
        self.risk = (
            -3.0
            + np.array([0.6, 0.0, -0.6])[self.plan]
            + 9.0 * self.ticket_rate
            + 0.09 * self.delay_mean
            - 100.0 * self.trend
            + 0.02 * (self.charges - 55)
        )

    def day(self, index: int, day: date) -> _Day:
        rng = np.random.default_rng([self.seed, _EVENTS, index])
        n = len(self.ids)
        slots = rng.random((2, n)) < self.activity
        who = np.concatenate([np.flatnonzero(slots[0]), np.flatnonzero(slots[1])])
        half = np.concatenate([np.zeros(slots[0].sum()), np.ones(slots[1].sum())])
        seconds = ((half + rng.random(len(who))) * (_DAY_SECONDS // 2)).astype(np.int64)
        k = len(who)
        device = np.where(rng.random(k) < 0.8, self.device[who], rng.choice(3, k))
        device_name = self._DEVICES[device].astype(object)
        device_name[rng.random(k) < 0.02] = None
        charges = np.round(self.charges[who] * (1 + rng.normal(0, 0.01, k)), 2)
        cycle = (index + self.phase[who]) % _CYCLE_DAYS - _CYCLE_DAYS / 2
        level = self.minutes[who] * np.exp(self.trend[who] * cycle)
        minutes = np.round(level * rng.lognormal(0, 0.35, k), 1)
        minutes[rng.random(k) < 0.03] = np.nan
        tickets = rng.poisson(self.ticket_rate[who])
        delay = np.where(self.delay_mean[who] > 1, rng.poisson(self.delay_mean[who]), 0)
        logit = self.risk[who] + 0.25 * tickets + 0.01 * delay + rng.normal(0, 0.3, k)
        label = (np.random.default_rng([self.seed, _LABELS, index]).random(k) < _sigmoid(logit))
        columns = {
            "customer_id": self.ids[who],
            "event_ts": _stamps(day, seconds),
            "plan": self._PLANS[self.plan[who]],
            "region": self._REGIONS[self.region[who]],
            "device": device_name,
            "monthly_charges": charges,
            "session_minutes": minutes,
            "support_tickets": tickets,
            "payment_delay_days": delay,
        }
        return _Day(columns, label.astype(np.int64))


class _Demand:
    _REGIONS = np.array(["north", "south", "east", "west"])
    _SIZES = np.array(["small", "medium", "large"])
    _WEEKDAY = np.array([1.0, 0.95, 0.95, 1.0, 1.15, 1.35, 1.2])

    def __init__(self, spec: GeneratorSpec) -> None:
        rng = np.random.default_rng([spec.seed, _TRAITS])
        n = spec.entities
        self.seed = spec.seed
        self.ids = np.arange(1, n + 1, dtype=np.int64)
        self.region = rng.choice(4, n)
        self.size = rng.choice(3, n, p=[0.4, 0.4, 0.2])
        self.base = np.array([80.0, 150.0, 260.0])[self.size] * rng.uniform(0.8, 1.2, n)
        self.price = rng.uniform(8, 14, n)
        self.opening = rng.integers(0, 60, n) * 60 + 8 * 3600
        self.climate = np.array([4.0, 14.0, 9.0, 11.0])[self.region]

    def day(self, index: int, day: date) -> _Day:
        rng = np.random.default_rng([self.seed, _EVENTS, index])
        n = len(self.ids)
        weekday = self._WEEKDAY[day.weekday()]
        promo = (rng.random(n) < 0.15).astype(np.int64)
        price = np.round(self.price * (1 - 0.2 * promo) * (1 + rng.normal(0, 0.02, n)), 2)
        season = 6 * np.sin(2 * np.pi * (index + 30) / 365)
        temperature = np.round(self.climate + season + rng.normal(0, 3, n), 1)
        temperature[rng.random(n) < 0.05] = np.nan
        yesterday = self._WEEKDAY[(day.weekday() - 1) % 7]
        footfall = rng.poisson(self.base * 3 * yesterday)
        demand = (
            self.base
            * weekday
            * (1 + 0.6 * promo)
            * (price / self.price) ** -1.2
            * (1 + 0.01 * (np.nan_to_num(temperature, nan=10.0) - 10))
            * rng.lognormal(0, 0.12, n)
        )
        columns = {
            "store_id": self.ids,
            "opening_ts": _stamps(day, self.opening),
            "region": self._REGIONS[self.region],
            "store_size": self._SIZES[self.size],
            "promo": promo,
            "price": price,
            "temperature": temperature,
            "footfall_prev_day": footfall,
        }
        return _Day(columns, np.round(demand, 1))


_KINDS = {"churn": _Churn, "demand": _Demand}


def _apply_drift(uc: UseCase, columns: dict[str, np.ndarray], rng: np.random.Generator) -> None:
    """Numeric columns scale by (1 + shift); a share of categorical rows moves to the last
    allowed value. Missing values stay missing; other columns are untouched."""
    for name, shift in uc.source.generator.drift.columns.items():
        rule = uc.schema_.columns[name]
        values = columns[name]
        if rule.allowed:
            move = (rng.random(len(values)) < shift) & pd.notna(values)
            values = values.astype(object)
            values[move] = rule.allowed[-1]
        elif rule.type == "int":
            values = np.round(values * (1 + shift)).astype(np.int64)
        else:
            values = np.round(values * (1 + shift), 2)
        columns[name] = values


def _as_text(values: np.ndarray, column_type: str) -> pd.Series:
    series = pd.Series(values)
    if column_type == "timestamp":
        text = pd.Series(np.datetime_as_string(values.astype("datetime64[s]"), unit="s"))
    elif column_type == "float":
        text = series.astype(np.float64).round(2).astype(str)
    else:
        text = series.astype(str)
    return text.where(series.notna(), None).astype(object)


def _inject_bad_rows(uc: UseCase, frame: pd.DataFrame, rng: np.random.Generator) -> None:
    """Corrupt a share of rows the way upstream systems do: text in a numeric column, a
    missing key, an out-of-range value, an unknown category."""
    rules = uc.schema_.columns
    numeric = [c for c, r in rules.items() if r.type in ("int", "float") and c != uc.entity]
    ranged = [c for c in numeric if rules[c].max is not None or rules[c].min is not None]
    categorical = [c for c, r in rules.items() if r.allowed]
    picks = np.flatnonzero(rng.random(len(frame)) < uc.source.generator.bad_row_share)
    kinds = rng.integers(0, 4, len(picks))
    choice = rng.random(len(picks))

    def corrupt(kind: int, candidates: list[str], value_of) -> None:
        rows = picks[kinds == kind]
        if not candidates or len(rows) == 0:
            return
        which = (choice[kinds == kind] * len(candidates)).astype(int)
        for position, column in enumerate(candidates):
            chosen = rows[which == position]
            frame.loc[chosen, column] = value_of(column)

    def out_of_range(column: str) -> str:
        rule = rules[column]
        return str(int(rule.max * 3 + 7)) if rule.max is not None else str(int(rule.min) - 5)

    corrupt(0, numeric, lambda column: "n/a")
    corrupt(1, [uc.entity], lambda column: None)
    corrupt(2, ranged, out_of_range)
    corrupt(3, categorical, lambda column: "unknown")


def _write(path: Path, frame: pd.DataFrame) -> None:
    """Write atomically, so a reader never sees half a file."""
    partial = path.with_name(path.name + ".partial")
    frame.to_csv(partial, index=False, lineterminator="\n", na_rep="")
    os.replace(partial, path)


def generator_days(spec: GeneratorSpec) -> tuple[date, date]:
    """The generator's whole range [start, end)."""
    return spec.start, spec.start + timedelta(days=spec.days)


def generate_landing(
    uc: UseCase,
    landing_dir: Path,
    start: date | None = None,
    end: date | None = None,
    drift: bool = True,
) -> list[Path]:
    """Write one events and one labels CSV per day in [start, end) into ``landing_dir``,
    the use case's folder (``settings.landing_dir / uc.source.landing``).

    Defaults to the generator's whole range; days outside it are refused. A labels file
    dated D holds the labels of the events of D - ``label.delay_days``. Reruns write the
    same bytes. Returns the written paths (events, then labels, per day).
    """
    spec = uc.source.generator
    if spec is None:
        raise ValueError(f"use case '{uc.name}' has no source.generator section")
    first, last = generator_days(spec)
    start, end = start or first, end or last
    if start < first or end > last:
        raise ValueError(f"[{start}, {end}) is outside the generator's range [{first}, {last})")
    simulator = _KINDS[spec.kind](spec)
    folder = Path(landing_dir)
    folder.mkdir(parents=True, exist_ok=True)
    columns = list(uc.schema_.columns)
    label_columns = [uc.entity, uc.timestamp, uc.label.column]
    written: list[Path] = []
    day = start
    while day < end:
        index = (day - first).days
        events = simulator.day(index, day)
        values = dict(events.columns)
        if drift and spec.drift is not None and day >= spec.drift.start:
            _apply_drift(uc, values, np.random.default_rng([spec.seed, _DRIFT, index]))
        frame = pd.DataFrame(
            {c: _as_text(values[c], uc.schema_.columns[c].type) for c in columns}
        )
        _inject_bad_rows(uc, frame, np.random.default_rng([spec.seed, _BAD, index]))
        order = np.lexsort((values[uc.entity], values[uc.timestamp]))
        events_path = folder / uc.source.events_pattern.format(date=day.isoformat())
        _write(events_path, frame.iloc[order])
        written.append(events_path)

        label_day = day - timedelta(days=uc.label.delay_days)
        labels = pd.DataFrame(columns=label_columns)
        if label_day >= first:
            known = simulator.day((label_day - first).days, label_day)
            labels = pd.DataFrame(
                {
                    uc.entity: known.columns[uc.entity],
                    uc.timestamp: _as_text(known.columns[uc.timestamp], "timestamp"),
                    uc.label.column: known.labels,
                }
            )
            labels = labels.iloc[np.lexsort((known.columns[uc.entity], known.columns[uc.timestamp]))]
        labels_path = folder / uc.source.labels_pattern.format(date=day.isoformat())
        _write(labels_path, labels)
        written.append(labels_path)
        day += timedelta(days=1)
    return written
