"""Fit one candidate and record it as a child run of the DAG run's parent run.

The model is logged with ``pyfunc_flavor.log_model(..., model_id=..., run_id=...)`` (MLflow's
sklearn flavor, plus probabilities on request) on a LoggedModel created by the client for
the run's experiment: no fluent active run is needed, so candidates can be logged
concurrently.

Serialization is skops (MLflow's default, which does not execute code on load) with an
explicit allowlist of the few types our model families need. The types found in a model
are checked against that list when it is logged, so a new family with an unknown type fails
at training time rather than at load time in the server.

The pip requirements are given explicitly (the versions this process trained with):
MLflow's inference would otherwise load the model in a subprocess to sniff its imports,
about 10 s per candidate on our machines, for the same answer.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import mlflow.sklearn
import numpy as np
import pandas as pd
import skops.io
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.models import infer_signature
from mlflow.utils.time import get_current_time_millis
from sklearn.pipeline import Pipeline

from esteira import tracking
from esteira.evaluation.metrics import score
from esteira.serving import pyfunc_flavor
from esteira.tracking import create_child_run, delta_dataset, lineage_dict
from esteira.training import plots
from esteira.training.candidates import build_pipeline
from esteira.training.runs import (
    CANDIDATE_ARTIFACT,
    CONFIG_ARTIFACT,
    LINEAGE_ARTIFACT,
    TAG_CANDIDATE,
    TAG_MODEL_URI,
    TAG_SEED,
    airflow_tags,
    common_tags,
    config_json,
    lineage_tags,
    log_datasets,
)
from esteira.training.split import Split, time_split
from esteira.usecase import UseCase

SKOPS_TRUSTED_TYPES = (
    "numpy.dtype",
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
)
MODEL_NAME = "model"


@dataclass(frozen=True)
class CandidateResult:
    """What a candidate task hands on: references and a few numbers, never data."""

    name: str
    run_id: str
    model_uri: str
    metrics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "run_id": self.run_id,
            "model_uri": self.model_uri,
            "metrics": self.metrics,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> CandidateResult:
        return cls(raw["name"], raw["run_id"], raw["model_uri"], dict(raw["metrics"]))


@dataclass(frozen=True)
class Fitted:
    model: Pipeline
    split: Split
    metrics: dict[str, float]


def fit_and_score(uc: UseCase, candidate: Mapping[str, Any], frame: pd.DataFrame) -> Fitted:
    """Split by time, fit on train, score on validation (``val_``) and test (``test_``).

    Deterministic for a given frame, config and seed: reproduction calls exactly this.
    """
    split = time_split(uc, frame)
    model = build_pipeline(uc, candidate, uc.training.seed)
    label = uc.label.column
    model.fit(split.train[uc.feature_names], split.train[label])
    metrics = {}
    for prefix, part in (("val", split.validation), ("test", split.test)):
        values = score(uc.problem_type, model, part[uc.feature_names], part[label])
        metrics |= {f"{prefix}_{k}": v for k, v in values.items()}
    return Fitted(model, split, metrics)


def _find_earlier_run(client: MlflowClient, parent_run_id: str, name: str):
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    return client.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.`mlflow.parentRunId` = '{parent_run_id}' and tags.`{TAG_CANDIDATE}` = '{name}'"
        ),
        order_by=["attributes.start_time ASC"],
    )


def _result_of(run) -> CandidateResult:
    return CandidateResult(
        name=run.data.tags[TAG_CANDIDATE],
        run_id=run.info.run_id,
        model_uri=run.data.tags[TAG_MODEL_URI],
        metrics={k: v for k, v in run.data.metrics.items() if k.startswith(("val_", "test_"))},
    )


def _check_trusted_types(model: Pipeline) -> list[str]:
    found = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    unknown = sorted(set(found) - set(SKOPS_TRUSTED_TYPES))
    if unknown:
        raise TypeError(
            f"the model holds types outside the skops allowlist: {unknown}; "
            "review them and add them to SKOPS_TRUSTED_TYPES in esteira.training.fit"
        )
    return sorted(found)


def _log_model(
    client: MlflowClient, run_id: str, uc: UseCase, candidate: Mapping[str, Any], fitted: Fitted
) -> str:
    # Integer features are declared as doubles: an int column with a missing value at
    # serving time arrives as float, which an integer schema would refuse.
    numeric = [f.name for f in uc.features.definitions if f.type in ("int", "bool")]
    example = fitted.split.train[uc.feature_names].head(5).astype({n: "float64" for n in numeric})
    signature = infer_signature(example, fitted.model.predict(example))
    experiment_id = client.get_run(run_id).info.experiment_id
    logged = client.create_logged_model(
        experiment_id,
        name=MODEL_NAME,
        source_run_id=run_id,
        params={k: str(v) for k, v in candidate["params"].items()},
        tags={TAG_CANDIDATE: candidate["name"]},
    )
    # The sklearn flavor plus a python_function loader that answers probabilities when
    # the request's params ask (declared in the signature), under `mlflow models serve` too.
    info = pyfunc_flavor.log_model(
        fitted.model,
        name=MODEL_NAME,
        model_id=logged.model_id,
        run_id=run_id,
        signature=signature,
        input_example=example,
        serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
        skops_trusted_types=_check_trusted_types(fitted.model),
        pip_requirements=[
            *mlflow.sklearn.get_default_pip_requirements(include_skops=True),
            f"numpy=={np.__version__}",
            f"pandas=={pd.__version__}",
        ],
    )
    return info.model_uri


def _log_plots(client: MlflowClient, run_id: str, uc: UseCase, fitted: Fitted) -> None:
    label, names = uc.label.column, uc.feature_names
    test, validation = fitted.split.test, fitted.split.validation
    if uc.problem_type == "binary_classification":
        figures = plots.classification_plots(fitted.model, test[names], test[label])
        scoring = "roc_auc"
    else:
        figures = plots.regression_plots(fitted.model, test[names], test[label])
        scoring = "neg_root_mean_squared_error"
    importance, figures["feature_importance"] = plots.feature_importance(
        fitted.model, validation[names], validation[label], scoring, uc.training.seed
    )
    for name, figure in figures.items():
        client.log_figure(run_id, figure, f"plots/{name}.png")
    client.log_dict(run_id, importance, "feature_importance.json")


def train_candidate(
    uc: UseCase,
    candidate: Mapping[str, Any],
    frame: pd.DataFrame,
    lineage: Any,
    parent_run_id: str,
    airflow: Mapping[str, Any] | None = None,
) -> CandidateResult:
    """Fit one candidate and record it as a child run of ``parent_run_id``.

    ``frame`` is the point-in-time training set (entity, timestamp, features, label) and
    ``lineage`` names the Delta table and version it came from. A retry finds the earlier
    run of the same parent and candidate: a FINISHED one is returned as is, an unfinished
    one is marked KILLED and the candidate is trained anew, so there is never a second
    FINISHED run for one candidate.
    """
    client = tracking.client()
    name = candidate["name"]
    for run in _find_earlier_run(client, parent_run_id, name):
        if run.info.status == "FINISHED" and TAG_MODEL_URI in run.data.tags:
            return _result_of(run)
        if run.info.status in ("RUNNING", "SCHEDULED"):
            client.set_terminated(run.info.run_id, "KILLED")
    lineage = lineage_dict(lineage)
    run_id = create_child_run(
        client,
        parent_run_id,
        name,
        role="candidate",
        tags={
            TAG_CANDIDATE: name,
            TAG_SEED: str(uc.training.seed),
            "esteira.family": candidate["family"],
            **common_tags(uc),
            **airflow_tags(airflow),
            **lineage_tags(lineage),
        },
    )
    try:
        fitted = fit_and_score(uc, candidate, frame)
        client.log_batch(
            run_id,
            params=_params(uc, candidate, fitted.split),
            metrics=_metrics(fitted.metrics),
        )
        datasets = {
            context: delta_dataset(
                part, uc.feature_names, uc.label.column, lineage, f"{uc.features.table}_{context}"
            )
            for context, part in fitted.split.parts().items()
        }
        log_datasets(client, run_id, datasets)
        client.log_text(run_id, config_json(uc), CONFIG_ARTIFACT)
        client.log_dict(run_id, dict(candidate), CANDIDATE_ARTIFACT)
        client.log_dict(run_id, lineage, LINEAGE_ARTIFACT)
        _log_plots(client, run_id, uc, fitted)
        model_uri = _log_model(client, run_id, uc, candidate, fitted)
        client.set_tag(run_id, TAG_MODEL_URI, model_uri)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return CandidateResult(name, run_id, model_uri, fitted.metrics)


def _params(uc: UseCase, candidate: Mapping[str, Any], split: Split) -> list[Param]:
    values = {
        "family": candidate["family"],
        **{f"model.{k}": v for k, v in candidate["params"].items()},
        "seed": uc.training.seed,
        "validation_fraction": uc.training.split.validation_fraction,
        "test_fraction": uc.training.split.test_fraction,
        **{f"rows_{name}": len(part) for name, part in split.parts().items()},
        "validation_start": split.validation[uc.timestamp].min(),
        "test_start": split.test[uc.timestamp].min(),
    }
    return [Param(k, json.dumps(v) if isinstance(v, list | dict) else str(v)) for k, v in values.items()]


def _metrics(values: Mapping[str, float]) -> list[Metric]:
    now = get_current_time_millis()
    return [Metric(k, v, now, 0) for k, v in values.items() if not math.isnan(v)]


def select_best(
    results: Sequence[CandidateResult | Mapping[str, Any]], metric: str, greater_is_better: bool
) -> CandidateResult:
    """The best result by ``metric`` on the validation set (``roc_auc`` reads ``val_roc_auc``);
    ties go to the first, so the choice is stable. The test set stays for the gate."""
    key = metric if metric.startswith(("val_", "test_")) else f"val_{metric}"
    parsed = [r if isinstance(r, CandidateResult) else CandidateResult.from_dict(r) for r in results]
    scored = [r for r in parsed if key in r.metrics and not math.isnan(r.metrics[key])]
    if not scored:
        raise ValueError(f"no candidate result has the metric '{key}'")
    sign = 1 if greater_is_better else -1
    return max(scored, key=lambda r: sign * r.metrics[key])
