"""
### Model training

Builds the point-in-time training set from the feature table (recording its Delta
version), trains every candidate as its own mapped task and MLflow child run under one
parent run, picks the best by the use case's primary metric, and judges it against the
current champion on the same held-out test set (the evaluation gate). On a pass the model
is registered with its lineage and gets the alias `challenger`, which starts promotion.

Runs when the feature table changes, when monitoring requests retraining, or by hand with
the form below (candidates, window, split, seed, gate mode). Which labels it learns from is
decided in one place and logged with its reason (`build_training_set`'s log, the parent
run's `esteira.window.*` tags). A candidate that cannot differ from the champion is
*nothing new*: nothing is registered and the run ends skipped with that reason.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from esteira.orchestration import assets
from esteira.orchestration.factory import build_for_usecases, dag_kwargs, test_main
from esteira.orchestration.operator import EsteiraStepOperator
from esteira.orchestration.params import candidates_schema, compute_backend_param


def _params(uc) -> dict:
    training = uc.training
    return {
        "candidates": Param(
            [c.model_dump() for c in training.candidates],
            **candidates_schema(),
            title="Candidates",
            description="Model families and hyperparameter grids (JSON); every combination is one candidate.",
        ),
        "training_end": Param(
            None,
            type=["null", "string"],
            format="date",
            title="Training window end",
            description=(
                "Labels before this day (exclusive). Empty: a retraining request's own end, else the newest "
                "label, never before the champion's window; a features event's interval end; by hand, the newest label."
            ),
        ),
        "window_days": Param(training.window_days, type="integer", minimum=1, title="Training window (days)"),
        "validation_fraction": Param(
            training.split.validation_fraction, type="number", exclusiveMinimum=0, maximum=0.5,
            title="Validation fraction", description="Share of the window, by time, for model selection.",
        ),
        "test_fraction": Param(
            training.split.test_fraction, type="number", exclusiveMinimum=0, maximum=0.5,
            title="Test fraction", description="Latest share of the window, by time, held out for the gate.",
        ),
        "seed": Param(training.seed, type="integer", title="Random seed"),
        "compute_backend": compute_backend_param(uc.compute.training, "candidates train"),
        "gate_mode": Param(
            uc.gate.mode, enum=["enabled", "dry_run", "disabled"], title="Gate mode",
            description="enabled: a rejection registers nothing; dry_run: record, don't block; disabled: no gate.",
        ),
    }


def model_training(uc):
    features, retraining = assets.features(uc), assets.retraining_request(uc)
    challenger = assets.challenger(uc)

    @dag(schedule=(features | retraining), params=_params(uc), **dag_kwargs(uc, "model_training", __doc__))
    def _dag():
        @task
        def build_training_set(**context) -> dict:
            from esteira.orchestration.context import run_identity, training_trigger
            from esteira.stages.model_training import TrainingOptions, prepare_training

            trigger = training_trigger(context, features, retraining)
            options = TrainingOptions.from_params(context["params"])
            return prepare_training(uc, options, trigger, run_identity(context))

        @task
        def plan_candidates(**context) -> list[dict]:
            from esteira.training.candidates import expand_candidates

            return expand_candidates(uc, context["params"]["candidates"])

        @task
        def select_best(results: list[dict]) -> dict:
            from esteira.stages.model_training import select_best as best

            return best(uc, list(results))

        @task
        def evaluate_gate(best: dict, training: dict, **context) -> dict:
            from esteira.stages.model_training import TrainingOptions, run_gate

            return run_gate(uc, TrainingOptions.from_params(context["params"]), best, training)

        @task(outlets=[challenger])
        def register_challenger(best: dict, gate: dict, training: dict, **context) -> dict:
            from esteira.orchestration.context import publish
            from esteira.stages import model_training

            options = model_training.TrainingOptions.from_params(context["params"])
            return publish(context, challenger, model_training.register_challenger(uc, best, gate, training, options))

        training = build_training_set()
        # esteira.jobs.train_candidate per candidate, in the worker or as Databricks runs (Param compute_backend)
        results = EsteiraStepOperator.partial(
            task_id="train_candidate", step="train_candidate", usecase=uc.name,
            arguments={"training": training}, max_active_tis_per_dagrun=2,
        ).expand(item_arguments=plan_candidates().map(_as_candidate)).output
        best = select_best(results)
        register_challenger(best, evaluate_gate(best, training), training)

    def _as_candidate(candidate: dict) -> dict:
        return {"candidate": candidate}

    return _dag()


build_for_usecases(model_training, globals())

if __name__ == "__main__":
    test_main(model_training)
