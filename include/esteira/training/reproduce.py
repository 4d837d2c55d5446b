"""Retrain a finished candidate run from what it recorded and compare the metrics exactly.

The run holds everything needed: the use-case config it ran with (artifact, checked
against its sha256 tag), the candidate spec, the seed (in the config) and the lineage
(feature table URI and Delta version). The training set is rebuilt at that version, so
later writes to the feature table do not change the answer.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import mlflow.artifacts
import pandas as pd

from esteira import tracking
from esteira.config import get_settings
from esteira.tracking import DIGEST_PREFIX, TAG_CONFIG_SHA, delta_dataset
from esteira.training.fit import fit_and_score
from esteira.training.runs import (
    CANDIDATE_ARTIFACT,
    CONFIG_ARTIFACT,
    LINEAGE_ARTIFACT,
    config_sha256,
)
from esteira.usecase import UseCase

FrameLoader = Callable[[UseCase, Mapping[str, Any]], pd.DataFrame]


@dataclass(frozen=True)
class ReproduceReport:
    run_id: str
    candidate: str
    table_uri: str
    version: int
    recorded: dict[str, float]
    reproduced: dict[str, float]
    mismatches: list[str] = field(default_factory=list)

    @property
    def matches(self) -> bool:
        return not self.mismatches

    def describe(self) -> str:
        head = (
            f"run {self.run_id} ({self.candidate}) retrained from {self.table_uri} "
            f"at Delta version {self.version}: "
            + ("metrics match exactly" if self.matches else "DIFFERENT")
        )
        rows = [
            f"  {name:<20} recorded {self.recorded.get(name)!r:<24} "
            f"reproduced {self.reproduced.get(name)!r}"
            for name in sorted(set(self.recorded) | set(self.reproduced))
        ]
        return "\n".join([head, *rows, *(f"  ! {m}" for m in self.mismatches)])


def _optional_int(value: Any) -> int | None:
    return None if value in (None, "", "None") else int(value)


def feature_store_frame(uc: UseCase, lineage: Mapping[str, Any]) -> pd.DataFrame:
    """The training set rebuilt from the feature store at the recorded Delta version."""
    from esteira.features.training_set import build_training_set

    frame, _ref = build_training_set(
        uc,
        get_settings(),
        dt.datetime.fromisoformat(str(lineage["start"])),
        dt.datetime.fromisoformat(str(lineage["end"])),
        version=int(lineage["version"]),
        labels_version=_optional_int(lineage.get("labels_version")),
    )
    return frame


def reproduce(run_id: str, load_frame: FrameLoader | None = None) -> ReproduceReport:
    """Retrain the candidate of ``run_id`` and compare every recorded metric exactly.

    ``load_frame(uc, lineage)`` rebuilds the training set (default: the feature store at
    the recorded version). Mismatching dataset digests are reported as well, since they
    explain mismatching metrics.
    """
    run = tracking.client().get_run(run_id)
    base = f"runs:/{run_id}/"
    uc = UseCase.model_validate(json.loads(mlflow.artifacts.load_text(base + CONFIG_ARTIFACT)))
    candidate = mlflow.artifacts.load_dict(base + CANDIDATE_ARTIFACT)
    lineage = mlflow.artifacts.load_dict(base + LINEAGE_ARTIFACT)
    mismatches = []
    if config_sha256(uc) != run.data.tags.get(TAG_CONFIG_SHA):
        mismatches.append("the logged config does not hash to the run's config_sha256 tag")
    frame = (load_frame or feature_store_frame)(uc, lineage)
    fitted = fit_and_score(uc, candidate, frame)
    for context, part in fitted.split.parts().items():
        digest = delta_dataset(part, uc.feature_names, uc.label.column, lineage, context).digest
        recorded_digest = run.data.tags.get(f"{DIGEST_PREFIX}{context}")
        if digest != recorded_digest:
            mismatches.append(f"{context} data digest {digest} != recorded {recorded_digest}")
    recorded = {k: v for k, v in run.data.metrics.items() if k.startswith(("val_", "test_"))}
    reproduced = {k: v for k, v in fitted.metrics.items() if not math.isnan(v)}  # as logged
    for name in sorted(set(recorded) | set(reproduced)):
        if recorded.get(name) != reproduced.get(name):
            mismatches.append(f"{name}: recorded {recorded.get(name)!r}, got {reproduced.get(name)!r}")
    return ReproduceReport(
        run_id=run_id,
        candidate=candidate["name"],
        table_uri=str(lineage["table_uri"]),
        version=int(lineage["version"]),
        recorded=recorded,
        reproduced=reproduced,
        mismatches=mismatches,
    )
