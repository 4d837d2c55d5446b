"""Every registry decision is a line of `esteira registry history` and a row of the Esteira
page, with who and why: a reviewer's rejection, an approval nobody answered in time, a gate
rejection, a deploy whose canary failed and the rollback it caused. Driven through the
promotion and training DAGs' own task bodies, with the HITL task's answers read by the
orchestration layer, on a real MLflow server."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import yaml

from esteira import cli
from esteira.orchestration.context import approval
from esteira.registry import transitions
from esteira.results import NothingToDo
from esteira.stages import model_promotion, model_training
from esteira.training.fit import train_candidate
from esteira.training.runs import start_parent_run
from tests.unit.training.synthetic import churn_frame, write_table

CHURN = Path(__file__).resolve().parents[3] / "include" / "usecases" / "churn.yaml"
pytestmark = pytest.mark.integration

REJECTED = {"chosen_options": ["Reject"], "params_input": {"reason": "recall dropped on March data"},
            "responded_by_user": {"id": "2", "name": "bia"}}
APPROVED = {"chosen_options": ["Approve"], "params_input": {"reason": "better on every metric"},
            "responded_by_user": {"id": "1", "name": "ana"}}
# What the HITL task returns when the scheduler applied its default (Reject) after the timeout.
TIMED_OUT = {"chosen_options": ["Reject"], "params_input": {"reason": ""}, "responded_by_user": None}


@pytest.fixture
def belt(mlflow_server, tmp_path, monkeypatch):
    """The churn use case under its own model name (as the CLI loads it), its training data,
    and a model server URL where nothing answers."""
    from esteira.config import get_usecase
    from esteira.stack.process import free_port

    data = yaml.safe_load(CHURN.read_text())
    data["registry"]["model_name"] = f"churn_decisions_{uuid.uuid4().hex[:8]}"
    (tmp_path / "usecases").mkdir()
    (tmp_path / "usecases" / "churn.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.setenv("ESTEIRA_HOME", str(tmp_path))
    monkeypatch.setenv("ESTEIRA_USECASES_DIR", str(tmp_path / "usecases"))
    monkeypatch.setenv("ESTEIRA_MODEL_SERVER_URL", f"http://127.0.0.1:{free_port()}")
    uc = get_usecase("churn")
    frame = churn_frame(uc)
    uri = str(tmp_path / "data" / "churn" / uc.features.table)
    return uc, frame, {"table_uri": uri, "version": write_table(frame, uri)}


def _challenger(uc, frame, lineage, c: float, champion: int | None) -> tuple[dict, dict]:
    """A trained candidate registered as challenger; returns (promotion input, best)."""
    from esteira.evaluation.result import GateResult

    airflow = {"dag_id": uc.dag_id("model_training"), "run_id": f"run-c{c}"}
    parent = start_parent_run(uc, f"{uc.model_name}-training", lineage, airflow)
    candidate = {"name": f"logistic_regression(C={c})", "family": "logistic_regression", "params": {"C": c}}
    result = train_candidate(uc, candidate, frame, lineage, parent, airflow)
    metrics = {"roc_auc": result.metrics["test_roc_auc"], "log_loss": result.metrics["test_log_loss"]}
    gate = GateResult(True, "enabled", "passed", champion_version=champion, candidate_metrics=metrics,
                      champion_metrics={k: v - 0.01 for k, v in metrics.items()} if champion else {},
                      thresholds=[rule.model_dump() for rule in uc.gate.thresholds])
    version = transitions.register_challenger(uc, result.run_id, result.model_uri, lineage, gate)
    best = {**result.to_dict(), "parent_run_id": parent}
    return model_promotion.challenger_to_promote(uc, None, version), best


def _decide(uc, candidate: dict, answer: dict | None):
    """record_decision as the promotion DAG runs it: the HITL task's XCom, translated."""
    return model_promotion.record_decision(uc, candidate, approval(answer), uc.registry.approval_timeout_hours)


