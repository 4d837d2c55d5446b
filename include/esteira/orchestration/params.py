"""Params shared by several stages, so the trigger forms look alike."""

from __future__ import annotations

from airflow.sdk import Param


def interval_params() -> dict[str, Param]:
    date = {"type": ["null", "string"], "format": "date"}
    return {
        "interval_start": Param(
            None,
            **date,
            title="Interval start",
            description="First day to process (YYYY-MM-DD). Empty: the run's data interval.",
        ),
        "interval_end": Param(
            None,
            **date,
            title="Interval end",
            description="Day after the last day to process (exclusive). Empty: the run's data interval.",
        ),
    }
