"""The Assets that chain the stages (names in DESIGN.md)."""

from __future__ import annotations

from airflow.sdk import Asset

from esteira.usecase import UseCase


def features(uc: UseCase) -> Asset:
    return Asset(uc.asset_uri("features"))


def challenger(uc: UseCase) -> Asset:
    return Asset(uc.asset_uri("model/challenger"))


def champion(uc: UseCase) -> Asset:
    return Asset(uc.asset_uri("model/champion"))


def predictions(uc: UseCase) -> Asset:
    return Asset(uc.asset_uri("predictions"))


def retraining_request(uc: UseCase) -> Asset:
    return Asset(uc.asset_uri("retraining_request"))


def triggering_extra(context, asset: Asset) -> dict:
    """The ``extra`` of the latest event of ``asset`` that triggered this run, or {}."""
    events = context.get("triggering_asset_events") or {}
    for key, items in events.items():
        if getattr(key, "uri", key) == asset.uri and items:
            return dict(items[-1].extra or {})
    return {}
