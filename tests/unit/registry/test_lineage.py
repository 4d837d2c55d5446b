"""The typed model-version record writes exactly the tags the registry always wrote (same
keys, same string formats, which the UI, monitoring and promotion read back) and reads
every field back; the audit events keep their JSON format."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from esteira.evaluation.result import GateResult
from esteira.registry.lineage import (
    ApprovalRecord,
    AuditEvent,
    GateRecord,
    LineageError,
    PromotionRecord,
    RollbackRecord,
    VersionRecord,
    audit_trail,
    next_seq,
)

LINEAGE = {
    "table_uri": "/data/churn/churn_features",
    "version": 4,
    "labels_uri": "/data/churn/churn_labels",
    "labels_version": 2,
    "start": "2026-01-01T00:00:00",
    "end": "2026-03-01T00:00:00",
    "rows": 5000,
}
RUN_TAGS = {
    "mlflow.parentRunId": "parent123",
    "airflow.dag_id": "churn__model_training",
    "airflow.run_id": "manual__2026-03-01T00:00:00+00:00",
    "esteira.config_sha256": "c" * 64,
    "mlflow.source.git.commit": "abc123",
    "esteira.dataset_digest.test": "run-digest",
}
GATE = GateResult(
    passed=True,
    mode="enabled",
    verdict="passed",
    reasons=["Metric roc_auc ok", 'a "quoted" reason'],
    table="| metric |",
    champion_version=3,
    candidate_metrics={"roc_auc": 0.8123456789, "log_loss": 0.21},
    champion_metrics={"roc_auc": 0.79},
    dataset_digest="gate-digest",
    thresholds=[{"metric": "roc_auc", "greater_is_better": True, "threshold": 0.6}],
)
# What registry/transitions.register_challenger wrote before the record existed.
REGISTRATION_TAGS = {
    "feature_table_uri": "/data/churn/churn_features",
    "feature_table_version": "4",
    "lineage": json.dumps(LINEAGE, sort_keys=True),
    "dataset_digest": "gate-digest",
    "run_id": "run456",
    "parent_run_id": "parent123",
    "airflow_dag_id": "churn__model_training",
    "airflow_run_id": "manual__2026-03-01T00:00:00+00:00",
    "config_sha256": "c" * 64,
    "git_commit": "abc123",
    "gate_mode": "enabled",
    "gate_verdict": "passed",
    "gate_passed": "true",
    "gate_reasons": json.dumps(["Metric roc_auc ok", 'a "quoted" reason']),
    "gate_metrics": json.dumps({"roc_auc": 0.8123456789, "log_loss": 0.21}, sort_keys=True),
    "gate_compared_champion": "3",
    "gate_champion_metrics": json.dumps({"roc_auc": 0.79}),
    "gate_thresholds": json.dumps([{"greater_is_better": True, "metric": "roc_auc", "threshold": 0.6}]),
}
APPROVAL_TAGS = {
    "approval_decision": "approved",
    "approved_by": "alice",
    "approval_reason": "better AUC on March data",
    "approval_at": "2026-03-02T10:00:00+00:00",
}
PROMOTION_TAGS = {
    "previous_champion": "3",
    "promoted_by": "alice",
    "promotion_reason": "better AUC on March data",
    "promoted_at": "2026-03-02T10:00:01+00:00",
}
ROLLBACK_TAGS = {
    "rolled_back_by": "carol",
    "rollback_reason": "v5 misbehaves online",
    "rolled_back_at": "2026-03-05T08:00:00+00:00",
    "rolled_back_from": "5",
}
ALL_TAGS = REGISTRATION_TAGS | APPROVAL_TAGS | PROMOTION_TAGS | ROLLBACK_TAGS


def test_registration_writes_todays_keys_and_formats():
    record = VersionRecord.registration("run456", RUN_TAGS, LINEAGE, GATE)
    assert record.to_tags() == REGISTRATION_TAGS


def test_registration_without_a_gate_digest_takes_the_runs_and_without_either_writes_none():
    no_digest = GateResult(True, "disabled", "skipped", champion_version=None)
    tags = VersionRecord.registration("run456", RUN_TAGS, LINEAGE, no_digest).to_tags()
    assert tags["dataset_digest"] == "run-digest"
    assert tags["gate_compared_champion"] == "none"
    assert tags["gate_reasons"] == "[]" and tags["gate_metrics"] == "{}"
    bare = VersionRecord.registration("run456", {}, LINEAGE, no_digest).to_tags()
    assert "dataset_digest" not in bare
    assert bare["parent_run_id"] == bare["airflow_dag_id"] == bare["git_commit"] == ""


def test_registration_needs_the_feature_table():
    with pytest.raises(ValueError, match="lineage lacks version"):
        VersionRecord.registration("run456", RUN_TAGS, {"table_uri": "/t"}, GATE)


def test_every_field_round_trips_through_the_tags():
    record = VersionRecord.from_tags(ALL_TAGS)
    assert record.to_tags() == ALL_TAGS
    assert record == VersionRecord(
        lineage=LINEAGE,
        feature_table_uri="/data/churn/churn_features",
        feature_table_version=4,
        dataset_digest="gate-digest",
        run_id="run456",
        parent_run_id="parent123",
        airflow_dag_id="churn__model_training",
        airflow_run_id="manual__2026-03-01T00:00:00+00:00",
        config_sha256="c" * 64,
        git_commit="abc123",
        gate=GateRecord(
            mode="enabled",
            verdict="passed",
            passed=True,
            reasons=("Metric roc_auc ok", 'a "quoted" reason'),
            metrics={"roc_auc": 0.8123456789, "log_loss": 0.21},
            compared_champion=3,
            champion_metrics={"roc_auc": 0.79},
            thresholds=({"metric": "roc_auc", "greater_is_better": True, "threshold": 0.6},),
        ),
        approval=ApprovalRecord(
            "approved", "alice", "better AUC on March data", "2026-03-02T10:00:00+00:00"
        ),
        promotion=PromotionRecord(
            3, "alice", "better AUC on March data", "2026-03-02T10:00:01+00:00"
        ),
        rollback=RollbackRecord(
            "carol", "v5 misbehaves online", "2026-03-05T08:00:00+00:00", 5
        ),
    )


def test_readers_get_typed_values():
    record = VersionRecord.from_tags(ALL_TAGS)
    assert record.gate_passed is True and record.gate_verdict == "passed"
    assert record.compared_champion == 3
    assert record.feature_version == 4 and record.labels_version == 2
    assert record.window() == (dt.datetime(2026, 1, 1), dt.datetime(2026, 3, 1))
    assert record.training_window == record.window()
    assert not record.rejected


def test_each_section_writes_only_its_own_keys():
    assert ApprovalRecord("approved", "alice", "ok", "t").to_tags().keys() == APPROVAL_TAGS.keys()
    rejected = ApprovalRecord("rejected", "dave", "worse recall", "t").to_tags()
    assert rejected == {
        "approval_decision": "rejected",
        "rejected_by": "dave",
        "approval_reason": "worse recall",
        "approval_at": "t",
    }
    assert VersionRecord.from_tags(rejected).rejected
    assert PromotionRecord(None, "esteira", "first", "t").to_tags() == {
        "previous_champion": "none",
        "promoted_by": "esteira",
        "promotion_reason": "first",
        "promoted_at": "t",
    }
    assert RollbackRecord("carol", "r", "t", None).to_tags()["rolled_back_from"] == "none"


def test_no_champion_and_a_rejection_read_back_as_such():
    tags = REGISTRATION_TAGS | {
        "gate_compared_champion": "none",
        "gate_passed": "false",
        "gate_verdict": "rejected",
    }
    record = VersionRecord.from_tags(tags)
    assert record.compared_champion is None and not record.gate_passed
    assert record.gate_verdict == "rejected"
    assert record.to_tags() == tags


def test_a_version_registered_outside_esteira_has_no_record():
    record = VersionRecord.from_tags({})
    assert record == VersionRecord()
    assert record.to_tags() == {}
    assert (record.gate, record.approval, record.promotion, record.rollback) == (None,) * 4
    assert not record.gate_passed and record.gate_verdict == "unknown"
    assert record.compared_champion is None and record.feature_version is None
    assert record.training_window is None
    with pytest.raises(LineageError, match="no training window"):
        record.window()


def test_a_malformed_json_tag_reads_as_empty():
    malformed = {"gate_reasons": "not json", "lineage": "{"}
    record = VersionRecord.from_tags(REGISTRATION_TAGS | malformed)
    assert record.gate.reasons == () and record.lineage is None
    assert record.feature_version == 4


EVENT = AuditEvent(
    seq=3,
    at="2026-03-02T10:00:01+00:00",
    action="promote",
    alias="champion",
    version=5,
    previous=3,
    actor="alice",
    reason="better AUC",
)


def test_audit_event_keeps_its_json_format():
    # What registry/transitions._append_event wrote before the record existed.
    written = json.dumps(
        {
            "seq": 3,
            "at": "2026-03-02T10:00:01+00:00",
            "action": "promote",
            "alias": "champion",
            "version": 5,
            "previous": 3,
            "actor": "alice",
            "reason": "better AUC",
        }
    )
    assert EVENT.to_json() == written
    assert AuditEvent.from_json(written) == EVENT
    assert EVENT.tag_key == "esteira.event.000003"


def test_audit_trail_reads_events_oldest_first_among_other_tags():
    approval = AuditEvent(1, "t1", "approval_approved", None, 5, None, "alice", "ok")
    tags = {EVENT.tag_key: EVENT.to_json(), approval.tag_key: approval.to_json(), "owner": "squad"}
    assert audit_trail(tags) == [approval, EVENT]
    assert next_seq(tags) == 3
    assert next_seq({}) == 1
