"""Which days a run sees: the person's Params, else the data interval, else none."""

from __future__ import annotations

import datetime as dt

import pytest

from esteira.stages.window import RunWindow, WindowError, requested_window, require_window

UTC = dt.UTC


def test_params_win_over_the_data_interval():
    window = requested_window("2026-01-01", "2026-01-08", dt.datetime(2026, 3, 1, tzinfo=UTC),
                              dt.datetime(2026, 3, 2, tzinfo=UTC))
    assert window == RunWindow(dt.date(2026, 1, 1), dt.date(2026, 1, 8))


def test_a_scheduled_run_takes_its_data_interval():
    window = requested_window(None, "", dt.datetime(2026, 3, 1, tzinfo=UTC), dt.datetime(2026, 3, 2, tzinfo=UTC))
    assert (window.start, window.end) == (dt.date(2026, 3, 1), dt.date(2026, 3, 2))


def test_a_point_interval_means_the_day_before():
    """CronTriggerTimetable runs have start == end: the day that just ended."""
    at = dt.datetime(2026, 3, 2, tzinfo=UTC)
    assert requested_window(None, None, at, at) == RunWindow(dt.date(2026, 3, 1), dt.date(2026, 3, 2))


def test_a_run_without_params_or_interval_has_no_window():
    assert requested_window(None, None, None, None) is None
    with pytest.raises(WindowError, match="set interval_start and interval_end"):
        require_window(None)


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("2026-01-01", None, "give both"),
        ("2026-13-01", "2026-01-02", "interval_start='2026-13-01' is not a date"),
        ("2026-01-08", "2026-01-01", "must be after"),
    ],
)
def test_malformed_params_name_the_problem(start, end, message):
    with pytest.raises(WindowError, match=message):
        requested_window(start, end, None, None)


def test_the_window_converts_to_midnight_datetimes():
    window = RunWindow(dt.date(2026, 1, 1), dt.date(2026, 1, 2))
    assert (window.start_at, window.end_at) == (dt.datetime(2026, 1, 1), dt.datetime(2026, 1, 2))
    assert str(window) == "[2026-01-01, 2026-01-02)"
