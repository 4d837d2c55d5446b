"""What a training run learns from: the person's Params over the YAML; the window's end."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from esteira.config import get_settings, load_usecase
from esteira.stages.model_training import (
    TrainingDataError,
    TrainingOptions,
    TrainingTrigger,
    choose_window,
    newest_label_end,
)

CHURN = Path(__file__).resolve().parents[3] / "include" / "usecases" / "churn.yaml"


@pytest.fixture
def churn():
    return load_usecase(CHURN)


def test_params_override_the_yaml_and_empty_ones_keep_it(churn):
    options = TrainingOptions.from_params({"seed": 7, "test_fraction": 0.3, "window_days": None,
                                           "training_end": "", "candidates": []})
    applied = options.apply(churn)
    assert applied.training.seed == 7 and applied.training.split.test_fraction == 0.3
    assert applied.training.window_days == churn.training.window_days
    assert applied.training.split.validation_fraction == churn.training.split.validation_fraction
    assert options.training_end is None


def test_the_window_end_is_the_persons_then_the_events(churn, tmp_path, monkeypatch):
    monkeypatch.setenv("ESTEIRA_HOME", str(tmp_path))
    settings = get_settings()
    chosen = TrainingOptions.from_params({"training_end": "2026-02-01"})
    event = TrainingTrigger("features", dt.datetime(2026, 3, 1))

    def unread():
        raise AssertionError("the stores must not be read for this window")

    assert choose_window(churn, chosen, event, unread, unread).end == dt.datetime(2026, 2, 1)
    assert choose_window(churn, TrainingOptions(), event, unread, unread).end == dt.datetime(2026, 3, 1)
    with pytest.raises(TrainingDataError, match="no labels yet"):
        newest_label_end(churn, settings)
