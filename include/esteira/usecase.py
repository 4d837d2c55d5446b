"""The typed model of a use-case YAML file (``include/usecases/<name>.yaml``).

Every section forbids unknown keys, so a misspelled key fails on load with its path.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")

ProblemType = Literal["binary_classification", "regression"]
ColumnType = Literal["int", "float", "string", "category", "bool", "timestamp"]
Backend = Literal["local", "databricks"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ColumnRule(_Strict):
    """The contract of one raw column: rows breaking it go to quarantine with the reason."""

    type: ColumnType
    nullable: bool = True
    min: float | None = None
    max: float | None = None
    allowed: list[str] | None = None


class RawSchema(_Strict):
    columns: dict[str, ColumnRule]
    max_bad_share: float = Field(0.05, ge=0, le=1)


class DriftSpec(_Strict):
    """The demo generator's drift switch: from ``start``, these columns shift."""

    start: dt.date
    columns: dict[str, float] = Field(
        description="column -> shift: numeric columns are scaled by (1 + shift), "
        "categorical columns move that share of rows to their last allowed value"
    )


class GeneratorSpec(_Strict):
    """Deterministic synthetic data for the demo and the tests."""

    kind: Literal["churn", "demand"]
    entities: int = Field(1500, gt=0)
    days: int = Field(90, gt=0)
    start: dt.date = dt.date(2026, 1, 1)
    seed: int = 7
    bad_row_share: float = Field(0.002, ge=0, le=1)
    drift: DriftSpec | None = None


class SourceSpec(_Strict):
    landing: str = Field(description="folder under ESTEIRA_HOME/landing with the daily files")
    events_pattern: str = "events_{date}.csv"
    labels_pattern: str = "labels_{date}.csv"
    generator: GeneratorSpec | None = None


class FeatureDef(_Strict):
    """One feature: a registered function applied to a raw column (``source``)."""

    name: str
    function: str = Field(description="name of a function registered in esteira.features")
    source: str | None = None
    window: str | None = Field(None, description="event-time window, e.g. '7d'")
    type: ColumnType = "float"
    description: str = ""

    @field_validator("window")
    @classmethod
    def _window_format(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"\d+d", value):
            raise ValueError("window must look like '7d' (whole days)")
        return value


class FeatureTableSpec(_Strict):
    table: str
    description: str = ""
    owner: str = ""
    definitions: list[FeatureDef]


class LabelSpec(_Strict):
    column: str
    delay_days: int = Field(0, ge=0, description="how long after the event the label is known")


class CandidateSpec(_Strict):
    """A model family and its hyperparameter grid: every combination is one candidate."""

    family: str
    params: dict[str, list[Any]] = Field(default_factory=dict)


class SplitSpec(_Strict):
    validation_fraction: float = Field(0.15, gt=0, lt=1)
    test_fraction: float = Field(0.15, gt=0, lt=1)


class TrainingSpec(_Strict):
    primary_metric: str
    greater_is_better: bool = True
    window_days: int = Field(60, gt=0)
    seed: int = 42
    split: SplitSpec = SplitSpec()
    candidates: list[CandidateSpec] = Field(min_length=1)


class MetricThreshold(_Strict):
    """One gate rule, in the terms of ``mlflow.models.MetricThreshold``.

    ``threshold`` is absolute. ``min_absolute_change`` / ``min_relative_change`` compare
    with the champion: a positive value demands that much improvement (MLflow's meaning);
    zero or a negative value is a tolerance, "no worse than the champion by more than
    that", which MLflow's own class refuses and Esteira checks with MLflow's formulas.
    """

    metric: str
    greater_is_better: bool = True
    threshold: float | None = None
    min_absolute_change: float | None = None
    min_relative_change: float | None = None


class GateSpec(_Strict):
    mode: Literal["enabled", "dry_run", "disabled"] = "enabled"
    thresholds: list[MetricThreshold] = Field(min_length=1)


class RegistrySpec(_Strict):
    model_name: str | None = Field(None, description="defaults to the use-case name")
    require_approval: bool = False
    approval_timeout_hours: float = Field(24, gt=0)


class ColumnDrift(_Strict):
    method: str | None = None
    threshold: float | None = None


class MonitoringSpec(_Strict):
    window_days: int = Field(1, gt=0)
    drift_share_threshold: float = Field(0.3, gt=0, le=1)
    columns: dict[str, ColumnDrift] = Field(default_factory=dict)
    sample_size: int = Field(50_000, gt=0)
    quality_max_drop: float = Field(0.05, ge=0)


class RetrainingRule(_Strict):
    """Retrain when at least ``breaches`` of the last ``windows`` windows breach and the
    latest does, at most once per ``cooldown_days``."""

    breaches: int = Field(2, gt=0)
    windows: int = Field(3, gt=0)
    cooldown_days: int = Field(7, ge=0)

    @model_validator(mode="after")
    def _n_of_m(self) -> RetrainingRule:
        if self.breaches > self.windows:
            raise ValueError("breaches must not exceed windows")
        return self


class ComputeSpec(_Strict):
    """Where each heavy step runs; unset means the ESTEIRA_COMPUTE_BACKEND default."""

    feature_refresh: Backend | None = None
    training: Backend | None = None
    batch_inference: Backend | None = None


class UseCase(_Strict):
    name: str
    description: str = ""
    owner: str = ""
    problem_type: ProblemType
    entity: str
    timestamp: str
    source: SourceSpec
    schema_: RawSchema = Field(alias="schema")
    features: FeatureTableSpec
    label: LabelSpec
    training: TrainingSpec
    gate: GateSpec
    registry: RegistrySpec = RegistrySpec()
    monitoring: MonitoringSpec = MonitoringSpec()
    retraining: RetrainingRule = RetrainingRule()
    compute: ComputeSpec = ComputeSpec()
    schedule: str = "@daily"
    start_date: dt.date = dt.date(2026, 1, 1)

    @field_validator("name")
    @classmethod
    def _name_format(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("use lower case letters, digits and '_' (it names DAGs and tables)")
        return value

    @model_validator(mode="after")
    def _columns_exist(self) -> UseCase:
        raw = self.schema_.columns
        for key in (self.entity, self.timestamp):
            if key not in raw:
                raise ValueError(f"'{key}' (entity/timestamp) is not a column of schema.columns")
        for feature in self.features.definitions:
            if feature.source is not None and feature.source not in raw:
                raise ValueError(
                    f"features.definitions '{feature.name}': source '{feature.source}' "
                    "is not a column of schema.columns"
                )
        return self

    @property
    def model_name(self) -> str:
        return self.registry.model_name or self.name

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features.definitions]

    def dag_id(self, stage: str) -> str:
        return f"{self.name}__{stage}"

    def asset_uri(self, what: str) -> str:
        """``features``, ``model/challenger``, ``model/champion``, ``retraining_request``..."""
        return f"esteira://{self.name}/{what}"
