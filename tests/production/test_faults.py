"""Faults production brings, injected into the native production topology.

Each test starts from the state the full cycle left (a champion, a feature table) and
leaves every component running again for the next one.
"""

from __future__ import annotations

import threading
import time

import pytest

from esteira.stack import production
from tests.production.conftest import model_versions, wait_promotions_done, wait_until

pytestmark = pytest.mark.production

# gate_mode disabled: the gate cannot reject a rerun on the same data, so every training
# run registers exactly one version, and a duplicate would show.
_TRAINING = {"gate_mode": "disabled"}


def _versions_of_run(usecase, run_id: str) -> list:
    return [v for v in model_versions(usecase.model_name) if v.tags.get("airflow_run_id") == run_id]


def test_killed_worker_mid_training_is_retried_without_a_duplicate_version(
    cycle, belt, topology, usecase
):
    run_id = belt.trigger("model_training", _TRAINING)
    belt.wait_for_task("model_training", run_id, "train_candidate", {"running"})
    killed = production.kill_component(topology, "worker")
    assert killed
    production.restart_component(topology, "worker")

    outcome = belt.wait("model_training", run_id)

    assert outcome.state == "success"
    tries = [t["try_number"] for t in outcome.tasks if t["task_id"] == "train_candidate"]
    assert max(tries) >= 2, f"no candidate was retried: {tries}"
    assert len(_versions_of_run(usecase, run_id)) == 1


def test_scheduler_restarted_during_a_run_lets_it_complete(cycle, belt, topology, usecase):
    run_id = belt.trigger("model_training", _TRAINING)
    belt.wait_for_task("model_training", run_id, "train_candidate", {"running"})
    production.stop_component(topology, "scheduler")
    time.sleep(5)
    production.restart_component(topology, "scheduler")

    outcome = belt.wait("model_training", run_id)

    assert outcome.state == "success"
    assert len(_versions_of_run(usecase, run_id)) == 1


def test_mlflow_down_during_registration_fails_cleanly(cycle, belt, topology, usecase):
    from esteira.registry.transitions import get_alias_version

    wait_promotions_done(belt)  # the previous tests' challengers start promotions
    before = {int(v.version) for v in model_versions(usecase.model_name)}
    aliases_before = {a: get_alias_version(usecase, a) for a in ("challenger", "champion")}
    run_id = belt.trigger("model_training", _TRAINING)
    belt.wait_for_task("model_training", run_id, "evaluate_gate", {"success"}, poll=0.2)
    production.stop_component(topology, "mlflow", grace=5)
    try:
        outcome = belt.wait("model_training", run_id)
    finally:
        production.restart_component(topology, "mlflow")

    assert outcome.state == "failed"
    (register,) = [t for t in outcome.tasks if t["task_id"] == "register_challenger"]
    assert (register["state"], register["try_number"]) == ("failed", 3)
    log = belt.log("model_training", run_id, "register_challenger", 3)
    assert f"MlflowException: API request to {topology.tracking_uri}/" in log
    assert "Connection refused" in log
    assert {int(v.version) for v in model_versions(usecase.model_name)} == before
    assert {a: get_alias_version(usecase, a) for a in ("challenger", "champion")} == aliases_before


def test_refresh_killed_mid_write_leaves_a_whole_version_and_reruns(cycle, belt, topology, usecase):
    from deltalake import DeltaTable

    from esteira.config import get_settings

    uri = get_settings().table_uri(usecase.name, usecase.features.table)
    keys = [usecase.entity, usecase.timestamp]
    committed = {v: len(DeltaTable(uri, version=v).to_pandas()) for v in range(DeltaTable(uri).version() + 1)}
    seen: list[tuple[int, int, int]] = []
    stop = threading.Event()

    def read() -> None:
        """A reader during the write: every read must be one whole committed version."""
        while not stop.is_set():
            table = DeltaTable(uri)
            frame = table.to_pandas()
            seen.append((table.version(), len(frame), int(frame.duplicated(keys).sum())))
            time.sleep(0.05)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    run_id = belt.trigger("feature_refresh", {"interval_start": "2026-03-01", "interval_end": "2026-04-01",
                                              "notify_downstream": False})
    files_before = _data_files(uri)
    belt.wait_for_task("feature_refresh", run_id, "refresh_features", {"running"})
    # Kill as soon as the merge starts writing data files: before or during its commit.
    wait_until(lambda: _data_files(uri) > files_before, 300, "the refresh writes", poll=0.02)
    production.kill_component(topology, "worker")
    after_kill = DeltaTable(uri)
    killed_version, killed_rows = after_kill.version(), len(after_kill.to_pandas())
    production.restart_component(topology, "worker")
    outcome = belt.wait("feature_refresh", run_id)
    stop.set()
    reader.join(timeout=30)

    assert outcome.state == "success"
    (refresh,) = [t for t in outcome.tasks if t["task_id"] == "refresh_features"]
    assert refresh["try_number"] >= 2
    final = DeltaTable(uri)
    frame = final.to_pandas()
    for version in range(final.version() + 1):
        committed.setdefault(version, len(DeltaTable(uri, version=version).to_pandas()))
    # Readers saw whole versions only: rows exactly as committed, no duplicated keys.
    assert seen and all(rows == committed[v] and dups == 0 for v, rows, dups in seen)
    assert killed_rows == committed[killed_version]
    assert frame.duplicated(keys).sum() == 0
    result = belt.xcom("feature_refresh", run_id, "refresh_features")
    in_interval = frame[(frame[usecase.timestamp] >= "2026-03-01") & (frame[usecase.timestamp] < "2026-04-01")]
    assert len(in_interval) == result["rows_written"]


def _data_files(uri: str) -> int:
    from pathlib import Path

    return sum(1 for _ in Path(uri).rglob("*.parquet"))


def test_topology_is_healthy_after_the_faults(topology):
    wait_until(lambda: all(production.status(topology).values()), 120, "every component ready again")
