"""The time split: train on the past, validate and test on what came after it."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from esteira.usecase import UseCase


class SplitError(ValueError):
    """The data cannot be split as declared (too few distinct timestamps, for example)."""


@dataclass(frozen=True)
class Split:
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame

    def parts(self) -> dict[str, pd.DataFrame]:
        return {"train": self.train, "validation": self.validation, "test": self.test}


def time_split(uc: UseCase, frame: pd.DataFrame) -> Split:
    """Cut ``frame`` at two timestamps so every train row precedes every validation row,
    and every validation row precedes every test row.

    The cuts sit at the timestamps found at the declared row fractions; rows sharing a
    timestamp stay together (on the later side), so the parts never overlap in time and the
    result does not depend on the row order of ``frame``: rows are sorted on every column
    (timestamp and entity first), since some models (bootstrap samples) see row order.
    """
    ts_col = uc.timestamp
    fractions = uc.training.split
    if fractions.validation_fraction + fractions.test_fraction >= 1:
        raise SplitError("validation_fraction + test_fraction must leave rows for training")
    keys = [ts_col, uc.entity, *(c for c in frame.columns if c not in (ts_col, uc.entity))]
    ordered = frame.sort_values(keys, kind="mergesort").reset_index(drop=True)
    n = len(ordered)
    stamps = ordered[ts_col]
    val_start = stamps.iloc[int(n * (1 - fractions.validation_fraction - fractions.test_fraction))]
    test_start = stamps.iloc[int(n * (1 - fractions.test_fraction))]
    split = Split(
        train=ordered[stamps < val_start].reset_index(drop=True),
        validation=ordered[(stamps >= val_start) & (stamps < test_start)].reset_index(drop=True),
        test=ordered[stamps >= test_start].reset_index(drop=True),
    )
    empty = [name for name, part in split.parts().items() if part.empty]
    if empty:
        raise SplitError(
            f"time split of {n} rows left {', '.join(empty)} empty: "
            "too few distinct timestamps for the declared fractions"
        )
    return split
