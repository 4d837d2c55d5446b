"""Feature functions, registered by name and referenced from the use-case YAML.

A feature function receives a :class:`Batch` and the :class:`FeatureDef` and returns one
value per target row (``batch.target``, validated events), in that order. ``batch.data``
holds those rows plus the events of the lookback, sorted by entity and event time, so
windowed aggregates can look back but never forward. Only the entity, the timestamp and
the sources of windowed features are kept in the history.

Windows are durations (``7d``, ``12h``, ``2w``), periods of the use case's grain
(``3 periods``: three months at ``grain: month``; a day at ``grain: event``) or events
of the entity (``2 events``). ``closed: right`` is ``(t - w, t]``, the row itself
included; ``closed: left`` is ``(t - w, t)``: strictly before the row's own time (and,
for periods, before its period), so "tickets before this event" never sees this event.
N periods or N events are always N of them: with ``closed: left``, the N before the
row's own (``3 periods`` in July: April, May, June); with ``right``, May, June, July.

Registering your own function::

    from esteira.features.definitions import Batch, register

    @register("rolling_min")
    def rolling_min(batch: Batch, feature: FeatureDef) -> np.ndarray:
        start, end = batch.window_bounds(feature.window, feature.closed)
        return batch.reduce(np.fmin, batch.values(feature.source), start, end)

Put the module in an installed package and expose it under the entry-point group
``esteira.features`` (``[project.entry-points."esteira.features"] mine = "pkg.features"``);
unknown names are looked up there before failing. The refresh reads the history the
longest window needs before the interval (from ``start_date`` for event windows).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Literal

import numpy as np
import pandas as pd

from esteira.usecase import WINDOW, FeatureDef, Grain, UseCase

FeatureFunction = Callable[["Batch", FeatureDef], "np.ndarray | pd.Series"]

_REGISTRY: dict[str, FeatureFunction] = {}
_ENTRY_POINT_GROUP = "esteira.features"


def register(name: str) -> Callable[[FeatureFunction], FeatureFunction]:
    """Register a feature function under ``name`` (the YAML's ``function`` key)."""

    def decorate(function: FeatureFunction) -> FeatureFunction:
        if name in _REGISTRY and _REGISTRY[name] is not function:
            raise ValueError(f"feature function '{name}' is already registered")
        _REGISTRY[name] = function
        return function

    return decorate


def get_function(name: str) -> FeatureFunction:
    """The function registered as ``name``; loads ``esteira.features`` entry points on a miss."""
    if name not in _REGISTRY:
        for entry_point in entry_points(group=_ENTRY_POINT_GROUP):
            entry_point.load()
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        raise KeyError(f"no feature function '{name}' (registered: {known})")
    return _REGISTRY[name]


def check_definitions(uc: UseCase) -> None:
    """Fail early, naming the feature, when a definition cannot be computed."""
    for feature in uc.features.definitions:
        try:
            get_function(feature.function)
        except KeyError as exc:
            raise ValueError(f"features.definitions '{feature.name}': {exc.args[0]}") from None
        windowed = feature.function.startswith("rolling_") or feature.function == "lag"
        if windowed and feature.window is None:
            raise ValueError(f"features.definitions '{feature.name}': needs a window")
        if feature.function == "lag" and parse_window(feature.window).count < 1:
            raise ValueError(f"features.definitions '{feature.name}': a lag reaches at least 1 back")
        _check_label_is_known(uc, feature)


# The shortest and longest period of each grain, in days: a window of periods reaches back
# at least the first, a delay of periods lasts at most the second.
_PERIOD_DAYS = {"event": (1, 1), "day": (1, 1), "week": (7, 7), "month": (28, 31), "year": (365, 366)}


def _check_label_is_known(uc: UseCase, feature: FeatureDef) -> None:
    """A feature of the label column may only read labels known at the row's time: with
    ``label.delay`` D, only a lag reaching at least D back (a rolling window or an events lag
    would read labels that arrive later: a leak into training that serving cannot repeat)."""
    if feature.source != uc.label.column or not uc.labels_from_events:
        return
    delay_text = uc.label.delay_window
    delay = parse_window(delay_text)
    if delay.count == 0:
        return
    window = parse_window(feature.window) if feature.function == "lag" and feature.window else None
    if window is None or window.unit == "events":
        known = False
    elif window.unit == delay.unit:
        known = window.count >= delay.count
    else:  # periods against a duration: the shortest reach against the longest delay
        shortest, longest = _PERIOD_DAYS[uc.grain]
        delay_days = delay.count / 86_400 if delay.unit == "seconds" else delay.count * longest
        known = (window.count / 86_400 if window.unit == "seconds" else window.count * shortest) >= delay_days
    if not known:
        raise ValueError(
            f"features.definitions '{feature.name}': reads the label '{uc.label.column}', known "
            f"{delay_text} after its row (label.delay), so only a lag of at least {delay_text} sees "
            "labels already known; this one would read labels that arrive later (a leak). "
            f"Use function: lag with window: {delay_text} or more, or remove the feature"
        )


_SECONDS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 7 * 86_400}
_EPOCH = np.datetime64("1970-01-01", "D")


