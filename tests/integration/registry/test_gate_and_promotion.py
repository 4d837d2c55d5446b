"""The gate and the registry against a real MLflow server: a first champion, a weaker
candidate rejected without touching the champion, a stronger one promoted with its
audit tags, racing promotions, rollback and the history read back from the tags."""

from __future__ import annotations

import multiprocessing

import pytest
from mlflow import MlflowClient

from esteira.evaluation.gate import evaluate_gate
from esteira.registry import transitions as registry
from esteira.training.fit import train_candidate
from esteira.training.runs import start_parent_run
from esteira.training.split import time_split
from esteira.usecase import RegistrySpec
from tests.integration.registry.race_worker import promote_in_process
from tests.unit.training.synthetic import churn_frame, churn_usecase, write_table

pytestmark = pytest.mark.integration

MEDIUM = {"name": "medium", "family": "logistic_regression", "params": {"C": 1.0}}
WEAK = {"name": "weak", "family": "hist_gradient_boosting", "params": {"max_iter": 1, "max_depth": 1}}
STRONG = {"name": "strong", "family": "random_forest", "params": {"n_estimators": 40, "max_depth": 8}}


@pytest.fixture
def setting(request, mlflow_server, esteira_home):
    """A churn use case with its own registered model name, and its training data."""
    uc = churn_usecase()
    uc = uc.model_copy(update={"registry": RegistrySpec(model_name=f"churn_{request.node.name[5:30]}")})
    frame = churn_frame(uc)
    uri = str(esteira_home / "data" / "churn" / uc.features.table)
    lineage = {"table_uri": uri, "version": write_table(frame, uri)}
    return uc, frame, lineage


def _through_gate(uc, frame, lineage, candidate, mode=None, run="r"):
    airflow = {"dag_id": uc.dag_id("model_training"), "run_id": f"{uc.model_name}-{run}"}
    parent = start_parent_run(uc, f"gate-{uc.model_name}", lineage, airflow)
    result = train_candidate(uc, candidate, frame, lineage, parent, airflow)
    test = time_split(uc, frame).test
    champion = registry.current_champion(uc)
    gate = evaluate_gate(
        uc, result.run_id, result.model_uri, test, lineage, parent, champion=champion, mode=mode
    )
    return result, gate, parent


def _champion_cycle(uc, frame, lineage, candidate, run, mode=None):
    result, gate, _ = _through_gate(uc, frame, lineage, candidate, mode=mode, run=run)
    assert gate.passed, gate.reasons
    version = registry.register_challenger(uc, result.run_id, result.model_uri, lineage, gate)
    registry.promote(uc, version, gate.champion_version, "alice", f"{run} passed the gate")
    return version


def test_weaker_is_rejected_and_stronger_becomes_champion(setting):
    uc, frame, lineage = setting
    client = MlflowClient()

    first, gate, _ = _through_gate(uc, frame, lineage, MEDIUM, run="first")
    assert gate.passed and gate.verdict == "passed" and gate.champion_version is None
    v1 = registry.register_challenger(uc, first.run_id, first.model_uri, lineage, gate)
    assert registry.get_alias_version(uc, "challenger") == v1
    assert registry.promote(uc, v1, None, "alice", "first model") is None
    assert registry.get_alias_version(uc, "champion") == v1
    assert registry.get_alias_version(uc, "challenger") is None
    tags = client.get_model_version(uc.model_name, str(v1)).tags
    assert tags["feature_table_version"] == str(lineage["version"])
    assert tags["gate_compared_champion"] == "none"
    assert tags["dataset_digest"] == first_digest(client, first.run_id)

    weak, gate, parent = _through_gate(uc, frame, lineage, WEAK, run="weak")
    assert not gate.passed and gate.verdict == "rejected"
    assert gate.champion_version == v1
    assert any("roc_auc" in reason for reason in gate.reasons)
    assert "| roc_auc |" in gate.table
    with pytest.raises(registry.RegistryError, match="rejected"):
        registry.register_challenger(uc, weak.run_id, weak.model_uri, lineage, gate)
    assert registry.get_alias_version(uc, "champion") == v1
    assert len(client.search_model_versions(f"name = '{uc.model_name}'")) == 1
    comparison = client.download_artifacts(parent, "gate/comparison.md")
    assert "REJECTED" in open(comparison).read()
    evaluations = client.search_runs(
        [client.get_run(parent).info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent}' and tags.`esteira.role` = 'gate_evaluation'",
    )
    digests = {d.dataset.digest for e in evaluations for d in e.inputs.dataset_inputs}
    assert len(evaluations) == 2 and digests == {gate.dataset_digest}

    strong, gate, _ = _through_gate(uc, frame, lineage, STRONG, run="strong")
    assert gate.passed and gate.verdict == "passed" and gate.champion_version == v1
    v2 = registry.register_challenger(uc, strong.run_id, strong.model_uri, lineage, gate)
    registry.promote(uc, v2, gate.champion_version, "bob", "better roc_auc")
    assert registry.get_alias_version(uc, "champion") == v2
    assert registry.get_alias_version(uc, "challenger") is None
    tags = client.get_model_version(uc.model_name, str(v2)).tags
    assert tags["previous_champion"] == str(v1)
    assert tags["promoted_by"] == "bob" and tags["gate_compared_champion"] == str(v1)
    # A retried promotion task after success changes nothing.
    assert registry.promote(uc, v2, v1, "bob", "better roc_auc") == v1
    actions = [(e["action"], e["version"]) for e in registry.history(uc)]
    assert actions == [
        ("register_challenger", v1),
        ("promote", v1),
        ("register_challenger", v2),
        ("promote", v2),
    ]


