"""The declared retraining rule: N breaching windows of the last M, the latest one included,
at most once per cooldown.

A pure function of the monitoring history, so the decision of a window can be recomputed and
tested without any store. The history records past decisions; the cooldown reads them, which
turns a run of breaching windows into one retraining request instead of one per window.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pandas as pd

from esteira.usecase import RetrainingRule


@dataclass(frozen=True)
class RetrainingDecision:
    retrain: bool
    reason: str
    window_end: dt.datetime
    breaches: int
    windows: int
    last_retrain: dt.datetime | None = None


def decide_retraining(
    history: pd.DataFrame,
    rule: RetrainingRule,
    window_end: dt.datetime,
    model_version: str | None = None,
) -> RetrainingDecision:
    """Decide for the window ending at ``window_end``, whose row must be in ``history``.

    ``history`` has one row per (window, model version) with at least ``window_end``,
    ``breach`` and ``retrain``; ``drift_breach``/``quality_breach`` name the cause when
    present. Windows are the distinct ``window_end`` values up to this one, the row counts
    for this model version only when ``model_version`` is given (a new champion starts
    clean); a window breaches when any of its rows does. Past decisions of any version,
    strictly before this window, drive the cooldown, so a rerun decides the same again.
    """
    end = pd.Timestamp(window_end)
    past = history[history["window_end"] <= end]
    rows = past if model_version is None else past[past["model_version"] == model_version]
    by_window = rows.groupby("window_end")["breach"].any().sort_index()
    if end not in by_window.index:
        return RetrainingDecision(
            False, f"no monitoring result for the window ending {end}", end.to_pydatetime(), 0, 0
        )
    recent = by_window.iloc[-rule.windows :]
    breaches = int(recent.sum())
    n_of_m = f"{breaches} of the last {len(recent)} windows breach (rule: {rule.breaches} of {rule.windows})"
    if not bool(recent.loc[end]):
        return _no(f"the window ending {end} does not breach; {n_of_m}", end, breaches, recent)
    if breaches < rule.breaches:
        return _no(n_of_m, end, breaches, recent)
    retrains = past.loc[past["retrain"].eq(True) & (past["window_end"] < end), "window_end"]
    last = retrains.max() if len(retrains) else None
    if last is not None and end - last < pd.Timedelta(days=rule.cooldown_days):
        return RetrainingDecision(
            False,
            f"{n_of_m}, but retraining was requested for the window ending {last}, "
            f"within the {rule.cooldown_days}-day cooldown",
            end.to_pydatetime(),
            breaches,
            len(recent),
            last.to_pydatetime(),
        )
    return RetrainingDecision(
        True,
        f"{_causes(rows, end, rule)} breach: {n_of_m}, the latest ending {end}",
        end.to_pydatetime(),
        breaches,
        len(recent),
        None if last is None else last.to_pydatetime(),
    )


def _no(reason: str, end: pd.Timestamp, breaches: int, recent: pd.Series) -> RetrainingDecision:
    return RetrainingDecision(False, reason, end.to_pydatetime(), breaches, len(recent))


_QUALITY_CAUSES = {
    "realized": (("quality_breach", "quality"),),
    "estimated": (("estimated_quality_breach", "estimated quality"),),
    "both": (("quality_breach", "quality"), ("estimated_quality_breach", "estimated quality")),
}


def _causes(rows: pd.DataFrame, end: pd.Timestamp, rule: RetrainingRule) -> str:
    """The breaches of the latest window that the rule counts (``rule.quality``)."""
    latest = rows[rows["window_end"] == end]
    causes = [
        name
        for column, name in (("drift_breach", "drift"), *_QUALITY_CAUSES[rule.quality])
        if column in latest.columns and bool(latest[column].eq(True).any())
    ]
    return " and ".join(causes) or "monitoring"
