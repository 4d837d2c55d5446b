"""Races and partial failures of the registry transitions, with real processes and a real
MLflow server. A file barrier holds one process exactly between two of its writes (inside
the registry lock), so the interleaving is forced, not left to timing: a second process
races it there, or the held process is SIGKILLed there, or MLflow is stopped there. The
retry must then complete what is missing, once."""

from __future__ import annotations

import os
import time

import mlflow
import pytest
from mlflow import MlflowClient

from esteira.registry import transitions as registry
from tests.integration.registry.conftest import PASSED, Spawned

pytestmark = pytest.mark.integration

# Long enough for a racing process that does not wait for the lock to have written.
_RACE_WINDOW = 2.0


def _versions(uc) -> list[int]:
    return sorted(int(v.version) for v in MlflowClient().search_model_versions(f"name = '{uc.model_name}'"))


def _events(uc, action: str | None = None) -> list[tuple]:
    return [
        (e["action"], e["version"], e["previous"])
        for e in registry.history(uc)
        if action is None or e["action"] == action
    ]


def _tags(uc, version: int) -> dict:
    return MlflowClient().get_model_version(uc.model_name, str(version)).tags


def _register(uc, candidate, lineage, champion=None) -> int:
    run_id, model_uri = candidate()
    return registry.register_challenger(uc, run_id, model_uri, lineage, {**PASSED, "champion_version": champion})


@pytest.fixture
def champion_and_challenger(usecase, candidate, lineage) -> tuple[int, int]:
    """Version 1 champion, version 2 the challenger whose gate compared against it."""
    v1 = _register(usecase, candidate, lineage)
    registry.promote(usecase, v1, None, "alice", "first model")
    return v1, _register(usecase, candidate, lineage, champion=v1)


def test_racing_retries_of_one_registration_make_one_version(usecase, candidate, lineage, barrier):
    run_id, model_uri = candidate()
    call = {"run_id": run_id, "model_uri": model_uri, "lineage": lineage, "gate": PASSED}
    barrier.hold("register.checked")
    first = Spawned(usecase, "register_challenger", **call)
    barrier.reached("register.checked")  # it found no version for the run, and holds the lock
    second = Spawned(usecase, "register_challenger", **call)
    time.sleep(_RACE_WINDOW)
    assert _versions(usecase) == []  # the second one waits for the lock, not registering
    barrier.release("register.checked")

    outcomes = [first.outcome(), second.outcome()]

    assert outcomes == [("ok", 1), ("ok", 1)]
    assert _versions(usecase) == [1]
    assert registry.get_alias_version(usecase, "challenger") == 1
    assert _events(usecase) == [("register_challenger", 1, None)]


def test_a_rejection_during_a_promotion_comes_after_it(usecase, champion_and_challenger, barrier):
    v1, v2 = champion_and_challenger
    barrier.hold("promote.checked")
    promotion = Spawned(usecase, "promote", version=v2, expected_champion=v1, actor="bob", reason="better")
    barrier.reached("promote.checked")  # it read v2's tags: not rejected
    rejection = Spawned(usecase, "record_approval", version=v2, approver="dave", reason="no", decision="rejected")
    time.sleep(_RACE_WINDOW)
    assert "approval_decision" not in _tags(usecase, v2)  # the rejection waits for the lock
    barrier.release("promote.checked")

    assert promotion.outcome() == ("ok", v1)
    kind, message = rejection.outcome()

    # Not silently ignored: refused, because it came after the move.
    assert kind == "RegistryError" and "already champion" in message
    assert registry.get_alias_version(usecase, "champion") == v2
    assert "approval_decision" not in _tags(usecase, v2)
    assert _events(usecase)[-1] == ("promote", v2, v1)


def test_a_promotion_during_a_rejection_sees_it(usecase, champion_and_challenger, barrier):
    v1, v2 = champion_and_challenger
    barrier.hold("approval.tagged")
    rejection = Spawned(usecase, "record_approval", version=v2, approver="dave", reason="no", decision="rejected")
    barrier.reached("approval.tagged")  # the tags say rejected; the audit event is not written yet
    promotion = Spawned(usecase, "promote", version=v2, expected_champion=v1, actor="bob", reason="better")
    time.sleep(_RACE_WINDOW)
    assert registry.get_alias_version(usecase, "champion") == v1  # the promotion waits for the lock
    barrier.release("approval.tagged")

    assert rejection.outcome() == ("ok", None)
    kind, message = promotion.outcome()

    assert kind == "RegistryError" and "rejected by a reviewer" in message
    assert registry.get_alias_version(usecase, "champion") == v1
    assert _events(usecase)[-1] == ("approval_rejected", v2, None)


def _complete_promotion(uc, v1, v2) -> None:
    assert registry.get_alias_version(uc, "champion") == v2
    assert registry.get_alias_version(uc, "challenger") is None
    tags = _tags(uc, v2)
    assert (tags["previous_champion"], tags["promoted_by"]) == (str(v1), "bob")
    assert _events(uc, "promote") == [("promote", v1, None), ("promote", v2, v1)]


