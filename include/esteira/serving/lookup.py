"""Requests by entity key: the features a request leaves out come from the online store.

A row that carries the use case's entity key but not every model input gets the missing
inputs from the entity's stored features (the values it sends override the stored ones).
A key with nothing stored, or features older than ``online.max_age`` (``is_stale``, the rule
of `esteira.features.online`), gets ``online.stale``: ``refuse`` answers 422 naming each
such row, ``flag`` scores it (without features when none are stored) and flags it. A row
sent in full is not looked up. The answer then carries, per row, the entity key, the
feature timestamp, its age in seconds and whether it was stale or missing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from esteira.features.online import OnlineStore, OnlineStoreError, entity_key, is_stale
from esteira.serving.protocol import RequestError
from esteira.usecase import UseCase

_SHOWN = 5  # refused rows named in one message


@dataclass(frozen=True)
class Lookup:
    """``count(outcome, rows)`` hears how many looked-up rows were fresh, stale or missing."""

    uc: UseCase
    store: OnlineStore
    count: Callable[[str, int], None] | None = None

    def fill(self, raw: dict[str, list], wanted: Sequence[str]) -> tuple[dict[str, list], list | None]:
        """``raw`` (column -> values) with the missing ``wanted`` columns filled from the
        store, and what was looked up per row; ``raw`` as it is (and None) when nothing is
        missing, or when the rows carry no key or lack a column the store does not hold."""
        missing = [name for name in wanted if name not in raw]
        if not missing or self.uc.entity not in raw or not set(missing) <= set(self.uc.feature_names):
            return raw, None
        try:
            keys = [entity_key(self.uc, value) for value in raw[self.uc.entity]]
        except ValueError as error:
            raise RequestError(str(error)) from None
        try:
            entries = self.store.get_many(keys)
        except OnlineStoreError as error:
            raise RequestError(str(error), 503, "TEMPORARILY_UNAVAILABLE") from None
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)  # feature times are naive UTC
        looked_up, refused = [], []
        for row, (key, entry) in enumerate(zip(keys, entries, strict=True)):
            if entry is None:
                looked_up.append({"key": key, "feature_ts": None, "age_seconds": None,
                                  "stale": True, "missing": True})
                refused.append(f"row {row} ({self.uc.entity} {key}): no stored features")
                continue
            stale = is_stale(self.uc, entry.feature_ts, now)
            age = (now - entry.feature_ts).total_seconds()
            looked_up.append({"key": key, "feature_ts": entry.feature_ts.isoformat(),
                              "age_seconds": round(age, 3), "stale": stale, "missing": False})
            if stale:
                refused.append(f"row {row} ({self.uc.entity} {key}): features of "
                               f"{entry.feature_ts.isoformat()} are older than online.max_age "
                               f"{self.uc.online.max_age}")
        if self.count is not None:
            missing_rows = sum(row["missing"] for row in looked_up)
            stale_rows = len(refused) - missing_rows
            for outcome, rows in (("fresh", len(keys) - len(refused)), ("stale", stale_rows),
                                  ("missing", missing_rows)):
                if rows:
                    self.count(outcome, rows)
        if refused and self.uc.online.stale == "refuse":
            more = f"; and {len(refused) - _SHOWN} more" if len(refused) > _SHOWN else ""
            raise RequestError("; ".join(refused[:_SHOWN]) + more + " (send these rows in full, "
                               "or refresh the features)", 422, "INVALID_PARAMETER_VALUE")
        filled = dict(raw)
        for name in missing:
            filled[name] = [None if e is None else e.features.get(name) for e in entries]
        return filled, looked_up
