"""Every DAG file imports, every DAG follows the house rules, parsing stays cheap."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from airflow.dag_processing.dagbag import DagBag

REPO = Path(__file__).resolve().parents[2]
DAG_FILES = sorted((REPO / "dags").glob("*.py"))

EXPECTED_TASKS = {
    "feature_refresh": {"refresh_features", "publish_features"},
    "model_training": {
        "build_training_set",
        "plan_candidates",
        "train_candidate",
        "select_best",
        "evaluate_gate",
        "register_challenger",
    },
    "model_promotion": {
        "read_challenger",
        "check_approval",
        "approve_promotion",
        "record_decision",
        "promote_challenger",
        "deploy_champion",
    },
    "model_rollback": {"rollback_champion", "deploy_champion"},
    "batch_inference": {"score_batch", "publish_predictions"},
    "drift_monitoring": {"monitor_window", "request_retraining"},
}


@pytest.fixture(scope="module")
def dagbag() -> DagBag:
    return DagBag(dag_folder=str(REPO / "dags"))


def test_every_dag_file_imports(dagbag):
    assert dagbag.import_errors == {}
    assert DAG_FILES, "no DAG files found"


def test_every_usecase_has_every_stage(dagbag):
    from esteira.config import load_usecases

    stages = {p.stem for p in DAG_FILES}
    expected = {uc.dag_id(stage) for uc in load_usecases() for stage in stages}
    assert expected <= set(dagbag.dag_ids)


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=lambda p: p.stem)
def test_dags_follow_house_rules(dagbag, dag_file):
    dags = [d for d in dagbag.dags.values() if Path(d.fileloc) == dag_file]
    assert dags, f"{dag_file.name} defines no DAG"
    for dag in dags:
        assert "esteira" in dag.tags and dag.tags, dag.dag_id
        assert dag.catchup is False, dag.dag_id
        assert dag.doc_md and len(dag.doc_md.strip()) > 40, dag.dag_id
        assert dag.start_date is not None, dag.dag_id
        for t in dag.tasks:
            assert t.retries >= 1, f"{dag.dag_id}.{t.task_id} has no retries"


@pytest.mark.parametrize("stage", sorted(EXPECTED_TASKS))
def test_expected_task_graph(dagbag, stage):
    dag = dagbag.dags[f"churn__{stage}"]
    assert set(dag.task_ids) == EXPECTED_TASKS[stage]


def test_training_reads_features_or_retraining_requests(dagbag):
    dag = dagbag.dags["churn__model_training"]
    uris = {a.uri for a in dag.timetable.asset_condition.objects}
    assert {"esteira://churn/features", "esteira://churn/retraining_request"} <= uris
    assert dag.task_dict["train_candidate"].upstream_task_ids == {"plan_candidates", "build_training_set"}


def test_every_approval_answer_and_its_timeout_reach_record_decision(dagbag):
    dag = dagbag.dags["churn__model_promotion"]
    approve, record = dag.task_dict["approve_promotion"], dag.task_dict["record_decision"]
    # Airflow's ApprovalOperator skips its downstream on Reject: the rejection would be lost.
    assert type(approve).__name__ == "HITLOperator" and approve.defaults == ["Reject"]
    assert approve.response_timeout is not None
    assert approve.downstream_task_ids == {"record_decision"}
    assert record.trigger_rule == "none_failed_min_one_success"
    assert dag.task_dict["promote_challenger"].upstream_task_ids == {"read_challenger", "record_decision"}


def test_the_approval_tasks_answers_read_back_as_approved_rejected_or_timed_out(dagbag):
    """What the HITL task returns on resume (a person's answer, or the scheduler's default
    after the timeout, with no user) is what record_decision is handed."""
    import datetime as dt

    from esteira.orchestration.context import approval
    from esteira.stages.model_promotion import Approval

    approve = dagbag.dags["churn__model_promotion"].task_dict["approve_promotion"]

    def resumed(option: str, user: dict | None, reason: str = "") -> dict:
        event = {"chosen_options": [option], "params_input": {"reason": reason},
                 "responded_at": dt.datetime.now(dt.UTC), "responded_by_user": user, "timedout": user is None}
        return approve.execute_complete({}, event)

    assert approval(resumed("Approve", {"id": "1", "name": "ana"}, "better")) == Approval("ana", "better")
    assert approval(resumed("Reject", {"id": "2", "name": "bia"}, "worse")) == Approval("bia", "worse", "rejected")
    assert approval(resumed("Reject", None)).decision == "timed_out"


def test_every_param_has_a_schema_the_trigger_form_renders_as_an_editor(dagbag):
    """Airflow's form shows an array without ``items`` (or with string items) as lines of
    text, so a list of objects reads "[object Object]": structured values need object items."""
    for dag in (d for d in dagbag.dags.values() if "esteira" in d.tags):
        for name in dag.params:
            param = dag.params.get_param(name)
            if isinstance(param.value, list) and any(isinstance(v, dict) for v in param.value):
                assert param.schema.get("items", {}).get("type") == "object", f"{dag.dag_id}.{name}"
            assert "title" in param.schema, f"{dag.dag_id}.{name} has no title"
    candidates = dagbag.dags["churn__model_training"].params.get_param("candidates")
    assert candidates.schema["items"]["required"] == ["family"]


_PARSE_PROBE = """
import json, sys, time
sys.path.insert(0, sys.argv[2])
import airflow.sdk  # the baseline every DAG file pays anyway
before = set(sys.modules)
start = time.perf_counter()
import runpy
runpy.run_path(sys.argv[1], run_name="dag_file")
elapsed = time.perf_counter() - start
heavy = sorted({m.split(".")[0] for m in set(sys.modules) - before}
               & {"mlflow", "sklearn", "pandas", "evidently", "deltalake", "duckdb", "matplotlib", "scipy"})
print(json.dumps({"seconds": elapsed, "heavy": heavy}))
"""


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=lambda p: p.stem)
def test_dag_file_parse_cost_is_small(dag_file):
    """Measured in a fresh interpreter: what the file costs beyond `import airflow.sdk`."""
    out = subprocess.run(
        [sys.executable, "-c", _PARSE_PROBE, str(dag_file), str(dag_file.parent)],
        capture_output=True,
        text=True,
        check=True,
    )
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    assert probe["heavy"] == [], f"{dag_file.name} imports {probe['heavy']} at parse time"
    assert probe["seconds"] < 2.0, f"{dag_file.name} took {probe['seconds']:.2f} s to parse"
