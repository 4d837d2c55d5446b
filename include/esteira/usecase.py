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
Grain = Literal["event", "day", "week", "month", "year"]
SourceKind = Literal["landing_files", "file", "delta", "sql"]
Closed = Literal["left", "right"]
# "7d", "12h", "2w" (durations) or "3 periods" (of the grain) or "2 events" (of the entity).
WINDOW = re.compile(r"^(\d+)\s*(s|m|h|d|w|periods?|events?)$")


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


_SOURCE_KEYS = {
    "landing_files": ({"landing"}, {"landing", "events_pattern", "labels_pattern", "every_day", "generator"}),
    "file": ({"path"}, {"path", "format"}),
    "delta": ({"path"}, {"path"}),
    "sql": ({"conn_id", "query"}, {"conn_id", "query"}),
}


class SourceSpec(_Strict):
    """Where rows come from; every kind reads the rows of an interval [start, end) by the
    timestamp column (``esteira.features.sources``)."""

    kind: SourceKind = "landing_files"
    landing: str | None = Field(None, description="landing_files: folder under ESTEIRA_HOME/landing")
    events_pattern: str = "events_{date}.csv"
    labels_pattern: str = "labels_{date}.csv"
    every_day: bool = Field(True, description="landing_files: a missing day is an error")
    path: str | None = Field(None, description="file: a file, folder or glob; delta: a path or URI")
    format: Literal["csv", "parquet"] | None = Field(None, description="file: else by extension")
    conn_id: str | None = Field(None, description="sql: an Airflow Connection id")
    query: str | None = Field(None, description="sql: binds :start and :end")
    generator: GeneratorSpec | None = None

    @model_validator(mode="after")
    def _keys_of_kind(self) -> SourceSpec:
        required, allowed = _SOURCE_KEYS[self.kind]
        # A key at its default says nothing (a dumped and reloaded use case carries them all).
        defaults = type(self).model_fields
        given = {k for k in self.model_fields_set if k != "kind" and getattr(self, k) != defaults[k].default}
        if required - given:
            key = sorted(required - given)[0]
            raise ValueError(f"source.{key} is required when source.kind is '{self.kind}'")
        if given - allowed:
            key = sorted(given - allowed)[0]
            raise ValueError(f"source.{key} does not apply to source.kind '{self.kind}'")
        if self.kind == "sql" and not all(f":{p}" in self.query for p in ("start", "end")):
            raise ValueError("source.query must bind the interval as :start and :end")
        return self


class FeatureDef(_Strict):
    """One feature: a registered function applied to a raw column (``source``)."""

    name: str
    function: str = Field(description="name of a function registered in esteira.features")
    source: str | None = None
    window: str | None = Field(
        None, description="'7d' / '12h' / '2w' (duration), '3 periods' (of the grain), '2 events'"
    )
    closed: Closed = Field(
        "right", description="right: (t - w, t], the row itself included; left: (t - w, t), strictly past"
    )
    type: ColumnType = "float"
    description: str = ""

    @field_validator("window")
    @classmethod
    def _window_format(cls, value: str | None) -> str | None:
        if value is not None and not WINDOW.fullmatch(value):
            raise ValueError("window must look like '7d', '12h', '2w', '3 periods' or '2 events'")
        return value


class FeatureTableSpec(_Strict):
    table: str
    description: str = ""
    owner: str = ""
    definitions: list[FeatureDef]


class LabelSpec(_Strict):
    """The target: a column of the events (``source: events``, the default when the column
    is in ``schema.columns``) or of its own source (landing_files' labels files by default)."""

    column: str
    delay_days: int = Field(0, ge=0, description="how long after the event the label is known")
    delay: str | None = Field(None, description="as a window ('14d', '1 period'); overrides delay_days")
    source: Literal["events"] | SourceSpec | None = None

    @field_validator("delay")
    @classmethod
    def _delay_format(cls, value: str | None) -> str | None:
        if value is not None and (not WINDOW.fullmatch(value) or "event" in value):
            raise ValueError("label.delay must look like '14d' or '1 period'")
        return value

    @property
    def delay_window(self) -> str:
        """The delay as a window: ``delay``, else ``delay_days`` in days."""
        return self.delay or f"{self.delay_days}d"


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
    window: str | None = Field(None, description="'24 periods' or '365d'; overrides window_days")
    seed: int = 42
    split: SplitSpec = SplitSpec()
    candidates: list[CandidateSpec] = Field(min_length=1)

    @field_validator("window")
    @classmethod
    def _window_format(cls, value: str | None) -> str | None:
        if value is not None and (not WINDOW.fullmatch(value) or "event" in value):
            raise ValueError("training.window must look like '365d' or '24 periods'")
        return value


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
    """The gate's rules, and when a candidate is *nothing new* (no challenger at all).

    A candidate is nothing new when it was trained exactly as the champion was (the same
    feature and labels Delta versions, window, configuration and candidate), or when no
    threshold asks for a strict improvement (``min_absolute_change`` / ``min_relative_change``
    > 0) and each thresholded metric is within ``unchanged_tolerance`` (absolute) of the
    champion's on the same test set. Such a candidate is not registered, in any mode but
    ``disabled``: the training run ends skipped with the reason. With a strict improvement
    declared, an equal candidate is an ordinary rejection.
    """

    mode: Literal["enabled", "dry_run", "disabled"] = "enabled"
    thresholds: list[MetricThreshold] = Field(min_length=1)
    unchanged_tolerance: float = Field(
        1e-6, ge=0, description="gate metrics this close to the champion's count as unchanged"
    )


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


