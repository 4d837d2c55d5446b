"""The translation of Airflow's task context into the stages' inputs (no running Airflow)."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest
from airflow.sdk import Asset
from airflow.sdk.exceptions import AirflowSkipException

from esteira.orchestration import context as ctx
from esteira.results import NothingToDo
from esteira.stages.model_promotion import Approval
from esteira.stages.model_training import TrainingTrigger
from esteira.stages.window import RunWindow

FEATURES = Asset("esteira://churn/features")
RETRAINING = Asset("esteira://churn/retraining_request")


def _event(extra: dict) -> SimpleNamespace:
    return SimpleNamespace(extra=extra)


def test_the_latest_triggering_event_of_the_asset_is_read_and_others_ignored():
    context = {"triggering_asset_events": {
        FEATURES: [_event({"end": "2026-02-01"}), _event({"end": "2026-03-01"})],
        RETRAINING: [],
    }}
    assert ctx.triggering_extra(context, FEATURES) == {"end": "2026-03-01"}
    assert ctx.triggering_extra(context, RETRAINING) == {}
    assert ctx.triggering_extra({}, FEATURES) == {}


def test_a_training_trigger_says_what_started_the_run():
    by_features = {"triggering_asset_events": {FEATURES: [_event({"end": "2026-03-01"})]}}
    by_request = {"triggering_asset_events": {RETRAINING: [_event({"reason": "drift 2 of 3"})]}}
    assert ctx.training_trigger(by_features, FEATURES, RETRAINING) == TrainingTrigger("features", dt.datetime(2026, 3, 1))
    assert ctx.training_trigger(by_request, FEATURES, RETRAINING) == TrainingTrigger("retraining", None, "drift 2 of 3")
    assert ctx.training_trigger({}, FEATURES, RETRAINING) == TrainingTrigger()


def test_a_retraining_request_wins_over_a_features_event_that_came_with_it():
    """The issue's bug: an older features event decided the window of a retraining run."""
    both = {"triggering_asset_events": {
        FEATURES: [_event({"end": "1986-01-01"})],
        RETRAINING: [_event({"reason": "drift", "training_end": "1988-01-01T00:00:00+00:00"})],
    }}
    assert ctx.training_trigger(both, FEATURES, RETRAINING) == TrainingTrigger(
        "retraining", dt.datetime(1988, 1, 1), "drift")


def test_the_approver_and_reason_come_from_the_hitl_xcom():
    decision = {"chosen_options": ["Approve"], "params_input": {"reason": "looks good"},
                "responded_by_user": {"id": "1", "name": "ana"}}
    assert ctx.approval(decision) == Approval("ana", "looks good")
    assert ctx.approval({"responded_by_user": "bob", "params_input": {}}) == Approval("bob", "(no reason given)")
    assert ctx.approval(None) is None


def test_a_rejection_and_a_timeout_are_told_apart_by_who_answered():
    rejected = {"chosen_options": ["Reject"], "params_input": {"reason": "recall dropped"},
                "responded_by_user": {"id": "2", "name": "bia"}}
    assert ctx.approval(rejected) == Approval("bia", "recall dropped", "rejected")
    # The scheduler applies the default option (Reject) after the timeout, with no user.
    timed_out = {"chosen_options": ["Reject"], "params_input": {"reason": ""}, "responded_by_user": None}
    assert ctx.approval(timed_out).decision == "timed_out"


def test_the_window_comes_from_params_then_the_data_interval():
    at = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)
    assert ctx.window({"params": {"interval_start": "2026-01-01", "interval_end": "2026-01-02"}}) == RunWindow(
        dt.date(2026, 1, 1), dt.date(2026, 1, 2))
    assert ctx.window({"params": {}, "data_interval_start": at, "data_interval_end": at}).end == dt.date(2026, 3, 2)
    assert ctx.window({"params": {}}) is None


def test_nothing_to_do_becomes_a_skip_with_the_reason_and_no_event():
    outlet = SimpleNamespace(extra=None)
    context = {"outlet_events": {FEATURES: outlet}}
    with pytest.raises(AirflowSkipException, match="no champion yet"):
        ctx.publish(context, FEATURES, NothingToDo("no champion yet"))
    assert outlet.extra is None
    assert ctx.publish(context, FEATURES, {"version": 2}) == {"version": 2}
    assert outlet.extra == {"version": 2}


def test_the_rollback_actor_is_the_triggering_user():
    assert ctx.triggering_user({"dag_run": SimpleNamespace(triggering_user_name="ana")}) == "ana"
    assert ctx.triggering_user({"dag_run": SimpleNamespace()}) == "unknown user"
