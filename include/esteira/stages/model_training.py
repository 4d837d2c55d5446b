"""The training DAG's steps: choose the window and fix the training set, train each
candidate, pick the best, judge it at the gate against the champion, register the challenger.

What a run learns from is decided in one place, ``choose_window``, and recorded with its
reason. Every mapped task re-reads the training set at the recorded Delta versions, so all
candidates and the gate see exactly the same rows. A gate rejection or a candidate that is
nothing new registers nothing: the decision goes to the registry's history and the run ends
skipped with the reason.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from esteira.config import Settings, get_settings
from esteira.results import NothingToDo, Reference, StageResult, to_reference
from esteira.usecase import UseCase

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("esteira.training")

MIN_TRAINING_ROWS = 100


class TrainingDataError(RuntimeError):
    """The window holds too little labelled data to train on."""


@dataclasses.dataclass(frozen=True)
class TrainingOptions:
    """What a person may choose per run (the trigger form); None keeps the YAML's value."""

    training_end: dt.datetime | None = None
    window_days: int | None = None
    validation_fraction: float | None = None
    test_fraction: float | None = None
    seed: int | None = None
    gate_mode: str | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> TrainingOptions:
        end = params.get("training_end")
        return cls(
            training_end=dt.datetime.fromisoformat(end) if end else None,
            **{f.name: params.get(f.name) for f in dataclasses.fields(cls) if f.name != "training_end"},
        )

    def apply(self, uc: UseCase) -> UseCase:
        """The use case with these choices applied (seed, split, window)."""
        training = uc.training
        split = training.split.model_copy(
            update={k: v for k, v in (("validation_fraction", self.validation_fraction),
                                      ("test_fraction", self.test_fraction)) if v is not None}
        )
        update: dict[str, Any] = {"split": split}
        update |= {k: v for k, v in (("seed", self.seed), ("window_days", self.window_days)) if v is not None}
        if self.window_days not in (None, training.window_days):
            update["window"] = None  # days chosen in the trigger form win over the YAML's window
        return uc.model_copy(update={"training": training.model_copy(update=update)})


@dataclasses.dataclass(frozen=True)
class TrainingTrigger:
    """What started the run: a retraining request (``end``: its explicit ``training_end``,
    if any), a features event (``end``: the refreshed interval's end), or a person
    (``manual``)."""

    kind: str = "manual"
    end: dt.datetime | None = None
    reason: str = ""


@dataclasses.dataclass(frozen=True)
class TrainingWindow:
    """The labels ``[start, end)`` a run trains on, the rule that chose them and why."""

    start: dt.datetime
    end: dt.datetime
    rule: str
    why: str

    def describe(self) -> str:
        return f"training window [{self.start:%Y-%m-%d}, {self.end:%Y-%m-%d}) by rule {self.rule}: {self.why}"


TAG_WINDOW_RULE = "esteira.window.rule"
TAG_WINDOW_WHY = "esteira.window.why"


def experiment_name(uc: UseCase) -> str:
    return f"{uc.name}-training"


def choose_window(
    uc: UseCase,
    options: TrainingOptions,
    trigger: TrainingTrigger,
    newest_label: Callable[[], dt.datetime],
    champion_end: Callable[[], dt.datetime | None],
) -> TrainingWindow:
    """The one place that decides what a training run learns from.

    In order: the person's ``training_end`` Param; for a retraining request, its explicit
    end, else the day after the newest label, but never before the end of the champion's
    window (a retrain must not learn less than the model it replaces); for a features event,
    the end of the refreshed interval; else (a run by hand) the newest label. The window is
    ``training.window`` long (periods of the grain, or a duration), else ``window_days``.
    The two callables read the stores only when needed.
    """
    if options.training_end is not None:
        end, rule, why = options.training_end, "param", "training_end was set in the trigger form"
    elif trigger.kind == "retraining":
        end, rule, why = _retraining_end(trigger, newest_label, champion_end)
    elif trigger.kind == "features" and trigger.end is not None:
        end, rule = trigger.end, "features_event"
        why = f"a features event for the interval ending {trigger.end:%Y-%m-%d} started the run"
    else:
        end, rule = newest_label(), "newest_label"
        why = "started by hand without training_end: up to the newest label"
    from esteira.features.definitions import shift_back

    window = uc.training.window or f"{uc.training.window_days}d"
    return TrainingWindow(shift_back(end, window, uc.grain), end, rule, why)


