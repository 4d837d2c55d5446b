"""
### Model promotion

Runs when training registers a `challenger`. When approval is required (`require_approval`
in the use-case YAML, or the Param), a person approves or rejects in the Airflow UI
(*Required actions*), with a reason; without an answer within `approval_timeout_hours` the
request is rejected by default. `record_decision` writes the decision (approver and reason,
or the timeout) to the model version's tags and the registry's history; a rejection or a
timeout ends the run there, skipped. Promotion is a compare-and-set: `champion` moves to the challenger
only if it still points at the version the gate compared against. Then the online model
server reloads the new champion and a canary prediction checks it; a failed check rolls
the alias back.
"""

from __future__ import annotations

import datetime as dt

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import Param, dag, task

from esteira.orchestration import assets
from esteira.orchestration.factory import build_for_usecases, dag_kwargs, test_main
from esteira.orchestration.pools import registry_pool


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
    # One slot per model: its promotions, rollbacks and deploys never overlap, on any executor.
    pool = registry_pool(uc)

    @dag(schedule=[challenger], params=_params(uc), **dag_kwargs(uc, "model_promotion", __doc__))
    def _dag():
        @task
        def read_challenger(**context) -> dict:
            from esteira.orchestration.context import triggering_extra
            from esteira.stages.model_promotion import challenger_to_promote

            event = triggering_extra(context, challenger)
            return challenger_to_promote(uc, context["params"].get("version"), event.get("version"))

        @task.branch
        def check_approval(candidate: dict, **context) -> str:
            return "approve_promotion" if context["params"]["require_approval"] else "record_decision"

        # Not ApprovalOperator: on Reject it skips its downstream and pushes no XCom, so the
        # rejection could not be recorded. Every answer (and the timeout's default) is an XCom here.
        approve_promotion = HITLOperator(
            task_id="approve_promotion",
            subject=f"Promote a new champion of '{uc.model_name}'?",
            body=(
                "Version {{ ti.xcom_pull(task_ids='read_challenger')['version'] }} passed the gate "
                "against champion {{ ti.xcom_pull(task_ids='read_challenger')['expected_champion'] }}. "
                "See its metrics and lineage in MLflow before you decide. Without an answer within "
                f"{uc.registry.approval_timeout_hours:g} h it is not promoted."
            ),
            options=["Approve", "Reject"],
            defaults=["Reject"],
            params={"reason": Param("", type="string", title="Reason")},
            response_timeout=dt.timedelta(hours=uc.registry.approval_timeout_hours),
        )

        @task(trigger_rule="none_failed_min_one_success")
        def record_decision(candidate: dict, **context) -> dict:
            from esteira.orchestration.context import approval, skip_if_nothing
            from esteira.stages import model_promotion

            answer = approval(context["ti"].xcom_pull(task_ids="approve_promotion"))
            timeout = uc.registry.approval_timeout_hours
            return skip_if_nothing(model_promotion.record_decision(uc, candidate, answer, timeout))

        @task(outlets=[champion], pool=pool)
        def promote_challenger(candidate: dict, decision: dict, **context) -> dict:
            from esteira.orchestration.context import publish
            from esteira.stages.model_promotion import Approval, promote

            approved = Approval.recorded(decision)
            return publish(context, champion, promote(uc, candidate, approved, context["run_id"]))

        @task(pool=pool)
        def deploy_champion(promoted: dict) -> dict:
            from esteira.orchestration.context import skip_if_nothing
            from esteira.stages.model_promotion import deploy

            return skip_if_nothing(deploy(uc, promoted))

        candidate = read_challenger()
        branch = check_approval(candidate)
        decision = record_decision(candidate)
        branch >> [approve_promotion, decision]
        approve_promotion >> decision
        deploy_champion(promote_challenger(candidate, decision))

    return _dag()


build_for_usecases(model_promotion, globals())

if __name__ == "__main__":
    test_main(model_promotion)
