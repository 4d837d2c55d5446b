"""The feature-refresh DAG's steps: validate and compute the window's raw events into the
Delta feature table (in the worker, or as a Databricks run of `esteira.jobs.feature_refresh`);
then, in the Airflow worker wherever the refresh ran, what the serving side needs of it
(`publish`): the Unity Catalog tables when the use case declares ``tables:``, and the online
store when it declares ``online:``. Those run in the worker because it holds the Databricks
connection and reaches the online store (Redis, or SQLite under ``ESTEIRA_HOME``), which a
Databricks cluster need not."""

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
    return to_reference(result)


def publish(uc: UseCase, reference: dict) -> dict:
    """`register_tables`, then `materialize_online`: the refresh's reference as the features
    Asset event carries it."""
    return materialize_online(uc, register_tables(uc, reference))


def register_tables(uc: UseCase, reference: dict) -> dict:
    """When the use case declares ``tables:``, create or bring current the Unity Catalog
    tables over what the refresh wrote; the reference then names them."""
    if uc.tables is None:
        return reference
    from esteira.databricks.unity_catalog import register_written

    uris = [reference["table_uri"], reference["labels_uri"], reference["quarantine_uri"]]
    return {**reference, "unity_catalog": register_written(uc, uris)}


def materialize_online(uc: UseCase, reference: dict) -> dict:
    """When the use case declares ``online:``, bring the online store to the feature table
    at the version the refresh wrote; the reference then says what was materialized."""
    if uc.online is None:
        return reference
    from esteira.config import get_settings
    from esteira.features.online import materialize

    done = materialize(uc, get_settings(), reference["version"])
    return {**reference, "online": to_reference(done)}
