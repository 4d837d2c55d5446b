"""Data drift between the champion's training data and a window of production inputs.

Evidently's ``DataDriftPreset`` (the 0.7 ``Report`` API) runs on seeded samples of both sides
(``sampling.py``), with the per-column methods and thresholds declared under
``monitoring.columns`` in the use-case YAML. Columns without a declared method get Evidently's
default, chosen by the size of the reference sample: above 1,000 rows the distance-based
normed Wasserstein (numeric) and Jensen-Shannon (categorical), whose verdicts do not depend on
the sample size; at 1,000 rows or fewer the p-value tests K-S, chi-squared and Z.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd

from esteira.monitoring.sampling import Sample, sample_frame
from esteira.usecase import UseCase

if TYPE_CHECKING:
    from evidently.core.report import Snapshot
    from evidently.presets import DataDriftPreset

_NUMERIC = ("int", "float")
_CATEGORICAL = ("category", "string", "bool")


@dataclass(frozen=True)
class ColumnScore:
    """Evidently's verdict on one column: for p-value methods drift means score < threshold."""

    score: float
    method: str
    threshold: float
    drifted: bool


@dataclass(frozen=True)
class DriftResult:
    drift_share: float
    drift_share_threshold: float
    dataset_drift: bool
    drifted_columns: tuple[str, ...]
    columns: Mapping[str, ColumnScore]
    reference_rows: int
    current_rows: int
    reference_sampled: int
    current_sampled: int
    snapshot: Snapshot = field(compare=False, repr=False)

    def scores_json(self) -> str:
        return json.dumps(
            {name: vars(score) for name, score in self.columns.items()}, sort_keys=True
        )


def drift_columns(uc: UseCase) -> tuple[list[str], list[str]]:
    """The numeric and the categorical feature columns that drift is computed on."""
    types = {f.name: f.type for f in uc.features.definitions}
    return (
        [name for name, kind in types.items() if kind in _NUMERIC],
        [name for name, kind in types.items() if kind in _CATEGORICAL],
    )


def drift_preset(uc: UseCase) -> DataDriftPreset:
    """Evidently's preset over the feature columns, with the declared methods and thresholds."""
    from evidently.presets import DataDriftPreset

    numeric, categorical = drift_columns(uc)
    declared = uc.monitoring.columns
    methods = {c: d.method for c, d in declared.items() if d.method is not None}
    thresholds = {c: d.threshold for c, d in declared.items() if d.threshold is not None}
    return DataDriftPreset(
        columns=numeric + categorical,
        drift_share=uc.monitoring.drift_share_threshold,
        per_column_method=methods or None,
        per_column_threshold=thresholds or None,
    )


def to_sample(data: pd.DataFrame | Sample, uc: UseCase, seed: int | None = None) -> Sample:
    """A frame sampled to ``monitoring.sample_size`` (stratified by the label when present
    in a classification frame); a Sample is returned as it is."""
    if isinstance(data, Sample):
        return data
    label = uc.label.column
    stratify = (
        label if uc.problem_type == "binary_classification" and label in data.columns else None
    )
    return sample_frame(
        data,
        uc.monitoring.sample_size,
        uc.training.seed if seed is None else seed,
        stratify_by=stratify,
    )


def compute_drift(
    reference: pd.DataFrame | Sample,
    current: pd.DataFrame | Sample,
    uc: UseCase,
    seed: int | None = None,
) -> DriftResult:
    """Sample both sides and run Evidently's DataDriftPreset on the feature columns.

    Raises ValueError when a feature column is missing, a declared column is not a feature,
    or a side has no rows.
    """
    from evidently import DataDefinition, Dataset, Report

    numeric, categorical = drift_columns(uc)
    columns = numeric + categorical
    unknown = sorted(set(uc.monitoring.columns) - set(columns))
    if unknown:
        raise ValueError(f"monitoring.columns names columns that are not features: {unknown}")
    ref, cur = to_sample(reference, uc, seed), to_sample(current, uc, seed)
    for side, sample in (("reference", ref), ("current", cur)):
        missing = [c for c in columns if c not in sample.frame.columns]
        if missing:
            raise ValueError(f"{side} data lacks the feature columns {missing}")
        if sample.sampled_rows == 0:
            raise ValueError(f"{side} data has no rows")
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    snapshot = Report([drift_preset(uc)], include_tests=True).run(
        Dataset.from_pandas(_typed(cur.frame, numeric, categorical), data_definition=definition),
        Dataset.from_pandas(_typed(ref.frame, numeric, categorical), data_definition=definition),
    )
    scores, share, dataset_drift = drift_verdicts(snapshot)
    return DriftResult(
        drift_share=share,
        drift_share_threshold=uc.monitoring.drift_share_threshold,
        dataset_drift=dataset_drift,
        drifted_columns=tuple(c for c in columns if scores[c].drifted),
        columns={c: scores[c] for c in columns},
        reference_rows=ref.source_rows,
        current_rows=cur.source_rows,
        reference_sampled=ref.sampled_rows,
        current_sampled=cur.sampled_rows,
        snapshot=snapshot,
    )


def _typed(frame: pd.DataFrame, numeric: list[str], categorical: list[str]) -> pd.DataFrame:
    """Numbers as floats, categories as strings with missing values kept missing."""
    out = pd.DataFrame(index=frame.index)
    for column in numeric:
        out[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    for column in categorical:
        values = frame[column]
        out[column] = (
            values.astype(object)
            .where(values.notna(), None)
            .map(lambda v: v if v is None else str(v))
        )
    return out


def drift_verdicts(snapshot: Snapshot) -> tuple[dict[str, ColumnScore], float, bool]:
    """Per-column scores and verdicts, the drifted share and the dataset verdict of a
    ``Report([DataDriftPreset(...)], include_tests=True)`` snapshot.

    ``Snapshot.dict()`` lists each ValueDrift metric (config: column, method, threshold;
    value: score) and, with tests included, one test per column (FAIL = drift) and the
    DriftedColumnsCount share test (FAIL = share at or above the threshold).
    """
    result = snapshot.dict()
    drifted = {
        test["metric_config"]["params"]["column"]: test["status"] == "FAIL"
        for test in result["tests"]
        if test["id"] == "drift"
    }
    scores: dict[str, ColumnScore] = {}
    share = 0.0
    dataset_drift = False
    for metric in result["metrics"]:
        config = metric["config"]
        if config["type"].endswith(":ValueDrift"):
            column = config["column"]
            scores[column] = ColumnScore(
                score=float(metric["value"]),
                method=str(config["method"]),
                threshold=float(config["threshold"]),
                drifted=drifted[column],
            )
        elif config["type"].endswith(":DriftedColumnsCount"):
            share = float(metric["value"]["share"])
    for test in result["tests"]:
        if test["metric_config"]["params"]["type"].endswith(":DriftedColumnsCount"):
            dataset_drift = test["status"] == "FAIL"
    return scores, share, dataset_drift
