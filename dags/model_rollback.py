"""
### Model rollback

Points `champion` back at an earlier version that had passed its gate, records who did it,
why and when in the version's tags, and has the online model server reload it. Trigger it
by hand with the version and a reason; `esteira registry history <usecase>` shows the
alias history.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from esteira.orchestration import assets
from esteira.orchestration.factory import build_for_usecases, dag_kwargs, test_main
from esteira.orchestration.pools import registry_pool


def model_rollback(uc):
    champion = assets.champion(uc)
    pool = registry_pool(uc)  # shared with promotion: one alias change of the model at a time
    params = {
        "rollback_to_version": Param(
            1, type="integer", minimum=1, title="Roll back to version",
            description="An earlier version whose gate passed.",
        ),
        "reason": Param(
            "", type="string", minLength=3, title="Reason", description="Recorded in the audit tags."
        ),
    }

    @dag(schedule=None, params=params, **dag_kwargs(uc, "model_rollback", __doc__))
    def _dag():
        @task(outlets=[champion], pool=pool)
        def rollback_champion(**context) -> dict:
            from esteira.orchestration.context import publish, triggering_user
            from esteira.stages.model_rollback import roll_back

            params = context["params"]
            restored = roll_back(uc, int(params["rollback_to_version"]), triggering_user(context), params["reason"])
            return publish(context, champion, restored)

        @task(pool=pool)
        def deploy_champion(restored: dict) -> dict:
            from esteira.orchestration.context import skip_if_nothing
            from esteira.stages.model_rollback import deploy

            return skip_if_nothing(deploy(uc, restored, roll_back_on_failure=False))

        deploy_champion(rollback_champion())

    return _dag()


build_for_usecases(model_rollback, globals())

if __name__ == "__main__":
    test_main(model_rollback)