ESTIMATED_QUALITY_METRICS = ("roc_auc", "accuracy")


class RetrainingRule(_Strict):
    """Retrain when at least ``breaches`` of the last ``windows`` windows breach and the
    latest does, at most once per ``cooldown_days``. ``quality`` says which quality drop
    makes a window breach: the ``realized`` metric once labels have arrived, the metric
    ``estimated`` before they do (binary classifiers; see ``esteira.monitoring.estimation``), or
    ``both`` (either one)."""

    breaches: int = Field(2, gt=0)
    windows: int = Field(3, gt=0)
    cooldown_days: int = Field(7, ge=0)
    quality: Literal["estimated", "realized", "both"] = "realized"

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


class OnlineSpec(_Strict):
    """Serve features by entity key: each refresh materializes the latest feature row per
    entity into the online store (``esteira.features.online``); the model server fills a
    request that carries only the key from it."""

    max_age: str | None = Field(
        None, description="'2d', '12h' or '1 period': older features are stale (None: never)"
    )
    stale: Literal["refuse", "flag"] = Field(
        "refuse", description="a stale or unknown key: refuse the request (422), or score and flag it"
    )

    @field_validator("max_age")
    @classmethod
    def _max_age_format(cls, value: str | None) -> str | None:
        if value is not None and (not WINDOW.fullmatch(value) or "event" in value):
            raise ValueError("online.max_age must look like '2d', '12h' or '1 period'")
        return value


class TablesSpec(_Strict):
    """Register the Delta tables in Unity Catalog (``esteira.databricks.unity_catalog``):
    after each write, an external table over the table's location in ``catalog.schema``,
    kept current with the column descriptions and the primary key."""

    catalog: str
    schema_: str = Field(alias="schema")
    warehouse_id: str | None = Field(
        None, description="the SQL warehouse that runs the DDL; default ESTEIRA_DATABRICKS_WAREHOUSE_ID"
    )

    @field_validator("catalog", "schema_")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not value or "`" in value or "." in value:
            raise ValueError("a Unity Catalog name without '.' or '`' (tables.catalog, tables.schema)")
        return value


class DatabricksServingSpec(_Strict):
    """The ``databricks_serving`` deploy target: each promotion pushes the champion's version
    to this Model Serving endpoint (``esteira.databricks.serving``), beside Esteira's server."""

    endpoint: str = Field(description="the serving endpoint's name (created on the first promotion)")
    workload_size: Literal["Small", "Medium", "Large"] = "Small"
    scale_to_zero: bool = True
    timeout_minutes: float = Field(30, gt=0, description="how long a config update may take")


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
    tables: TablesSpec | None = Field(None, description="absent: the tables are not registered in Unity Catalog")
    databricks_serving: DatabricksServingSpec | None = Field(
        None, description="absent: the champion is not pushed to a Databricks Model Serving endpoint"
    )
    online: OnlineSpec | None = Field(None, description="absent: no online store")
    grain: Grain = Field("event", description="one row per event, or per entity and period")
    schedule: str = Field("@daily", description="defaults to the grain's period (@daily for event)")
    start_date: dt.date = dt.date(2026, 1, 1)

    @model_validator(mode="before")
    @classmethod
    def _schedule_of_grain(cls, data: Any) -> Any:
        """Scheduled runs follow the grain unless ``schedule`` says otherwise."""
        if isinstance(data, dict) and "schedule" not in data:
            period = {"week": "@weekly", "month": "@monthly", "year": "@yearly"}
            data = {**data, "schedule": period.get(data.get("grain"), "@daily")}
        return data

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
        if self.label.source is None and not self.labels_from_events and self.source.kind != "landing_files":
            raise ValueError(
                f"label.source: '{self.label.column}' is not a column of schema.columns, so give "
                "the labels their own source (or add the column to the events)"
            )
        return self

    @property
    def labels_from_events(self) -> bool:
        """The label is a column of the event rows (known ``label.delay`` after each row)."""
        if self.label.source is None:
            return self.label.column in self.schema_.columns
        return self.label.source == "events"

    @model_validator(mode="after")
    def _quality_can_be_estimated(self) -> UseCase:
        if self.retraining.quality == "realized":
            return self
        if self.problem_type != "binary_classification":
            raise ValueError(
                f"retraining.quality '{self.retraining.quality}': quality is estimated for binary "
                "classification only; use 'realized'"
            )
        if self.training.primary_metric not in ESTIMATED_QUALITY_METRICS:
            raise ValueError(
                f"retraining.quality '{self.retraining.quality}': training.primary_metric "
                f"'{self.training.primary_metric}' is not estimated; one of {list(ESTIMATED_QUALITY_METRICS)}"
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