@dataclass(frozen=True)
class Window:
    """A parsed window: ``count`` seconds, periods of the grain, or events of the entity."""

    count: int
    unit: Literal["seconds", "periods", "events"]


def parse_window(text: str) -> Window:
    """``'7d'`` -> 604800 seconds; ``'3 periods'``; ``'2 events'``."""
    match = WINDOW.fullmatch(text)
    if match is None:
        raise ValueError(f"window {text!r}: use '7d', '12h', '2w', '3 periods' or '2 events'")
    count, unit = int(match[1]), match[2]
    if unit in _SECONDS:
        return Window(count * _SECONDS[unit], "seconds")
    return Window(count, "periods" if unit.startswith("period") else "events")


def window_days(window: str | None) -> float:
    """A duration window in days (0 without a window), for pandas' own rolling windows."""
    if window is None:
        return 0
    parsed = parse_window(window)
    if parsed.unit != "seconds":
        raise ValueError(f"window {window!r} is not a duration")
    return parsed.count / 86_400


def period_ordinals(stamps: np.ndarray, grain: Grain) -> np.ndarray:
    """The period number of each ``datetime64`` stamp: consecutive periods differ by 1
    (days for ``event`` and ``day``, ISO weeks from Monday, calendar months, years)."""
    days = stamps.astype("datetime64[D]")
    if grain == "week":
        return ((days - _EPOCH).astype(np.int64) + 3) // 7
    if grain == "month":
        return days.astype("datetime64[M]").astype(np.int64)
    if grain == "year":
        return days.astype("datetime64[Y]").astype(np.int64)
    return (days - _EPOCH).astype(np.int64)


def period_start(stamps: pd.Series, grain: Grain) -> pd.Series:
    """Each stamp floored to the start of its period (unchanged at ``grain: event``)."""
    if grain == "event":
        return stamps
    values = stamps.to_numpy().astype("datetime64[D]")
    if grain == "week":
        values = values - ((values - _EPOCH).astype(np.int64) + 3) % 7
    elif grain in ("month", "year"):
        values = values.astype("datetime64[M]" if grain == "month" else "datetime64[Y]")
    return pd.Series(values.astype("datetime64[us]"), index=stamps.index)


def period_floor(when: dt.datetime, grain: Grain) -> dt.datetime:
    """The start of ``when``'s period (`period_start` of one stamp; weeks start on Monday)."""
    if grain == "event":
        return when
    day = when.replace(hour=0, minute=0, second=0, microsecond=0)
    if grain == "week":
        return day - dt.timedelta(days=day.weekday())
    if grain == "month":
        return day.replace(day=1)
    if grain == "year":
        return day.replace(month=1, day=1)
    return day


