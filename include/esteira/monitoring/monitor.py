"""One monitoring window judged and recorded: its drift, quality once labels exist (and as
estimated before), the report on MLflow, the retraining decision, and the row in the
``monitoring`` table.

The caller samples the data in bounded memory (``monitoring.inputs``, the champion's stored
reference) and computes the drift and the estimate from the samples. The results row is
written last, so a failure leaves no half-recorded window, and a rerun of the window
replaces its row.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from esteira.config import Settings
from esteira.features.online import Skew
from esteira.monitoring.drift import DriftResult
from esteira.monitoring.estimation import EstimatedQuality
from esteira.monitoring.quality import QualityResult, compute_quality
from esteira.monitoring.report import ReportRef, log_report
from esteira.monitoring.results import read_history, write_result
from esteira.monitoring.retraining import RetrainingDecision, decide_retraining
from esteira.monitoring.sampling import Sample
from esteira.usecase import UseCase


@dataclass(frozen=True)
class MonitoringOutcome:
    drift: DriftResult
    quality: QualityResult | None
    estimated: EstimatedQuality | None
    decision: RetrainingDecision
    report: ReportRef
    row: Mapping[str, Any]
    table_version: int


def run_monitoring(
    uc: UseCase,
    settings: Settings,
    drift: DriftResult,
    window_start: dt.datetime,
    window_end: dt.datetime,
    model_version: str,
    test_metrics: Mapping[str, float],
    labels: pd.DataFrame | Sample | None,
    run_label: str,
    estimated: EstimatedQuality | None = None,
    skew: Skew | None = None,
) -> MonitoringOutcome:
    """Judge one window for one model version and record the result.

    ``drift``: `drift.compute_drift` of the window's sample against the reference (computed
    by the caller, which can then free both samples before the report and the Delta write).
    ``labels``: the window's labeled predictions (``uc.label.column`` and ``prediction``),
    None while the labels have not arrived. ``test_metrics``: the model's ``test_<metric>``
    values. ``estimated``: the quality estimated without labels (None: not estimated).
    ``skew``: the online store's skew check (`features.online.check_skew`; None: not run).
    Which quality drop makes the window breach is ``retraining.quality``. Window bounds may
    be timezone-aware; they are stored as naive UTC.
    """
    start, end = _naive_utc(window_start), _naive_utc(window_end)
    version = str(model_version)
    quality = compute_quality(labels, uc, test_metrics) if _has_rows(labels) else None
    row = _row(uc, start, end, version, run_label, drift, quality, estimated) | _skew_columns(skew)
    history = read_history(settings, uc)
    others = history[~((history["window_start"] == start) & (history["model_version"] == version))]
    candidate = pd.DataFrame([row])
    decision = decide_retraining(
        pd.concat([others, candidate], ignore_index=True) if len(others) else candidate,
        uc.retraining,
        end,
        model_version=version,
    )
    report = log_report(
        settings,
        uc,
        {"drift": drift.snapshot} | ({"quality": quality.snapshot} if quality else {}),
        model_version=version,
        window_start=start,
        window_end=end,
        run_label=run_label,
        metrics=_run_metrics(drift, quality, estimated, decision) | _skew_metrics(skew),
    )
    row |= {
        "retrain": decision.retrain,
        "retrain_reason": decision.reason,
        "report_run_id": report.run_id,
        "report_uri": report.artifact_uri,
    }
    table_version = write_result(settings, uc, row)
    return MonitoringOutcome(drift, quality, estimated, decision, report, row, table_version)


def _has_rows(labels: pd.DataFrame | Sample | None) -> bool:
    if labels is None:
        return False
    return labels.sampled_rows > 0 if isinstance(labels, Sample) else not labels.empty


def quality_breach(uc: UseCase, realized: bool, estimated: bool) -> bool:
    """Whether the window breaches on quality under ``retraining.quality``."""
    return {"realized": realized, "estimated": estimated, "both": realized or estimated}[
        uc.retraining.quality
    ]


def _naive_utc(moment: dt.datetime) -> dt.datetime:
    stamp = pd.Timestamp(moment)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return stamp.to_pydatetime()


def _row(
    uc: UseCase,
    start: dt.datetime,
    end: dt.datetime,
    version: str,
    run_label: str,
    drift: DriftResult,
    quality: QualityResult | None,
    estimated: EstimatedQuality | None,
) -> dict[str, Any]:
    drift_breach = drift.dataset_drift
    realized_breach = quality is not None and quality.breach
    estimated_breach = estimated is not None and estimated.breach
    return {
        "window_start": start,
        "window_end": end,
        "model_name": uc.model_name,
        "model_version": version,
        "run_label": run_label,
        "reference_rows": drift.reference_rows,
        "reference_sampled": drift.reference_sampled,
        "current_rows": drift.current_rows,
        "current_sampled": drift.current_sampled,
        "labeled_rows": quality.rows if quality else 0,
        "drift_share": drift.drift_share,
        "drift_share_threshold": drift.drift_share_threshold,
        "dataset_drift": drift.dataset_drift,
        "drifted_columns": json.dumps(list(drift.drifted_columns)),
        "column_scores": drift.scores_json(),
        "quality_metric": quality.primary_metric if quality else None,
        "quality_value": quality.metrics[quality.primary_metric] if quality else None,
        "quality_test_value": (
            quality.test_metrics[quality.primary_metric] if quality else estimated.test_value if estimated else None
        ),
        "quality_drop": quality.drop if quality else None,
        "quality_metrics": json.dumps(
            {
                "metrics": dict(quality.metrics),
                "test_metrics": dict(quality.test_metrics),
                "drops": dict(quality.drops),
                "max_drop": quality.max_drop,
                "sampled_rows": quality.sampled_rows,
            }
            if quality
            else {},
            sort_keys=True,
        ),
        "estimated_quality_metric": estimated.primary_metric if estimated else None,
        "estimated_quality_value": estimated.value if estimated else None,
        "estimated_quality_drop": estimated.drop if estimated else None,
        "estimated_quality_metrics": estimated.metrics_json() if estimated else None,
        "drift_breach": drift_breach,
        "quality_breach": realized_breach,
        "estimated_quality_breach": estimated_breach,
        "breach": drift_breach or quality_breach(uc, realized_breach, estimated_breach),
        "retrain": None,
        "retrain_reason": None,
        "report_run_id": None,
        "report_uri": None,
    }


def _skew_columns(skew: Skew | None) -> dict[str, int | None]:
    if skew is None:
        return {"online_skew_checked": None, "online_skew_mismatched": None}
    return {"online_skew_checked": skew.checked, "online_skew_mismatched": len(skew.mismatched)}


def _skew_metrics(skew: Skew | None) -> dict[str, float]:
    if skew is None:
        return {}
    return {"online_skew_checked": float(skew.checked), "online_skew_mismatched": float(len(skew.mismatched))}


def _run_metrics(
    drift: DriftResult,
    quality: QualityResult | None,
    estimated: EstimatedQuality | None,
    decision: RetrainingDecision,
) -> dict[str, float]:
    metrics = {
        "drift_share": drift.drift_share,
        "drifted_columns": float(len(drift.drifted_columns)),
        "reference_sampled": float(drift.reference_sampled),
        "current_sampled": float(drift.current_sampled),
        "retrain": float(decision.retrain),
    }
    metrics |= {f"drift_score.{name}": score.score for name, score in drift.columns.items()}
    if quality:
        metrics |= {f"quality.{name}": value for name, value in quality.metrics.items()}
        metrics["quality_drop"] = quality.drop
    if estimated:
        metrics |= {f"estimated.{name}": value for name, value in estimated.metrics.items()}
        if estimated.drop is not None:
            metrics["estimated_quality_drop"] = estimated.drop
    return metrics
