"""The drift-monitoring DAG's step: sample the window's rows as they stream, read the
champion's stored reference, estimate its quality, hand all of it to
`monitor.run_monitoring`, and turn its decision into a retraining request.

Memory is bounded by ``monitoring.sample_size``, not by the window: no input is read whole
(`esteira.monitoring.inputs`), and the reference is the sample stored when the version was
registered (`esteira.monitoring.reference`), not the training set rebuilt per window.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from esteira.config import get_settings
from esteira.results import NothingToDo, Reference, StageResult
from esteira.stages.window import RunWindow
from esteira.usecase import UseCase

log = logging.getLogger("esteira.monitoring")


def monitor(uc: UseCase, window: RunWindow | None, run_id: str) -> Reference:
    """Monitor ``window`` (None: the newest ``monitoring.window_days`` days of the feature
    table) against the champion; the outcome says whether to retrain and why.

    A table that does not exist yet reads as no rows; any other read error fails, naming
    the table (`esteira.tables.TableReadError`).
    """
    from esteira import tables, tracking
    from esteira.monitoring.drift import compute_drift
    from esteira.monitoring.estimation import estimate_window
    from esteira.monitoring.inputs import current_sample, labeled_sample
    from esteira.monitoring.monitor import run_monitoring
    from esteira.monitoring.reference import load_reference
    from esteira.registry.lineage import read_version
    from esteira.registry.transitions import get_alias_version
    from esteira.serving.model_loader import load_version
    from esteira.stages.window import NoDataYet, latest_window

    settings = get_settings()
    features_uri = tables.table_uri(settings, uc, tables.FEATURES)
    try:
        window = window or latest_window(features_uri, uc.timestamp, uc.monitoring.window_days)
    except NoDataYet as nothing:
        return {"retrain": False, "reason": str(nothing)}
    version = get_alias_version(uc, "champion")
    if version is None:
        return {"retrain": False, "reason": "no champion yet: nothing to monitor", "window_end": window.end.isoformat()}
    current = current_sample(uc, settings, window.start_at, window.end_at)
    if current.source_rows == 0:
        return {"retrain": False, "reason": f"no rows in {window}", "window_end": window.end.isoformat()}
    record = read_version(uc, version, settings)
    model = load_version(settings, uc.model_name, str(version), compiled_threads=None)
    reference = load_reference(uc, settings, version, record, model)
    metrics = tracking.client(settings).get_run(record.run_id).data.metrics
    test_metrics = {k: v for k, v in metrics.items() if k.startswith("test_")}
    drift = compute_drift(reference, current, uc)
    estimated = estimate_window(uc, reference.frame, model, current.frame, test_metrics)
    del reference, current, model  # only their results are needed now: free them before the writes
    outcome = run_monitoring(
        uc,
        settings,
        drift,
        window.start_at,
        window.end_at,
        str(version),
        test_metrics,
        labeled_sample(uc, settings, version, window.start_at, window.end_at),
        run_id,
        estimated=estimated,
        skew=online_skew(uc, settings),
    )
    quality = outcome.quality
    log.info(
        "window %s, champion v%s: drift share %.2f (threshold %.2f), drifted %s; estimated %s %s, "
        "realized %s; %s",
        window,
        version,
        drift.drift_share,
        drift.drift_share_threshold,
        list(drift.drifted_columns) or "none",
        uc.training.primary_metric,
        "n/a" if _finite(estimated and estimated.value) is None else f"{estimated.value:.3f}",
        "labels pending" if quality is None else f"{quality.metrics[quality.primary_metric]:.3f}",
        outcome.decision.reason,
    )
    log.info("Evidently report: %s", outcome.report.artifact_uri)
    registered = {}
    if uc.tables is not None:  # the monitoring table, registered in Unity Catalog (in the worker)
        from esteira.databricks.unity_catalog import register_written

        registered = {"unity_catalog": register_written(uc, [tables.table_uri(settings, uc, tables.MONITORING)])}
    return {
        **registered,
        "retrain": outcome.decision.retrain,
        "reason": outcome.decision.reason,
        "window_start": window.start.isoformat(),
        "window_end": window.end.isoformat(),
        "model_version": version,
        "drift_share": drift.drift_share,
        "dataset_drift": drift.dataset_drift,
        "drifted_columns": list(drift.drifted_columns),
        "estimated_quality": _finite(None if estimated is None else estimated.value),
        "realized_quality": _finite(None if quality is None else quality.metrics[quality.primary_metric]),
        "current_rows": drift.current_rows,
        "current_sampled": drift.current_sampled,
        "report_uri": outcome.report.artifact_uri,
        "report_run_id": outcome.report.run_id,
        "online_skew_mismatched": outcome.row["online_skew_mismatched"],
    }


def online_skew(uc: UseCase, settings) -> Any:
    """The online store's skew check when the use case declares ``online:`` (None without
    one). A store that cannot be read, or holds nothing yet, is logged and recorded as null:
    it does not cost the window its drift and quality results."""
    if uc.online is None:
        return None
    from esteira.features.online import OnlineStoreError, check_skew

    try:
        skew = check_skew(uc, settings)
    except OnlineStoreError as error:
        log.warning("online skew check skipped: %s", error)
        return None
    if skew.mismatched:
        log.warning("online store: %d of %d sampled entities differ from the feature table at v%d "
                    "(first: %s); the next refresh does not repair them, rematerialize with "
                    "esteira.features.online.materialize after clearing the store",
                    len(skew.mismatched), skew.checked, skew.version, skew.mismatched[:5])
    return skew


def _finite(value: float | None) -> float | None:
    """A metric for the XCom: NaN (a class absent from the window) as None."""
    return None if value is None or math.isnan(value) else value


def retraining_request(outcome: Mapping[str, Any]) -> StageResult:
    """The retraining request's Asset metadata, or NothingToDo when the rule did not fire."""
    if not outcome.get("retrain"):
        return NothingToDo(f"no retraining: {outcome.get('reason', 'no breach')}")
    return {"reason": outcome["reason"], "window_end": outcome["window_end"],
            "model_version": outcome.get("model_version")}