def shift_back(when: dt.datetime, window: str, grain: Grain) -> dt.datetime | None:
    """``when`` minus ``window`` (periods counted in the grain); None for event windows,
    which have no bound in time."""
    parsed = parse_window(window)
    if parsed.unit == "events":
        return None
    if parsed.unit == "seconds":
        return when - dt.timedelta(seconds=parsed.count)
    if grain in ("month", "year"):
        months = parsed.count * (12 if grain == "year" else 1)
        index = when.year * 12 + when.month - 1 - months
        return when.replace(year=index // 12, month=index % 12 + 1, day=1)
    return when - dt.timedelta(days=parsed.count * (7 if grain == "week" else 1))


def history_start(uc: UseCase, start: dt.datetime) -> dt.datetime:
    """The earliest time the windows of rows stamped at or after ``start`` read: ``start``
    without windows, ``start_date`` when a window counts events."""
    earliest = start
    for feature in uc.features.definitions:
        if feature.window:
            back = shift_back(start, feature.window, uc.grain)
            floor = dt.datetime.combine(uc.start_date, dt.time())
            earliest = min(earliest, floor if back is None else back)
    return earliest


def history_columns(uc: UseCase) -> list[str]:
    """The columns a :class:`Batch` keeps from past rows: keys and windowed sources."""
    windowed = [f.source for f in uc.features.definitions if f.window and f.source]
    return list(dict.fromkeys([uc.entity, uc.timestamp, *windowed]))


def _fold(codes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    # 2**34 (seconds: ~540 years) keeps the entity code above any time offset, so one
    # sorted int64 holds (entity, time).
    return codes.astype(np.int64) * np.int64(2**34) + (offsets - offsets.min(initial=0))


@dataclass(frozen=True)
class Batch:
    """Target rows (``target``, every column) and the history their windows need.

    ``data`` holds the windowed columns of history and target rows together, sorted by
    (entity, time); ``rows`` are the positions of the target rows in ``data``, and
    ``target`` lists the target rows in that same order. ``keys`` fold (entity code,
    seconds) into one sortable int64, ``period_keys`` (entity code, period of ``grain``).
    """

    data: pd.DataFrame
    rows: np.ndarray
    target: pd.DataFrame
    keys: np.ndarray
    period_keys: np.ndarray = field(repr=False)
    first: np.ndarray = field(repr=False)

    @classmethod
    def build(
        cls, history: pd.DataFrame, target: pd.DataFrame, entity: str, timestamp: str,
        grain: Grain = "event",
    ) -> Batch:
        """``history`` has the entity, the timestamp and the windowed source columns."""
        data = pd.concat([history, target[list(history.columns)]], ignore_index=True)
        codes, _ = pd.factorize(data[entity], sort=True)
        stamps = data[timestamp].to_numpy().astype("datetime64[us]")
        order = np.lexsort((stamps.astype(np.int64), codes))
        data = data.iloc[order].reset_index(drop=True)
        is_target = order >= len(history)
        codes, stamps = codes[order], stamps[order]
        rows = np.flatnonzero(is_target)
        positions = order[is_target] - len(history)
        return cls(
            data, rows, target.iloc[positions].reset_index(drop=True),
            keys=_fold(codes, stamps.astype(np.int64) // 1_000_000),
            period_keys=_fold(codes, period_ordinals(stamps, grain)),
            first=np.searchsorted(codes, codes[rows], side="left"),
        )

    def values(self, column: str | None) -> np.ndarray:
        """A column as float64 with NaN for missing (ones when ``column`` is None)."""
        if column is None:
            return np.ones(len(self.data))
        return pd.to_numeric(self.data[column]).to_numpy(dtype=np.float64, na_value=np.nan)

    def window_bounds(self, window: str, closed: str = "right") -> tuple[np.ndarray, np.ndarray]:
        """Row ranges [start, end) of each target row's window: ``(t - w, t]`` when
        ``closed`` is right, ``(t - w, t)`` when left (empty ranges are possible); a
        window of N periods or events holds N of them, the row's own one or not."""
        parsed = parse_window(window)
        if parsed.unit == "events":
            end = self.rows + (1 if closed == "right" else 0)
            return np.maximum(end - parsed.count, self.first), end
        keys = self.keys if parsed.unit == "seconds" else self.period_keys
        target = keys[self.rows]
        # N periods are N whole periods either way: the row's own and N - 1 before it, or
        # the N before it.
        side = "left" if parsed.unit == "periods" and closed == "left" else "right"
        start = np.searchsorted(keys, target - parsed.count, side=side)
        end = self.rows + 1 if closed == "right" else np.searchsorted(keys, target, side="left")
        return start, end

    def lag_rows(self, window: str) -> np.ndarray:
        """Per target row, the position of the entity's row ``window`` back (-1: none):
        N events back, the row of the period N periods back, or the latest row at or
        before t - duration."""
        parsed = parse_window(window)
        if parsed.unit == "events":
            back = self.rows - parsed.count
            return np.where(back >= self.first, back, -1)
        keys = self.keys if parsed.unit == "seconds" else self.period_keys
        wanted = keys[self.rows] - parsed.count
        back = np.searchsorted(keys, wanted, side="right") - 1
        found = back >= self.first
        if parsed.unit == "periods":
            found &= keys[np.maximum(back, 0)] == wanted
        return np.where(found, back, -1)

    @staticmethod
    def reduce(
        ufunc: np.ufunc, values: np.ndarray, start: np.ndarray, end: np.ndarray,
        empty: float = np.nan,
    ) -> np.ndarray:
        """``ufunc`` over each range [start, end) of ``values``; ``empty`` for empty ranges."""
        if len(start) == 0:
            return np.empty(0)
        padded = np.append(values, values.dtype.type(0))
        bounds = np.empty(2 * len(start), dtype=np.int64)
        bounds[0::2], bounds[1::2] = np.minimum(start, end), end
        reduced = ufunc.reduceat(padded, bounds)[0::2].astype(np.float64)
        return np.where(end > start, reduced, empty)


@register("identity")
def identity(batch: Batch, feature: FeatureDef) -> pd.Series:
    """The raw value of ``source`` at the event."""
    return batch.target[feature.source]


@register("lag")
def lag(batch: Batch, feature: FeatureDef) -> pd.Series:
    """The entity's value of ``source`` ``window`` back ('1 events', '1 periods', '30d');
    missing when there is no such row. Always strictly past."""
    back = batch.lag_rows(feature.window)
    column = batch.data[feature.source]
    values = column.iloc[np.maximum(back, 0)].reset_index(drop=True)
    return values.where(pd.Series(back >= 0))


def _count_and_sum(batch: Batch, feature: FeatureDef) -> tuple[np.ndarray, np.ndarray]:
    start, end = batch.window_bounds(feature.window, feature.closed)
    values = batch.values(feature.source)
    present = ~np.isnan(values)
    count = batch.reduce(np.add, present.astype(np.float64), start, end, empty=0.0)
    total = batch.reduce(np.add, np.where(present, values, 0.0), start, end)
    return count, total


@register("rolling_count")
def rolling_count(batch: Batch, feature: FeatureDef) -> np.ndarray:
    """Non-missing values of ``source`` in the window (events, when source is the key)."""
    return _count_and_sum(batch, feature)[0]


@register("rolling_sum")
def rolling_sum(batch: Batch, feature: FeatureDef) -> np.ndarray:
    """Sum over the window; NaN when every value in it is missing."""
    count, total = _count_and_sum(batch, feature)
    return np.where(count > 0, total, np.nan)


@register("rolling_mean")
def rolling_mean(batch: Batch, feature: FeatureDef) -> np.ndarray:
    """Mean over the window, ignoring missing values; NaN when all are missing."""
    count, total = _count_and_sum(batch, feature)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


@register("rolling_max")
def rolling_max(batch: Batch, feature: FeatureDef) -> np.ndarray:
    """Maximum over the window, ignoring missing values; NaN when all are missing."""
    start, end = batch.window_bounds(feature.window, feature.closed)
    return batch.reduce(np.fmax, batch.values(feature.source), start, end)


_DTYPES = {
    "int": "Int64",
    "float": "float64",
    "string": "string",
    "category": "string",
    "bool": "boolean",
    "timestamp": "datetime64[us]",
}


def compute_features(batch: Batch, uc: UseCase) -> pd.DataFrame:
    """Entity, timestamp and every feature of ``uc`` (typed per FeatureDef.type) for the
    target rows of ``batch``."""
    out = {uc.entity: batch.target[uc.entity], uc.timestamp: batch.target[uc.timestamp]}
    for feature in uc.features.definitions:
        values = get_function(feature.function)(batch, feature)
        values = values.to_numpy() if isinstance(values, pd.Series) else np.asarray(values)
        out[feature.name] = pd.Series(values).astype(_DTYPES[feature.type])
    return pd.DataFrame(out)
