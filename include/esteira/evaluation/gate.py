"""The evaluation gate: the best candidate against the champion it is given, on one test set.

Both models are evaluated with ``mlflow.models.evaluate`` on the same ``PandasDataset``
(so both evaluation runs record the same dataset digest) and the decision is
``mlflow.validate_evaluation_results`` with ``MetricThreshold``s built from
``uc.gate.thresholds``.

MLflow's MetricThreshold only accepts a *required improvement* (``min_absolute_change``
> 0, ``min_relative_change`` in [0, 1]). A use case may also declare a *tolerance*, "not
worse than the champion by more than x" (``min_absolute_change`` <= 0 or
``min_relative_change`` < 0): those parts are checked here with MLflow's own formulas and
reported in the same way. Without a champion only absolute thresholds apply.

A rejection is a result (``GateResult.passed`` is False in mode ``enabled``), not an error.
So is *nothing new* (``evaluation.novelty``): a candidate trained exactly as the champion was
is judged without evaluating either model, one whose metrics equal the champion's after
the evaluation; neither is registered, whatever the mode (but ``disabled``).
The caller looks the champion up in the registry and hands it in (``ChampionRef``): the
gate judges, it never reads or moves aliases.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.models import EvaluationResult, MetricThreshold
from mlflow.models.evaluation.validation import ModelValidationFailedException

from esteira import tracking
from esteira.evaluation.comparison import compare, mlflow_name
from esteira.evaluation.metrics import metric_names
from esteira.evaluation.novelty import same_training, unchanged_metrics
from esteira.evaluation.result import ChampionRef, GateResult, Mode
from esteira.serving import pyfunc_flavor
from esteira.tracking import create_child_run, delta_dataset, lineage_dict
from esteira.usecase import MetricThreshold as Rule
from esteira.usecase import UseCase

COMPARISON_ARTIFACT = "gate/comparison.md"
RESULT_ARTIFACT = "gate/result.json"


class GateConfigError(ValueError):
    """A gate rule names a metric the evaluation does not produce."""


def _split_rule(rule: Rule, has_champion: bool) -> tuple[MetricThreshold | None, list[tuple]]:
    """The part MLflow can check, and the tolerances (kind, value) checked here."""
    absolute = rule.min_absolute_change if has_champion else None
    relative = rule.min_relative_change if has_champion else None
    tolerances = []
    if absolute is not None and absolute <= 0:
        tolerances.append(("absolute", absolute))
        absolute = None
    if relative is not None and relative < 0:
        tolerances.append(("relative", relative))
        relative = None
    if rule.threshold is None and absolute is None and relative is None:
        return None, tolerances
    native = MetricThreshold(
        threshold=rule.threshold,
        min_absolute_change=absolute,
        min_relative_change=relative,
        greater_is_better=rule.greater_is_better,
    )
    return native, tolerances


def _tolerance_failure(
    rule: Rule, kind: str, value: float, candidate: float, champion: float
) -> str | None:
    better = 1 if rule.greater_is_better else -1
    if kind == "absolute":
        ok = better * (candidate - champion) >= value
    elif champion == 0:
        ok = better * (candidate - champion) >= 0
    else:
        ok = better * (candidate - champion) / abs(champion) >= value
    if ok:
        return None
    return (
        f"Metric {rule.metric} {kind} tolerance check failed: candidate = {candidate}, "
        f"champion = {champion}, allowed {kind} change = {value}."
    )


def decide(
    uc: UseCase, candidate_result: EvaluationResult, champion_result: EvaluationResult | None
) -> list[str]:
    """The reasons to reject the candidate (empty: it passes). ``champion_result`` None
    means there is no champion: only absolute thresholds apply."""
    candidate = candidate_result.metrics
    champion = champion_result.metrics if champion_result is not None else None
    native: dict[str, MetricThreshold] = {}
    reasons: list[str] = []
    for rule in uc.gate.thresholds:
        name = mlflow_name(rule.metric)
        if name not in candidate:
            raise GateConfigError(
                f"gate.thresholds metric '{rule.metric}' is not computed by the evaluation; "
                f"known: {', '.join(sorted(candidate))}"
            )
        threshold, tolerances = _split_rule(rule, champion is not None)
        if threshold is not None:
            native[name] = threshold
        for kind, value in tolerances:
            if name not in champion:
                reasons.append(f"Metric {rule.metric} is missing from the champion's evaluation.")
                continue
            failure = _tolerance_failure(rule, kind, value, candidate[name], champion[name])
            if failure:
                reasons.append(failure)
    if native:
        try:
            mlflow.validate_evaluation_results(native, candidate_result, champion_result)
        except ModelValidationFailedException as exc:
            reasons = [line for line in exc.message.split(os.linesep) if line] + reasons
    return reasons


def _evaluate(
    client: MlflowClient, parent_run_id: str, run_name: str, model_uri: str, dataset, model_type
) -> EvaluationResult:
    run_id = create_child_run(client, parent_run_id, run_name, role="gate_evaluation", tags={})
    model = mlflow.pyfunc.load_model(model_uri)
    flavor = model.metadata.flavors["python_function"]
    if flavor.get("loader_module") == pyfunc_flavor.LOADER_MODULE:
        # Esteira's loader (probabilities on request) wraps the sklearn pipeline; the
        # evaluator reaches predict_proba, and so ROC AUC and log loss, only through the
        # loader modules it knows, and the raw model here is exactly sklearn's.
        flavor["loader_module"] = "mlflow.sklearn"
    # evaluate() logs into the active run; one gate runs per process (an Airflow task), so
    # the fluent run is safe here and always ended by the context manager.
    with mlflow.start_run(run_id=run_id):
        result = mlflow.models.evaluate(
            model,
            data=dataset,
            model_type=model_type,
            evaluators="default",
            evaluator_config={"log_model_explainability": False},
        )
    return result


def _table(
    uc: UseCase, candidate: Mapping[str, float], champion: Mapping[str, float] | None
) -> str:
    lines = [
        "| metric | candidate | champion | change | better is | rule |",
        "|---|---|---|---|---|---|",
    ]
    thresholds = [rule.model_dump() for rule in uc.gate.thresholds]
    for row in compare(candidate, champion, thresholds, metric_names(uc.problem_type)):
        change = "-" if row.change is None else f"{row.change:+.4f}"
        lines.append(
            f"| {row.metric} | {_fmt(row.candidate)} | {_fmt(row.champion)} | {change} | "
            f"{'higher' if row.greater_is_better else 'lower'} | {row.rule} |"
        )
    return "\n".join(lines)


def _plain(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Scalar metrics as floats (JSON-able for XCom and tags)."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def evaluate_gate(
    uc: UseCase,
    candidate_run_id: str,
    candidate_model_uri: str,
    test: pd.DataFrame,
    lineage: Any,
    parent_run_id: str,
    *,
    champion: ChampionRef | None,
    mode: Mode | None = None,
) -> GateResult:
    """Judge the candidate against ``champion`` (None: there is none yet) on ``test`` (the
    held-out split).

    ``mode`` overrides ``uc.gate.mode`` (a per-run Param). The comparison table and the
    result are logged on the parent run and returned; ``champion_version`` is the version
    the promotion must still find as champion (compare-and-set). With ``champion.run_id``
    a candidate trained exactly as the champion was is *nothing new* before any evaluation.
    """
    mode = mode or uc.gate.mode
    champion_version = champion.version if champion is not None else None
    if mode == "disabled":
        return GateResult(True, mode, "skipped", champion_version=champion_version)
    client = tracking.client()
    thresholds = [rule.model_dump() for rule in uc.gate.thresholds]
    same = _same_training(client, candidate_run_id, champion)
    if same is not None:
        result = GateResult(
            False, mode, "nothing_new", [same], champion_version=champion_version,
            thresholds=thresholds,
        )
        _record(client, parent_run_id, candidate_run_id, result)
        return result
    lineage = lineage_dict(lineage)
    dataset = delta_dataset(
        test, uc.feature_names, uc.label.column, lineage, f"{uc.features.table}_test"
    )
    model_type = "classifier" if uc.problem_type == "binary_classification" else "regressor"
    candidate = _evaluate(
        client, parent_run_id, "gate: candidate", candidate_model_uri, dataset, model_type
    )
    baseline = None
    if champion is not None:
        baseline = _evaluate(
            client,
            parent_run_id,
            f"gate: champion v{champion.version}",
            champion.model_uri,
            dataset,
            model_type,
        )
    reasons = decide(uc, candidate, baseline)
    candidate_metrics = _plain(candidate.metrics)
    champion_metrics = _plain(baseline.metrics) if baseline is not None else None
    verdict = "rejected" if reasons else "passed"
    if not reasons and champion is not None:
        unchanged = unchanged_metrics(uc, candidate_metrics, champion_metrics, champion.version)
        if unchanged is not None:
            verdict, reasons = "nothing_new", [unchanged]
    result = GateResult(
        passed=verdict == "passed" or (mode == "dry_run" and verdict == "rejected"),
        mode=mode,
        verdict=verdict,
        reasons=reasons,
        table=_table(uc, candidate_metrics, champion_metrics),
        champion_version=champion_version,
        candidate_metrics=candidate_metrics,
        champion_metrics=champion_metrics or {},
        dataset_digest=dataset.digest,
        thresholds=thresholds,
    )
    _record(client, parent_run_id, candidate_run_id, result)
    return result


def _same_training(client: MlflowClient, candidate_run_id: str, champion: ChampionRef | None) -> str | None:
    if champion is None or not champion.run_id:
        return None
    return same_training(
        client.get_run(candidate_run_id).data.tags,
        client.get_run(champion.run_id).data.tags,
        champion.version,
    )


def _record(client: MlflowClient, parent_run_id: str, candidate_run_id: str, result: GateResult):
    header = (
        f"Gate ({result.mode}): {result.verdict.upper()} against "
        f"{'champion v' + str(result.champion_version) if result.champion_version else 'no champion'}"
    )
    reasons = "\n".join(f"- {r}" for r in result.reasons) or "- all rules passed"
    client.log_text(parent_run_id, f"{header}\n\n{result.table}\n\n{reasons}\n", COMPARISON_ARTIFACT)
    client.log_text(parent_run_id, json.dumps(result.to_dict(), indent=2), RESULT_ARTIFACT)
    for run_id in (parent_run_id, candidate_run_id):
        client.set_tag(run_id, "esteira.gate.verdict", result.verdict)
        client.set_tag(run_id, "esteira.gate.mode", result.mode)


def describe(result: GateResult) -> str:
    """The text for the task log: verdict, reasons and the table."""
    champion = f"champion v{result.champion_version}" if result.champion_version else "no champion"
    lines = [f"gate {result.mode}: {result.verdict} (compared against {champion})"]
    lines += [f"  - {r}" for r in result.reasons]
    if result.table:
        lines += ["", result.table]
    return "\n".join(lines)