def _retraining_end(
    trigger: TrainingTrigger,
    newest_label: Callable[[], dt.datetime],
    champion_end: Callable[[], dt.datetime | None],
) -> tuple[dt.datetime, str, str]:
    asked = f"retraining requested ({trigger.reason or 'no reason given'})"
    if trigger.end is not None:
        end, source = trigger.end, "the request's training_end"
    else:
        end, source = newest_label(), "the newest label"
    floor = champion_end()
    if floor is not None and end < floor:
        return floor, "retraining_request", (
            f"{asked}; {source} ({end:%Y-%m-%d}) is before the end of the champion's window, "
            f"so its end ({floor:%Y-%m-%d})"
        )
    return end, "retraining_request", f"{asked}: up to {source} ({end:%Y-%m-%d})"


def newest_label_end(uc: UseCase, settings: Settings) -> dt.datetime:
    """The day after the newest label in the labels table (the end of a window holding it)."""
    import pandas as pd

    from esteira import tables

    uri = tables.table_uri(settings, uc, tables.LABELS)
    newest = tables.newest_value(uri, uc.timestamp) if tables.exists(uri) else None
    if newest is None:
        raise TrainingDataError(f"no labels yet in {uri}: run a feature refresh first")
    return (pd.Timestamp(newest).normalize() + pd.Timedelta(days=1)).to_pydatetime()


def _champion_window_end(uc: UseCase) -> dt.datetime | None:
    from esteira.registry.lineage import read_version
    from esteira.registry.transitions import get_alias_version

    version = get_alias_version(uc, "champion")
    window = read_version(uc, version).training_window if version is not None else None
    return window[1] if window else None


def prepare_training(
    uc: UseCase, options: TrainingOptions, trigger: TrainingTrigger, airflow: Mapping[str, Any]
) -> Reference:
    """Choose the window, fix the table versions, check there is enough data, open the
    parent run (which records the window's rule and why).

    ``airflow`` (dag_id, run_id, try_number) becomes the parent run's lineage tags.
    """
    from esteira import tracking
    from esteira.features.training_set import build_training_set
    from esteira.training.runs import start_parent_run

    settings = get_settings()
    uc = options.apply(uc)
    window = choose_window(
        uc, options, trigger, lambda: newest_label_end(uc, settings), lambda: _champion_window_end(uc)
    )
    log.info("%s", window.describe())
    frame, ref = build_training_set(uc, settings, window.start, window.end)
    if len(frame) < MIN_TRAINING_ROWS:
        raise TrainingDataError(
            f"only {len(frame)} labelled rows in [{window.start:%Y-%m-%d}, {window.end:%Y-%m-%d}) "
            f"(need {MIN_TRAINING_ROWS}): refresh more days or widen window_days"
        )
    parent = start_parent_run(uc, experiment_name(uc), ref, airflow)
    client = tracking.client(settings)
    client.set_tag(parent, TAG_WINDOW_RULE, window.rule)
    client.set_tag(parent, TAG_WINDOW_WHY, window.why)
    log.info("training set: %d rows, features v%s, labels v%s; parent run %s",
             len(frame), ref.version, ref.labels_version, parent)
    return {**to_reference(ref), "parent_run_id": parent}


def load_frame(uc: UseCase, training: Mapping[str, Any]) -> pd.DataFrame:
    """The training set exactly as recorded in the ``training`` reference."""
    from esteira.features.training_set import build_training_set

    frame, _ = build_training_set(
        uc,
        get_settings(),
        dt.datetime.fromisoformat(training["start"]),
        dt.datetime.fromisoformat(training["end"]),
        version=int(training["version"]),
        labels_version=int(training["labels_version"]),
    )
    return frame


def run_candidate(
    uc: UseCase,
    options: TrainingOptions,
    candidate: Mapping[str, Any],
    training: Mapping[str, Any],
    airflow: Mapping[str, Any],
) -> Reference:
    """Train one candidate as a child run of the training's parent run."""
    from esteira.training.fit import train_candidate

    uc = options.apply(uc)
    result = train_candidate(
        uc, candidate, load_frame(uc, training), _lineage(training), training["parent_run_id"], airflow
    )
    log.info("candidate %s: run %s, %s", result.name, result.run_id,
             ", ".join(f"{k}={v:.4f}" for k, v in sorted(result.metrics.items())))
    return result.to_dict()


