"""When a candidate is *nothing new*: a challenger only if it could differ from the champion.

Two ways to know it cannot (the rule is documented on ``usecase.GateSpec``):

- it was trained exactly as the champion was: the same feature and labels Delta versions and
  window, the same configuration and the same candidate (a deterministic fit, so the same
  model); read from the tags every training run carries;
- its gate metrics equal the champion's within ``gate.unchanged_tolerance`` and no threshold
  asks for a strict improvement (with one declared, an equal candidate is simply rejected).

Both return the reason, or None: the gate turns a reason into the verdict ``nothing_new``.
"""

from __future__ import annotations

from collections.abc import Mapping

from esteira.evaluation.metrics import MLFLOW_NAMES
from esteira.tracking import TAG_CONFIG_SHA
from esteira.training.runs import LINEAGE_PREFIX, TAG_CANDIDATE
from esteira.usecase import MetricThreshold, UseCase

_DATA = ("table_uri", "version", "labels_uri", "labels_version", "start", "end")
IDENTITY_TAGS = (*(f"{LINEAGE_PREFIX}{key}" for key in _DATA), TAG_CONFIG_SHA, TAG_CANDIDATE)


def same_training(
    candidate_tags: Mapping[str, str], champion_tags: Mapping[str, str], champion_version: int
) -> str | None:
    """Why the candidate's run was trained exactly as the champion's, or None (also when
    either run lacks one of the tags, e.g. a champion registered outside Esteira)."""
    if not all(candidate_tags.get(key) and champion_tags.get(key) for key in IDENTITY_TAGS):
        return None
    if any(candidate_tags[key] != champion_tags[key] for key in IDENTITY_TAGS):
        return None
    data = {key: candidate_tags[f"{LINEAGE_PREFIX}{key}"] for key in _DATA}
    return (
        f"nothing new: trained exactly as champion v{champion_version} was (features "
        f"v{data['version']}, labels v{data['labels_version']}, window [{data['start'][:10]}, "
        f"{data['end'][:10]}), the same configuration and candidate {candidate_tags[TAG_CANDIDATE]})"
    )


def asks_for_improvement(rule: MetricThreshold) -> bool:
    """A positive ``min_absolute_change`` or ``min_relative_change``: "better by at least"."""
    return any(value is not None and value > 0 for value in (rule.min_absolute_change, rule.min_relative_change))


def unchanged_metrics(
    uc: UseCase,
    candidate: Mapping[str, float],
    champion: Mapping[str, float],
    champion_version: int,
) -> str | None:
    """Why the candidate's thresholded metrics (MLflow's names) equal the champion's, or
    None when one differs, is missing, or a threshold asks for an improvement."""
    rules = uc.gate.thresholds
    if any(asks_for_improvement(rule) for rule in rules):
        return None
    tolerance = uc.gate.unchanged_tolerance
    names = list(dict.fromkeys(MLFLOW_NAMES.get(rule.metric, rule.metric) for rule in rules))
    if not all(name in candidate and name in champion for name in names):
        return None
    if not all(abs(candidate[name] - champion[name]) <= tolerance for name in names):
        return None
    shown = ", ".join(f"{name} {candidate[name]:.4f} (champion {champion[name]:.4f})" for name in names)
    return (
        f"nothing new: {shown} are within {tolerance:g} of champion v{champion_version}'s on the "
        "same test set, and no threshold asks for an improvement"
    )