def first_digest(client, run_id):
    return client.get_run(run_id).data.tags["esteira.dataset_digest.test"]


def test_dry_run_records_a_rejection_without_blocking(setting):
    uc, frame, lineage = setting
    _champion_cycle(uc, frame, lineage, MEDIUM, "first")
    _, gate, _ = _through_gate(uc, frame, lineage, WEAK, mode="dry_run", run="weak")
    assert gate.passed and gate.verdict == "rejected" and gate.reasons
    _, gate, _ = _through_gate(uc, frame, lineage, WEAK, mode="disabled", run="weak2")
    assert gate.passed and gate.verdict == "skipped" and gate.champion_version is not None


def test_racing_promotions_have_exactly_one_winner(setting):
    uc, frame, lineage = setting
    # The gate's verdicts do not matter for the race: skip its evaluations (seconds each).
    v1 = _champion_cycle(uc, frame, lineage, MEDIUM, "first", mode="disabled")
    challengers = []
    for run, candidate in (("a", MEDIUM), ("b", {**MEDIUM, "name": "medium_b"})):
        result, gate, _ = _through_gate(uc, frame, lineage, candidate, mode="disabled", run=run)
        assert gate.champion_version == v1
        challengers.append(
            registry.register_challenger(uc, result.run_id, result.model_uri, lineage, gate)
        )
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    workers = [
        context.Process(
            target=promote_in_process,
            args=(uc.model_name, v, v1, barrier, results),
        )
        for v in challengers
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    outcomes = sorted(results.get(timeout=5) for _ in workers)
    assert [o[0] for o in outcomes] == ["moved", "won"]
    winner = outcomes[1][1]
    assert "someone moved the champion meanwhile" in outcomes[0][1]
    assert registry.get_alias_version(uc, "champion") == winner
    tags = MlflowClient().get_model_version(uc.model_name, str(winner)).tags
    assert tags["previous_champion"] == str(v1)
    promotions = [e for e in registry.history(uc) if e["action"] == "promote"]
    assert [e["version"] for e in promotions] == [v1, winner]


def test_rollback_restores_an_earlier_champion_with_audit(setting):
    uc, frame, lineage = setting
    v1 = _champion_cycle(uc, frame, lineage, MEDIUM, "first")
    v2 = _champion_cycle(uc, frame, lineage, STRONG, "second")
    assert registry.get_alias_version(uc, "champion") == v2

    assert registry.rollback(uc, v1, "carol", "v2 misbehaves online") == v2
    assert registry.get_alias_version(uc, "champion") == v1
    tags = MlflowClient().get_model_version(uc.model_name, str(v1)).tags
    assert tags["rolled_back_by"] == "carol"
    assert tags["rollback_reason"] == "v2 misbehaves online"
    assert tags["rolled_back_from"] == str(v2) and tags["rolled_back_at"]
    last = registry.history(uc)[-1]
    assert (last["action"], last["version"], last["previous"], last["actor"]) == (
        "rollback",
        v1,
        v2,
        "carol",
    )

    weak, gate, _ = _through_gate(uc, frame, lineage, WEAK, mode="dry_run", run="weak")
    v3 = registry.register_challenger(uc, weak.run_id, weak.model_uri, lineage, gate)
    with pytest.raises(registry.RegistryError, match="gate verdict is 'rejected'"):
        registry.rollback(uc, v3, "carol", "try the weak one")
    registry.record_approval(uc, v3, "dave", "worse than v1 on recall", "rejected")
    with pytest.raises(registry.RegistryError, match="rejected by a reviewer"):
        registry.promote(uc, v3, v1, "carol", "promote anyway")
    assert registry.get_alias_version(uc, "champion") == v1
    tags = MlflowClient().get_model_version(uc.model_name, str(v3)).tags
    assert (tags["approval_decision"], tags["rejected_by"]) == ("rejected", "dave")
    assert registry.history(uc)[-1]["action"] == "approval_rejected"