@pytest.mark.parametrize("step", ["promote.alias_moved", "promote.tagged", "promote.challenger_removed"])
def test_a_promotion_killed_between_writes_is_completed_by_its_retry(
    usecase, champion_and_challenger, barrier, step
):
    v1, v2 = champion_and_challenger
    barrier.hold(step)
    promotion = Spawned(usecase, "promote", version=v2, expected_champion=v1, actor="bob", reason="better")
    barrier.reached(step)
    promotion.kill()
    barrier.release(step)
    assert registry.get_alias_version(usecase, "champion") == v2  # moved, the rest missing

    assert registry.promote(usecase, v2, v1, "bob", "better") == v1

    _complete_promotion(usecase, v1, v2)
    events = registry.history(usecase)
    assert registry.promote(usecase, v2, v1, "bob", "better") == v1
    assert registry.history(usecase) == events  # a retry after success changes nothing


@pytest.mark.parametrize("step", ["register.version_created", "register.alias_moved"])
def test_a_registration_killed_between_writes_is_completed_by_its_retry(
    usecase, champion_and_challenger, candidate, lineage, barrier, step
):
    v1, v2 = champion_and_challenger
    run_id, model_uri = candidate()
    call = {"run_id": run_id, "model_uri": model_uri, "lineage": lineage,
            "gate": {**PASSED, "champion_version": v1}}
    barrier.hold(step)
    registration = Spawned(usecase, "register_challenger", **call)
    barrier.reached(step)
    registration.kill()
    barrier.release(step)

    v3 = registry.register_challenger(usecase, **call)

    assert v3 == v2 + 1 and _versions(usecase) == [v1, v2, v3]
    assert registry.get_alias_version(usecase, "challenger") == v3
    assert _tags(usecase, v3)["gate_compared_champion"] == str(v1)
    assert _events(usecase, "register_challenger")[-1] == ("register_challenger", v3, v2)
    assert len(_events(usecase, "register_challenger")) == 3
    assert registry.register_challenger(usecase, **call) == v3
    assert len(registry.history(usecase)) == 4


def test_an_approval_killed_between_writes_is_completed_by_its_retry(usecase, champion_and_challenger, barrier):
    _, v2 = champion_and_challenger
    barrier.hold("approval.tagged")
    approval = Spawned(usecase, "record_approval", version=v2, approver="carol", reason="ok", decision="approved")
    barrier.reached("approval.tagged")
    approval.kill()
    barrier.release("approval.tagged")
    assert _tags(usecase, v2)["approved_by"] == "carol"
    assert _events(usecase, "approval_approved") == []

    for _ in range(2):
        registry.record_approval(usecase, v2, "carol", "ok", "approved")

    assert _events(usecase, "approval_approved") == [("approval_approved", v2, None)]


def test_a_rollback_killed_after_the_alias_moved_is_completed_by_its_retry(
    usecase, champion_and_challenger, barrier
):
    v1, v2 = champion_and_challenger
    registry.promote(usecase, v2, v1, "bob", "better")
    barrier.hold("rollback.alias_moved")
    rollback = Spawned(usecase, "rollback", to_version=v1, actor="carol", reason="v2 misbehaves")
    barrier.reached("rollback.alias_moved")
    rollback.kill()
    barrier.release("rollback.alias_moved")
    assert registry.get_alias_version(usecase, "champion") == v1

    assert registry.rollback(usecase, v1, "carol", "v2 misbehaves") == v2
    assert registry.rollback(usecase, v1, "carol", "v2 misbehaves") == v2

    assert _tags(usecase, v1)["rolled_back_from"] == str(v2)
    assert _events(usecase, "rollback") == [("rollback", v1, v2)]


@pytest.fixture
def own_mlflow(tmp_path, monkeypatch):
    """An MLflow server this test may stop and start again (same port, same database)."""
    from esteira.stack import process
    from esteira.stack.mlflow_server import mlflow_service

    port = process.free_port()
    service = mlflow_service(port, f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts")

    class Server:
        pid: int | None = None

        def start(self) -> None:
            self.pid = process.start(service, tmp_path / "mlflow.log")
            process.wait_healthy(service, self.pid, timeout=90, log_path=tmp_path / "mlflow.log")

        def stop(self) -> None:
            if self.pid is not None:
                process.stop_group(self.pid, grace=5)
                self.pid = None

    server = Server()
    server.start()
    session_uri = os.environ["MLFLOW_TRACKING_URI"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    try:
        yield server
    finally:
        server.stop()
        # tracking.client() points mlflow's fluent API (a process-wide global) at this
        # server: point it back, or the next module's fluent calls reach a stopped server.
        mlflow.set_tracking_uri(session_uri)


def test_mlflow_down_between_the_alias_move_and_the_tags(own_mlflow, usecase, candidate, lineage, barrier):
    v1 = _register(usecase, candidate, lineage)
    registry.promote(usecase, v1, None, "alice", "first model")
    v2 = _register(usecase, candidate, lineage, champion=v1)
    barrier.hold("promote.alias_moved")
    promotion = Spawned(usecase, "promote", version=v2, expected_champion=v1, actor="bob", reason="better")
    barrier.reached("promote.alias_moved")
    own_mlflow.stop()
    barrier.release("promote.alias_moved")
    kind, message = promotion.outcome()
    own_mlflow.start()

    assert kind == "MlflowException" and "Connection refused" in message
    assert registry.promote(usecase, v2, v1, "bob", "better") == v1  # the retry: no ChampionMoved
    _complete_promotion(usecase, v1, v2)
