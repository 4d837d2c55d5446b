"""The retraining rule: N breaching windows of the last M, the latest included, one request
per run of breaches thanks to the cooldown, and the same decision on a rerun."""

from __future__ import annotations

import datetime as dt

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from esteira.monitoring.retraining import decide_retraining
from esteira.usecase import RetrainingRule

DAY0 = dt.datetime(2026, 3, 1)


def _day(i: int) -> dt.datetime:
    return DAY0 + dt.timedelta(days=i)


def _history(
    breaches: list[bool], retrains: list[bool] | None = None, version: str = "1"
) -> pd.DataFrame:
    retrains = retrains or [False] * len(breaches)
    return pd.DataFrame(
        {
            "window_start": [_day(i - 1) for i in range(len(breaches))],
            "window_end": [_day(i) for i in range(len(breaches))],
            "model_version": version,
            "breach": breaches,
            "drift_breach": breaches,
            "quality_breach": False,
            "retrain": retrains,
        }
    )


def _replay(breaches: list[bool], rule: RetrainingRule) -> list[bool]:
    """Decide window after window, recording each decision as the monitoring table does."""
    decisions: list[bool] = []
    for i in range(len(breaches)):
        history = _history(breaches[: i + 1], decisions + [None])
        decisions.append(decide_retraining(history, rule, _day(i)).retrain)
    return decisions


RULE = RetrainingRule(breaches=2, windows=3, cooldown_days=7)


def test_two_of_three_with_the_latest_retrains():
    decision = decide_retraining(_history([True, False, True]), RULE, _day(2))
    assert decision.retrain
    assert (decision.breaches, decision.windows) == (2, 3)
    assert "drift" in decision.reason and "2 of the last 3" in decision.reason


def test_latest_window_must_breach():
    decision = decide_retraining(_history([True, True, False]), RULE, _day(2))
    assert not decision.retrain
    assert "does not breach" in decision.reason


def test_too_few_breaches():
    decision = decide_retraining(_history([True, False, False, True]), RULE, _day(3))
    assert not decision.retrain
    assert decision.breaches == 1


def test_no_breach_no_retraining():
    assert not any(_replay([False] * 20, RULE))


def test_a_run_of_breaches_gives_one_retraining():
    decisions = _replay([False, True, True, True, True, True, True, False, False], RULE)
    assert decisions == [False, False, True, False, False, False, False, False, False]


def test_cooldown_ends_and_a_persisting_breach_retrains_again():
    decisions = _replay([True] * 12, RULE)
    assert [i for i, d in enumerate(decisions) if d] == [1, 8]


def test_rerun_of_a_window_decides_the_same():
    history = _history([True, True, True], [False, True, False])
    assert decide_retraining(history, RULE, _day(1)).retrain  # its own recorded decision ignored
    assert not decide_retraining(history, RULE, _day(2)).retrain


def test_missing_window_row():
    decision = decide_retraining(_history([True, True]), RULE, _day(5))
    assert not decision.retrain and "no monitoring result" in decision.reason


def test_breaches_of_another_model_version_do_not_count():
    old = _history([True, True, False])
    new = _history([False, False, False, True], version="2").iloc[3:]
    history = pd.concat([old, new], ignore_index=True)
    assert not decide_retraining(history, RULE, _day(3), model_version="2").retrain
    assert decide_retraining(history, RULE, _day(3)).retrain


def test_cooldown_applies_across_model_versions():
    old = _history([True, True], [False, True])
    new = _history([False, False, True, True], version="2").iloc[2:]
    history = pd.concat([old, new], ignore_index=True)
    decision = decide_retraining(history, RULE, _day(3), model_version="2")
    assert not decision.retrain and "cooldown" in decision.reason
    assert decision.last_retrain == _day(1)


rules = st.builds(
    lambda m, n, cooldown: RetrainingRule(breaches=min(n, m), windows=m, cooldown_days=cooldown),
    st.integers(1, 5),
    st.integers(1, 5),
    st.integers(0, 10),
)


@settings(max_examples=100, deadline=None)
@given(rule=rules, breaches=st.lists(st.booleans(), max_size=25))
def test_replayed_decisions_follow_the_rule(rule, breaches):
    decisions = _replay(breaches, rule)
    retrained = [i for i, d in enumerate(decisions) if d]
    for i in retrained:
        window = breaches[max(0, i - rule.windows + 1) : i + 1]
        assert breaches[i] and sum(window) >= rule.breaches
    assert all(b - a >= rule.cooldown_days for a, b in zip(retrained, retrained[1:], strict=False))
    for i, decided in enumerate(decisions):
        if decided or not breaches[i]:
            continue
        window = breaches[max(0, i - rule.windows + 1) : i + 1]
        blocked = any(i - j < rule.cooldown_days for j in retrained if j < i)
        assert sum(window) < rule.breaches or blocked


@settings(max_examples=60, deadline=None)
@given(rule=rules, run=st.integers(1, 30))
def test_a_run_of_breaches_gives_one_request_per_cooldown(rule, run):
    decisions = _replay([False] * 3 + [True] * run + [False] * 3, rule)
    period = max(rule.cooldown_days, 1)
    expected = 0 if run < rule.breaches else 1 + (run - rule.breaches) // period
    assert sum(decisions) == expected


@settings(max_examples=50, deadline=None)
@given(rule=rules, breaches=st.lists(st.booleans(), min_size=1, max_size=15))
def test_recomputing_any_window_from_the_full_history_agrees(rule, breaches):
    decisions = _replay(breaches, rule)
    history = _history(breaches, decisions)
    for i, decided in enumerate(decisions):
        assert decide_retraining(history, rule, _day(i)).retrain == decided