def test_rejection_timeout_gate_rejection_and_failed_deploy_are_in_the_history(belt, capsys):
    from esteira.serving.deploy import DeployError

    uc, frame, lineage = belt
    first, _ = _challenger(uc, frame, lineage, 1.0, None)
    model_promotion.promote(uc, first, None, "promotion-1")

    rejected, _ = _challenger(uc, frame, lineage, 0.5, first["version"])
    assert _decide(uc, rejected, REJECTED) == NothingToDo(
        f"version {rejected['version']} rejected by bia: recall dropped on March data")
    timed_out, best = _challenger(uc, frame, lineage, 0.2, first["version"])
    assert "no answer within 24 h" in _decide(uc, timed_out, TIMED_OUT).reason
    assert transitions.get_alias_version(uc, "champion") == first["version"]

    gate = {"passed": False, "verdict": "rejected", "champion_version": first["version"],
            "reasons": ["Metric roc_auc value threshold check failed: candidate 0.55 < 0.6"]}
    training = {"parent_run_id": best["parent_run_id"]}
    assert isinstance(model_training.register_challenger(uc, best, gate, training), NothingToDo)

    approved, _ = _challenger(uc, frame, lineage, 2.0, first["version"])
    decision = _decide(uc, approved, APPROVED)
    promoted = model_promotion.promote(uc, approved, model_promotion.Approval.recorded(decision), "promotion-4")
    with pytest.raises(DeployError, match="rolled back"):
        model_promotion.deploy(uc, promoted)
    assert transitions.get_alias_version(uc, "champion") == first["version"]

    capsys.readouterr()
    assert cli.main(["registry", "history", "churn"]) == 0
    lines = capsys.readouterr().out.splitlines()
    by_action = {}
    for line in lines:
        words = line.split()
        if len(words) > 1 and words[1] in ("approval_rejected", "approval_timeout", "gate_rejected",
                                           "deploy_failed", "rollback", "promote"):
            by_action.setdefault(words[1], []).append(line)
    text = "\n".join(lines)
    assert f"v{rejected['version']}" in by_action["approval_rejected"][0]
    assert "by bia: recall dropped on March data" in by_action["approval_rejected"][0]
    assert f"v{timed_out['version']}" in by_action["approval_timeout"][0]
    assert "by esteira (approval timeout): no answer within 24 h" in by_action["approval_timeout"][0]
    assert "by gate of churn__model_training run run-c0.2" in by_action["gate_rejected"][0]
    assert "candidate 0.55 < 0.6" in by_action["gate_rejected"][0]
    assert f"v{approved['version']}" in by_action["deploy_failed"][0]
    assert "by esteira deploy check: deploying" in by_action["deploy_failed"][0]
    assert f"v{first['version']} (was v{approved['version']})" in by_action["rollback"][0]
    assert f"v{approved['version']} (was v{first['version']})" in by_action["promote"][1]
    assert "by ana: better on every metric" in by_action["promote"][1]
    # The promotion is followed by the gate's comparison on the same test set.
    comparison = lines[lines.index(by_action["promote"][1]) + 1:][:3]
    assert "candidate" in comparison[0] and f"champion v{first['version']}" in comparison[0]
    assert comparison[1].split()[0] == "roc_auc" and "no worse than champion" in comparison[1]
    assert "approval_approved" in text

    assert cli.main(["registry", "history", "churn", "--json"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["action"] for e in events][-3:] == ["promote", "rollback", "deploy_failed"]


def test_the_esteira_page_shows_every_decision_with_who_and_why(belt):
    from esteira.config import get_settings
    from esteira.ui.overview import usecase_overview
    from esteira.ui.page import render_page

    uc, frame, lineage = belt
    first, _ = _challenger(uc, frame, lineage, 1.0, None)
    model_promotion.promote(uc, first, None, "promotion-1")
    rejected, _ = _challenger(uc, frame, lineage, 0.5, first["version"])
    _decide(uc, rejected, REJECTED)
    timed_out, _ = _challenger(uc, frame, lineage, 0.2, first["version"])
    _decide(uc, timed_out, TIMED_OUT)
    _decide(uc, timed_out, TIMED_OUT)  # a retried record_decision task adds nothing

    view = usecase_overview(uc, get_settings())
    actions = [e["action"] for e in view["history"]]
    assert actions.count("approval_timeout") == 1 and actions[0] == "approval_timeout"
    html = render_page([view], "2026-03-01T00:00:00+00:00", "http://mlflow")
    assert 'data-action="approval_rejected"' in html and "recall dropped on March data" in html
    assert 'data-action="approval_timeout"' in html and "no answer within 24 h" in html
    assert view["challenger"]["approval"] is None  # v3 timed out: no decision on its tags
    assert view["champion"]["version"] == first["version"]
