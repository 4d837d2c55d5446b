"""A small belt history on a real MLflow server and a real monitoring table, written through
the registry and monitoring modules themselves (so the tags are the real contract):

v1 promoted without approval, v2 approved by a reviewer and promoted over v1, v3 waiting as
challenger; eight monitoring windows, drifting from the sixth, labels known for the first three, each
with a report run.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from esteira.config import Settings
from esteira.usecase import UseCase

TRAINING_DAG_RUN = "manual__2026-03-01T00:00:00+00:00"
REPORT_MARKER = "seeded evidently drift report"
WINDOWS = 8


class _Snapshot:
    """Stands in for an Evidently snapshot: ``log_report`` only calls ``save_html``."""

    def __init__(self, title: str) -> None:
        self.title = title

    def save_html(self, path: str) -> None:
        Path(path).write_text(f"<html><body><h1>{REPORT_MARKER}</h1><p>{self.title}</p></body></html>")


def _candidate_run(uc: UseCase, dag_run: str, auc: float) -> tuple[str, str]:
    """A training run with the Airflow tags training sets, and a model artifact to register."""
    from mlflow import MlflowClient

    from esteira.tracking import ensure_experiment

    client = MlflowClient()
    experiment = ensure_experiment(client, f"{uc.name}-training")
    run = client.create_run(
        experiment,
        run_name=f"candidate auc {auc}",
        tags={"airflow.dag_id": uc.dag_id("model_training"), "airflow.run_id": dag_run},
    )
    run_id = run.info.run_id
    client.log_text(run_id, "artifact_path: model\nflavors: {}\n", "model/MLmodel")
    client.set_terminated(run_id)
    return run_id, f"runs:/{run_id}/model"


def _metrics(auc: float) -> dict[str, float]:
    return {"roc_auc": auc, "log_loss": round(1 - auc, 4), "accuracy_score": 0.7}


def _gate(uc: UseCase, auc: float, champion: int | None, champion_auc: float | None) -> dict[str, Any]:
    """The gate's result for a candidate of ``auc``; the champion scores ``champion_auc`` on
    the same test set (below its own test score: the test set is newer)."""
    return {
        "passed": True,
        "mode": "enabled",
        "verdict": "passed",
        "reasons": [],
        "table": "",
        "champion_version": champion,
        "candidate_metrics": _metrics(auc),
        "champion_metrics": _metrics(champion_auc) if champion_auc is not None else {},
        "dataset_digest": f"digest{int(auc * 1000)}",
        "thresholds": [rule.model_dump() for rule in uc.gate.thresholds],
    }


def _lineage(settings: Settings, uc: UseCase, version: int) -> dict[str, Any]:
    return {
        "table_uri": settings.table_uri(uc.name, uc.features.table),
        "version": version,
        "labels_version": version,
        "start": "2026-01-01T00:00:00",
        "end": "2026-03-01T00:00:00",
    }


def seed_registry(uc: UseCase, settings: Settings, dag_run: str = TRAINING_DAG_RUN) -> dict[str, int]:
    """Champion v2 (approved by 'alice'), challenger v3. Returns the versions by alias."""
    from esteira.registry import transitions

    versions = []
    for index, auc in enumerate((0.71, 0.78, 0.8)):
        champion = transitions.get_alias_version(uc, "champion")
        run_id, model_uri = _candidate_run(uc, dag_run, auc)
        versions.append(
            transitions.register_challenger(
                uc, run_id, model_uri, _lineage(settings, uc, 3 + index),
                _gate(uc, auc, champion, None if champion is None else auc - 0.03),
            )
        )
        if index == 0:
            transitions.promote(uc, versions[0], None, "esteira (no approval required)",
                                "gate passed; require_approval is off")
        elif index == 1:
            transitions.record_approval(uc, versions[1], "alice", "better AUC on March data", "approved")
            transitions.promote(uc, versions[1], versions[0], "alice", "better AUC on March data")
    return {"champion": versions[1], "challenger": versions[2], "first": versions[0]}


def seed_monitoring(uc: UseCase, settings: Settings, version: int) -> list[str]:
    """WINDOWS daily windows of ``version`` from 2026-03-01; the last three drift. Returns
    the report run ids, oldest first."""
    import json

    from esteira.monitoring.report import log_report
    from esteira.monitoring.results import SCHEMA, write_result

    threshold = uc.monitoring.drift_share_threshold
    run_ids = []
    for day in range(WINDOWS):
        start = dt.datetime(2026, 3, 1) + dt.timedelta(days=day)
        end = start + dt.timedelta(days=1)
        share = 0.1 + 0.02 * day if day < WINDOWS - 3 else 0.45 + 0.05 * (day - WINDOWS + 3)
        drifted = ["monthly_charges", "session_minutes", "device"] if share > threshold else []
        labelled = day < 3
        report = log_report(
            settings, uc, {"drift": _Snapshot(f"window {start:%Y-%m-%d}")},
            model_version=str(version), window_start=start, window_end=end,
            run_label=f"scheduled__{end:%Y-%m-%d}", metrics={"drift_share": share},
        )
        run_ids.append(report.run_id)
        row = {name: None for name in SCHEMA.names} | {
            "window_start": start,
            "window_end": end,
            "model_name": uc.model_name,
            "model_version": str(version),
            "run_label": f"scheduled__{end:%Y-%m-%d}",
            "reference_rows": 5000,
            "reference_sampled": 5000,
            "current_rows": 300 + day,
            "current_sampled": 300 + day,
            "labeled_rows": 250 if labelled else 0,
            "quality_metric": "roc_auc" if labelled else None,
            "quality_value": 0.79 - 0.01 * day if labelled else None,
            "quality_test_value": 0.78 if labelled else None,
            "quality_drop": 0.01 * day - 0.01 if labelled else None,
            "drift_share": share,
            "drift_share_threshold": threshold,
            "dataset_drift": share > threshold,
            "drifted_columns": json.dumps(drifted),
            "column_scores": "{}",
            "quality_metrics": "{}",
            "drift_breach": share > threshold,
            "quality_breach": False,
            "breach": share > threshold,
            "retrain": day == WINDOWS - 1,
            "retrain_reason": "2 of the last 3 windows breached" if day == WINDOWS - 1 else "no breach",
            "report_run_id": report.run_id,
            "report_uri": report.artifact_uri,
        }
        write_result(settings, uc, row)
    return run_ids
