"""The Assets that chain the stages (names in docs/architecture.md)."""

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
