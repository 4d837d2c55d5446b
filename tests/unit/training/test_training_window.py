"""What a training run learns from is decided in one place, and says which rule chose it."""

from __future__ import annotations

import datetime as dt

from esteira.stages.model_training import TrainingOptions, TrainingTrigger, choose_window
from tests.unit.training.synthetic import churn_usecase

NEWEST_LABEL = dt.datetime(1988, 1, 1)
CHAMPION_END = dt.datetime(1986, 1, 1)


def _window(trigger, options=None, champion=CHAMPION_END):
    options = options or TrainingOptions()
    return choose_window(churn_usecase(), options, trigger, lambda: NEWEST_LABEL, lambda: champion)


def test_a_retraining_request_trains_up_to_the_newest_label():
    window = _window(TrainingTrigger("retraining", reason="drift share 0.4"))
    assert (window.end, window.rule) == (NEWEST_LABEL, "retraining_request")
    assert window.start == NEWEST_LABEL - dt.timedelta(days=churn_usecase().training.window_days)
    assert "drift share 0.4" in window.why and "newest label" in window.why


def test_a_retraining_request_never_learns_less_than_the_champion():
    window = _window(TrainingTrigger("retraining"), champion=dt.datetime(1990, 1, 1))
    assert window.end == dt.datetime(1990, 1, 1)
    assert "before the end of the champion's window" in window.why


def test_a_retraining_requests_own_end_replaces_the_newest_label():
    window = _window(TrainingTrigger("retraining", dt.datetime(1987, 6, 1)))
    assert window.end == dt.datetime(1987, 6, 1) and "training_end" in window.why


def test_a_features_event_uses_its_interval_and_a_person_the_params():
    event = TrainingTrigger("features", dt.datetime(1986, 1, 1))
    assert (_window(event).end, _window(event).rule) == (dt.datetime(1986, 1, 1), "features_event")
    chosen = TrainingOptions(training_end=dt.datetime(1985, 3, 1))
    assert (_window(event, chosen).end, _window(event, chosen).rule) == (dt.datetime(1985, 3, 1), "param")
    manual = _window(TrainingTrigger())
    assert (manual.end, manual.rule) == (NEWEST_LABEL, "newest_label")


def test_the_window_says_its_rule_in_one_line():
    text = _window(TrainingTrigger("retraining", reason="quality drop")).describe()
    assert text.startswith("training window [1987-11-17, 1988-01-01) by rule retraining_request:")
