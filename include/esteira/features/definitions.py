"""Feature functions, registered by name and referenced from the use-case YAML.

A feature function receives a :class:`Batch` and the :class:`FeatureDef` and returns one
value per target row (``batch.target``, one day of validated events), in that order.
``batch.data`` holds those rows plus the events of the lookback days, sorted by entity
and event time, so windowed aggregates can look back but never forward. Only the
entity, the timestamp and the sources of windowed features are kept in the history.

Registering your own function::

    from esteira.features.definitions import Batch, register

    @register("rolling_min")
    def rolling_min(batch: Batch, feature: FeatureDef) -> np.ndarray:
        start, end = batch.window_bounds(feature.window)
        return batch.reduce(np.fmin, batch.values(feature.source), start, end)

Put the module in an installed package and expose it under the entry-point group
``esteira.features`` (``[project.entry-points."esteira.features"] mine = "pkg.features"``);
unknown names are looked up there before failing. Windows must be whole days ("7d") and
the refresh reads ``max window`` days of history before each day.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points

import numpy as np
import pandas as pd

from esteira.usecase import FeatureDef, UseCase

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
        if feature.function.startswith("rolling_") and feature.window is None:
            raise ValueError(f"features.definitions '{feature.name}': needs a window")


def window_days(window: str | None) -> int:
    return int(window[:-1]) if window else 0


def lookback_days(uc: UseCase) -> int:
    """How many days before a target day the windows of ``uc`` reach."""
    return max((window_days(f.window) for f in uc.features.definitions), default=0)


def history_columns(uc: UseCase) -> list[str]:
    """The columns a :class:`Batch` keeps from past days: keys and windowed sources."""
    windowed = [f.source for f in uc.features.definitions if f.window and f.source]
    return list(dict.fromkeys([uc.entity, uc.timestamp, *windowed]))


@dataclass(frozen=True)
class Batch:
    """One day's events (``target``, every column) and the history their windows need.

    ``data`` holds the windowed columns of history and target rows together, sorted by
    (entity, time); ``rows`` are the positions of the target rows in ``data``, and
    ``target`` lists the target rows in that same order. ``keys`` fold (entity code,
    seconds) into one sortable int64.
    """

    data: pd.DataFrame
    rows: np.ndarray
    target: pd.DataFrame
    keys: np.ndarray

    @classmethod
    def build(cls, history: pd.DataFrame, target: pd.DataFrame, entity: str, timestamp: str) -> Batch:
        """``history`` has the entity, the timestamp and the windowed source columns."""
        data = pd.concat([history, target[list(history.columns)]], ignore_index=True)
        codes, _ = pd.factorize(data[entity], sort=True)
        stamps = data[timestamp].to_numpy().astype("datetime64[us]").astype(np.int64)
        order = np.lexsort((stamps, codes))
        data = data.iloc[order].reset_index(drop=True)
        is_target = order >= len(history)
        # Windows are resolved to the second; 2**34 s (~540 years) keeps the entity code
        # above any time offset, so one sorted int64 holds (entity, time).
        seconds = stamps[order] // 1_000_000
        offset = seconds - seconds.min(initial=0)
        keys = codes[order].astype(np.int64) * np.int64(2**34) + offset
        positions = order[is_target] - len(history)
        return cls(data, np.flatnonzero(is_target), target.iloc[positions].reset_index(drop=True), keys)

    def values(self, column: str | None) -> np.ndarray:
        """A column as float64 with NaN for missing (ones when ``column`` is None)."""
        if column is None:
            return np.ones(len(self.data))
        return pd.to_numeric(self.data[column]).to_numpy(dtype=np.float64, na_value=np.nan)

    def window_bounds(self, window: str | None) -> tuple[np.ndarray, np.ndarray]:
        """Row ranges [start, end) of the window (t - window, t] of each target row."""
        span = np.int64(window_days(window)) * 86_400
        end = self.rows + 1
        start = np.searchsorted(self.keys, self.keys[self.rows] - span, side="right")
        return start, end

    @staticmethod
    def reduce(ufunc: np.ufunc, values: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
        """``ufunc`` over each range [start, end) of ``values`` (ranges are never empty)."""
        if len(start) == 0:
            return np.empty(0)
        padded = np.append(values, values.dtype.type(0))
        bounds = np.empty(2 * len(start), dtype=np.int64)
        bounds[0::2], bounds[1::2] = start, end
        return ufunc.reduceat(padded, bounds)[0::2]


@register("identity")
def identity(batch: Batch, feature: FeatureDef) -> pd.Series:
    """The raw value of ``source`` at the event."""
    return batch.target[feature.source]


def _count_and_sum(batch: Batch, feature: FeatureDef) -> tuple[np.ndarray, np.ndarray]:
    start, end = batch.window_bounds(feature.window)
    values = batch.values(feature.source)
    present = ~np.isnan(values)
    count = batch.reduce(np.add, present.astype(np.float64), start, end)
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
    start, end = batch.window_bounds(feature.window)
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
        out[feature.name] = pd.Series(np.asarray(values)).astype(_DTYPES[feature.type])
    return pd.DataFrame(out)
