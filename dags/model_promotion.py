"""
### Model promotion

Runs when training registers a `challenger`. When approval is required (`require_approval`
in the use-case YAML, or the Param), a person approves or rejects in the Airflow UI
(*Required actions*), with a reason; the decision and the approver are recorded in the
model version's tags. Promotion is a compare-and-set: `champion` moves to the challenger
only if it still points at the version the gate compared against. Then the online model
server reloads the new champion and a canary prediction checks it; a failed check rolls
the alias back.
"""

from __future__ import annotations

import datetime as dt

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import Param, dag, task

from esteira.orchestration import assets
from esteira.orchestration.factory import build_for_usecases, dag_kwargs, test_main


def _params(uc) -> dict:
    return {
        "require_approval": Param(
            uc.registry.require_approval, type="boolean", title="Require approval",
            description="Wait for a person to approve in the Airflow UI before promoting.",
        ),
        "version": Param(
            None, type=["null", "integer"], minimum=1, title="Model version",
            description="Promote this version. Empty: the challenger that triggered the run.",
        ),
    }


def model_promotion(uc):
    challenger, champion = assets.challenger(uc), assets.champion(uc)

    @dag(schedule=[challenger], params=_params(uc), **dag_kwargs(uc, "model_promotion", __doc__))
    def _dag():
        @task
        def read_challenger(**context) -> dict:
            from esteira.registry.steps import challenger_to_promote

            return challenger_to_promote(uc, context["params"], assets.triggering_extra(context, challenger))

        @task.branch
        def check_approval(candidate: dict, **context) -> str:
            return "approve_promotion" if context["params"]["require_approval"] else "promote_challenger"

        approve_promotion = ApprovalOperator(
            task_id="approve_promotion",
            subject=f"Promote a new champion of '{uc.model_name}'?",
            body=(
                "Version {{ ti.xcom_pull(task_ids='read_challenger')['version'] }} passed the gate "
                "against champion {{ ti.xcom_pull(task_ids='read_challenger')['expected_champion'] }}. "
                "See its metrics and lineage in MLflow before you decide."
            ),
            params={"reason": Param("", type="string", title="Reason")},
            response_timeout=dt.timedelta(hours=uc.registry.approval_timeout_hours),
        )

        @task(outlets=[champion], trigger_rule="none_failed_min_one_success")
        def promote_challenger(candidate: dict, **context) -> dict:
            from esteira.registry.steps import promote_after_decision

            decision = context["ti"].xcom_pull(task_ids="approve_promotion")
            reference = promote_after_decision(uc, candidate, decision, context["dag_run"])
            context["outlet_events"][champion].extra = reference
            return reference

        @task
        def deploy_champion(promoted: dict) -> dict:
            from esteira.serving.steps import deploy_or_roll_back

            return deploy_or_roll_back(uc, promoted)

        candidate = read_challenger()
        branch = check_approval(candidate)
        promoted = promote_challenger(candidate)
        branch >> [approve_promotion, promoted]
        approve_promotion >> promoted
        deploy_champion(promoted)

    return _dag()


build_for_usecases(model_promotion, globals())

if __name__ == "__main__":
    test_main(model_promotion)
