"""The gate's comparison: candidate and champion on the same test set, metric by metric, with
the rules that decided. One shape for the gate's table, `esteira registry history`, the demo
summary and the Esteira page, so none of them shows a version's metrics on its own test set
as if they were comparable with another's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from esteira.evaluation.metrics import GREATER_IS_BETTER, MLFLOW_NAMES

_OURS = {mlflow: ours for ours, mlflow in MLFLOW_NAMES.items()}


def mlflow_name(metric: str) -> str:
    """Our metric name as ``mlflow.models.evaluate`` reports it (the gate's metrics)."""
    return MLFLOW_NAMES.get(metric, metric)


@dataclass(frozen=True)
class MetricRow:
    """One metric of the comparison; ``champion`` is None when there was no champion."""

    metric: str
    candidate: float | None
    champion: float | None
    greater_is_better: bool
    rule: str

    @property
    def change(self) -> float | None:
        if self.candidate is None or self.champion is None:
            return None
        return self.candidate - self.champion

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "candidate": self.candidate,
            "champion": self.champion,
            "change": self.change,
            "better": "higher" if self.greater_is_better else "lower",
            "rule": self.rule,
        }


def rule_text(rule: Mapping[str, Any]) -> str:
    """A declared threshold (``usecase.MetricThreshold`` as a dict) in words."""
    greater = rule.get("greater_is_better", True)
    parts = []
    if rule.get("threshold") is not None:
        parts.append(f"{'>=' if greater else '<='} {rule['threshold']:g}")
    for key, unit in (("min_absolute_change", ""), ("min_relative_change", "%")):
        value = rule.get(key)
        if value is None:
            continue
        amount = f"{abs(value) * 100:g}%" if unit else f"{abs(value):g}"
        if value > 0:
            parts.append(f"better than champion by >= {amount}")
        elif value == 0:
            parts.append("no worse than champion")
        else:
            parts.append(f"at most {amount} worse than champion")
    return "; ".join(parts)


def compare(
    candidate: Mapping[str, float],
    champion: Mapping[str, float] | None,
    thresholds: Sequence[Mapping[str, Any]],
    metrics: Sequence[str] = (),
) -> list[MetricRow]:
    """Rows for ``metrics`` (MLflow's names) and every thresholded metric, in that order."""
    rules = {mlflow_name(rule["metric"]): rule for rule in thresholds}
    rows = []
    for name in dict.fromkeys([*(mlflow_name(m) for m in metrics), *rules]):
        rule = rules.get(name)
        greater = rule.get("greater_is_better", True) if rule else GREATER_IS_BETTER.get(_OURS.get(name, name), True)
        rows.append(MetricRow(
            metric=name,
            candidate=candidate.get(name),
            champion=champion.get(name) if champion else None,
            greater_is_better=greater,
            rule=rule_text(rule) if rule else "",
        ))
    return rows


def text_lines(
    rows: Sequence[Mapping[str, Any]], champion_version: int | str | None, indent: str = "  "
) -> list[str]:
    """Rows (``MetricRow.to_dict()``) as aligned text lines: the CLI and the demo summary.
    ``champion_version`` as the tags write it (``"none"`` or empty: there was no champion)."""
    champion = "no champion" if champion_version in (None, "", "none") else f"champion v{champion_version}"
    lines = [f"{indent}{'metric':<26} {'candidate':>10} {champion:>14} {'change':>9}  rule"]
    for row in rows:
        change = "-" if row["change"] is None else f"{row['change']:+.4f}"
        lines.append(
            f"{indent}{row['metric']:<26} {_number(row['candidate']):>10} {_number(row['champion']):>14} "
            f"{change:>9}  {row['rule']}"
        )
    return lines


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
