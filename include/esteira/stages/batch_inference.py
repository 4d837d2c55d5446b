"""The batch-inference DAG's steps: score a window of feature rows with the champion (in the
worker or on Databricks), then register the predictions table in Unity Catalog."""

from __future__ import annotations

import logging

from esteira.results import NothingToDo, StageResult
from esteira.stages.window import RunWindow
from esteira.usecase import UseCase

log = logging.getLogger("esteira.serving")


def score(uc: UseCase, window: RunWindow | None, run_id: str) -> StageResult:
    """Score ``window`` (None: the newest ``monitoring.window_days`` days of the feature
    table); NothingToDo when there is no champion or no feature row yet. Runs in the worker
    or as a Databricks run of `esteira.jobs.batch_inference`."""
    from esteira import tables
    from esteira.config import get_settings
    from esteira.serving.batch import NoChampionError, score_batch
    from esteira.stages.window import NoDataYet, latest_window

    settings = get_settings()
    features = tables.table_uri(settings, uc, tables.FEATURES)
    if not tables.exists(features):
        return NothingToDo(f"no feature table at {features} yet: run a feature refresh first")
    try:
        window = window or latest_window(features, uc.timestamp, uc.monitoring.window_days)
        result = score_batch(uc, settings, window.start_at, window.end_at, run_id)
    except (NoChampionError, NoDataYet) as nothing:
        return NothingToDo(str(nothing))
    log.info("scored %s: %s", window, result)
    return {**result, "start": window.start.isoformat(), "end": window.end.isoformat()}


def register_tables(uc: UseCase, reference: dict) -> dict:
    """When the use case declares ``tables:``, create or bring current the predictions
    table in Unity Catalog (in the Airflow worker, which holds the Databricks connection,
    wherever the scoring ran); the reference then names it."""
    if uc.tables is None or reference["version"] is None:
        return reference
    from esteira.databricks.unity_catalog import register_written

    return {**reference, "unity_catalog": register_written(uc, [reference["table_uri"]])}
