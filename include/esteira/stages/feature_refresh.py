"""The feature-refresh DAG's step: validate and compute the window's raw events into the
Delta feature table (in the worker, or as a Databricks run of `esteira.jobs.feature_refresh`),
then, when the use case declares ``online:``, materialize the latest rows into the online
store (the reference records what was materialized)."""

from __future__ import annotations

from esteira.results import NothingToDo, StageResult, to_reference
from esteira.stages.window import RunWindow
from esteira.usecase import UseCase


def refresh(uc: UseCase, window: RunWindow, run_id: str) -> StageResult:
    """Refresh ``window``; NothingToDo when nothing was delivered for it yet."""
    from esteira.config import get_settings
    from esteira.features.refresh import NoLandingData, refresh_features

    try:
        result = refresh_features(uc, get_settings(), window.start, window.end, run_id=run_id)
    except NoLandingData as nothing:
        return NothingToDo(str(nothing))
    reference = to_reference(result)
    if uc.online is not None:
        from esteira.features.online import materialize

        reference["online"] = to_reference(materialize(uc, get_settings(), result.version))
    return reference


def register_tables(uc: UseCase, reference: dict) -> dict:
    """When the use case declares ``tables:``, create or bring current the Unity Catalog
    tables over what the refresh wrote; the reference then names them. Runs in the Airflow
    worker, which holds the Databricks connection, wherever the refresh itself ran."""
    if uc.tables is None:
        return reference
    from esteira.databricks.unity_catalog import register_written

    uris = [reference["table_uri"], reference["labels_uri"], reference["quarantine_uri"]]
    return {**reference, "unity_catalog": register_written(uc, uris)}