def select_best(uc: UseCase, results: list[Mapping[str, Any]]) -> Reference:
    from esteira.training.fit import select_best as best

    return best(results, uc.training.primary_metric, uc.training.greater_is_better).to_dict()


def run_gate(
    uc: UseCase, options: TrainingOptions, best: Mapping[str, Any], training: Mapping[str, Any]
) -> Reference:
    """Judge ``best`` against the current champion on the recorded test split."""
    from esteira.evaluation.gate import describe, evaluate_gate
    from esteira.registry.lineage import read_version
    from esteira.registry.transitions import current_champion
    from esteira.training.split import time_split

    uc = options.apply(uc)
    test = time_split(uc, load_frame(uc, training)).test
    champion = current_champion(uc)
    if champion is not None:
        champion = dataclasses.replace(champion, run_id=read_version(uc, champion.version).run_id)
    result = evaluate_gate(
        uc,
        best["run_id"],
        best["model_uri"],
        test,
        _lineage(training),
        training["parent_run_id"],
        champion=champion,
        mode=options.gate_mode or None,
    )
    log.info("%s", describe(result))
    return result.to_dict()


def register_challenger(
    uc: UseCase,
    best: Mapping[str, Any],
    gate: Mapping[str, Any],
    training: Mapping[str, Any],
    options: TrainingOptions | None = None,
) -> StageResult:
    """Register the challenger on a pass, with its monitoring reference (a sample of its
    training set, taken once) and its compiled (ONNX) model, checked on the gate's test
    split. NothingToDo, with the decision in the registry's history, when the gate rejected
    the candidate or found it nothing new."""
    from esteira.monitoring.reference import ensure_reference
    from esteira.registry import transitions
    from esteira.serving.compilation import compile_version
    from esteira.training.runs import finish_run
    from esteira.training.split import time_split

    if not gate["passed"]:
        finish_run(training["parent_run_id"])
        action, said = _GATE_DECISIONS.get(gate["verdict"], _GATE_DECISIONS["rejected"])
        reasons = "; ".join(gate["reasons"])
        transitions.record_decision(
            uc, action, None, _gate_actor(training["parent_run_id"]),
            f"run {best['run_id']} against {_against(gate)}: {reasons}",
        )
        log.warning("%s: %s", said, reasons)
        return NothingToDo(reasons if gate["verdict"] == "nothing_new" else f"{said}: {reasons}")
    version = transitions.register_challenger(uc, best["run_id"], best["model_uri"], _lineage(training), gate)
    ensure_reference(uc, get_settings(), version)
    trained = (options or TrainingOptions()).apply(uc)
    compiled = compile_version(uc, get_settings(), version, time_split(trained, load_frame(trained, training)).test)
    log.info("version %s compiled: %s", version, compiled.reason or "equivalent to the pipeline")
    finish_run(training["parent_run_id"])
    return {
        "model_name": uc.model_name,
        "version": version,
        "run_id": best["run_id"],
        "model_uri": f"models:/{uc.model_name}/{version}",
        "compared_champion": gate.get("champion_version"),
        "gate_verdict": gate["verdict"],
    }


_GATE_DECISIONS = {
    "rejected": ("gate_rejected", "rejected by the gate"),
    "nothing_new": ("gate_nothing_new", "nothing new"),
}


def _gate_actor(parent_run_id: str) -> str:
    """The gate of the Airflow run that trained the candidate (from the parent run's tags)."""
    from esteira import tracking

    tags = tracking.client().get_run(parent_run_id).data.tags
    dag_id, run_id = tags.get(tracking.TAG_AIRFLOW_DAG_ID), tags.get(tracking.TAG_AIRFLOW_RUN_ID)
    return f"gate of {dag_id} run {run_id}" if dag_id and run_id else "gate"


def _against(gate: Mapping[str, Any]) -> str:
    version = gate.get("champion_version")
    return f"champion v{version}" if version else "no champion"


def _lineage(training: Mapping[str, Any]) -> dict:
    return {k: v for k, v in training.items() if k != "parent_run_id"}
