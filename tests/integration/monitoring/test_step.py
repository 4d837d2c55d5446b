"""The drift-monitoring DAG's own step (`stages.drift_monitoring.monitor`) on a champion
registered by the training stage: quality estimated before the labels and confirmed by
them, read errors that fail loudly, the stored reference, and memory bounded by the sample
size rather than the window."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from esteira import tables, tracking
from esteira.config import get_settings
from esteira.monitoring.inputs import WindowReadError
from esteira.monitoring.results import read_history
from esteira.registry.lineage import read_version
from esteira.serving.batch import score_batch
from esteira.serving.inference_log import log_dir
from esteira.stages.drift_monitoring import monitor
from esteira.stages.window import RunWindow
from tests.integration.monitoring.champion import (
    FIRST_WINDOW,
    train_champion,
    usecase,
    window_rows,
    write,
)

pytestmark = pytest.mark.integration

SAMPLE = 20_000
# A 10x window must not raise the step's peak memory by more than this over a window of
# the sample size: what the sampler keeps is bounded by the sample, and a whole window of
# 200,000 rows would take well over 100 MiB as pandas, and several times that in Evidently.
MEMORY_GROWTH_MIB = 40
MEMORY_CEILING_MIB = 512
_REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def champion(module_home):
    settings = get_settings()
    uc = usecase("churn_monitoring_step", SAMPLE)
    return uc, settings, train_champion(uc, settings)


def _window(offset: int) -> RunWindow:
    start = FIRST_WINDOW + dt.timedelta(days=offset)
    return RunWindow(start, start + dt.timedelta(days=1))


def _deliver(uc, settings, offset: int, rows: int, kind: str) -> pd.DataFrame:
    """Write a window's feature rows and batch-score them with the champion; returns the
    labels, which arrive later."""
    window = _window(offset)
    features, labels = window_rows(window.start, rows, seed=700 + offset, kind=kind)
    write(uc, settings, tables.FEATURES, features)
    score_batch(uc, settings, window.start_at, window.end_at, run_id=f"batch-{offset}")
    return labels


def _row(settings, uc, offset: int) -> pd.Series:
    history = read_history(settings, uc)
    return history[history["window_start"] == pd.Timestamp(_window(offset).start_at)].iloc[-1]


def test_quality_is_estimated_before_labels_and_matches_them_after(champion):
    uc, settings, version = champion
    kinds = {0: "same", 1: "shift", 2: "flat"}
    labels = {offset: _deliver(uc, settings, offset, 5000, kind) for offset, kind in kinds.items()}

    early = {offset: monitor(uc, _window(offset), f"early-{offset}") for offset in kinds}
    rows = {offset: _row(settings, uc, offset) for offset in kinds}
    assert all(pd.isna(row["quality_value"]) and row["labeled_rows"] == 0 for row in rows.values())
    assert all(row["estimated_quality_metric"] == "roc_auc" for row in rows.values())
    # the squeezed window's quality drop is flagged from the estimate alone, before any label
    assert rows[2]["estimated_quality_breach"] and rows[2]["breach"]
    assert rows[2]["estimated_quality_drop"] > uc.monitoring.quality_max_drop
    assert not rows[0]["estimated_quality_breach"] and not rows[0]["breach"]
    assert early[1]["drifted_columns"] == ["monthly_charges"]

    write(uc, settings, tables.LABELS, pd.concat(labels.values(), ignore_index=True))
    late = {offset: monitor(uc, _window(offset), f"late-{offset}") for offset in kinds}
    for offset in kinds:
        row = _row(settings, uc, offset)
        assert row["labeled_rows"] == 5000
        assert abs(row["estimated_quality_value"] - row["quality_value"]) <= 0.03, (offset, row.to_dict())
        assert late[offset]["estimated_quality"] == pytest.approx(early[offset]["estimated_quality"])
    assert _row(settings, uc, 2)["quality_breach"]  # the labels confirm the drop


def test_the_reference_is_stored_once_at_registration_and_read_back(champion):
    uc, settings, version = champion
    record = read_version(uc, version, settings)
    reference = record.reference
    assert reference is not None and reference.run_id == record.run_id
    assert reference.rows == reference.sampled == 9000  # 30 days x 300 labelled rows, all kept
    client = tracking.client(settings)
    assert [a.path for a in client.list_artifacts(record.run_id, "monitoring_reference")] == [reference.path]

    _deliver(uc, settings, 5, 3000, "same")
    monitor(uc, _window(5), "reference-read")
    assert read_version(uc, version, settings).reference == reference  # read, not taken again
    assert _row(settings, uc, 5)["reference_rows"] == 9000


def test_a_version_without_a_reference_gets_one_on_its_first_window(champion):
    uc, settings, version = champion
    client = tracking.client(settings)
    stored = read_version(uc, version, settings).reference
    client.delete_model_version_tag(uc.model_name, str(version), "monitoring_reference")
    assert read_version(uc, version, settings).reference is None  # as registered before the change

    _deliver(uc, settings, 6, 3000, "same")
    outcome = monitor(uc, _window(6), "fallback")
    assert outcome["current_rows"] == 3000
    assert read_version(uc, version, settings).reference == stored  # the same seeded sample


def test_a_missing_table_is_no_rows_and_a_broken_one_fails_naming_it(champion):
    uc, settings, version = champion
    _deliver(uc, settings, 8, 1000, "same")
    absent = uc.model_copy(update={"features": uc.features.model_copy(update={"table": "absent_features"})})
    assert monitor(absent, _window(8), "absent")["reason"] == f"no rows in {_window(8)}"

    broken = uc.model_copy(update={"features": uc.features.model_copy(update={"table": "broken_features"})})
    uri = tables.table_uri(settings, broken, tables.FEATURES)
    shutil.copytree(tables.table_uri(settings, uc, tables.FEATURES), uri)
    for data_file in Path(uri).glob("*.parquet"):
        data_file.unlink()
    with pytest.raises(tables.TableReadError, match=uri):
        monitor(broken, _window(8), "broken")

    log = log_dir(settings, uc) / f"date={_window(20).start}"
    log.mkdir(parents=True)
    (log / "part-1.parquet").write_bytes(b"not parquet")
    with pytest.raises(WindowReadError, match="part-1.parquet"):
        monitor(absent, _window(20), "broken log")


_MEASURE = """
import json, sys
from esteira.stages.drift_monitoring import monitor
from esteira.stages.window import RunWindow
from esteira.usecase import UseCase
uc = UseCase.model_validate_json(sys.argv[1])
start, end = (__import__("datetime").date.fromisoformat(d) for d in sys.argv[2:4])
outcome = monitor(uc, RunWindow(start, end), "memory")
peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"peak_mib": int(peak.split()[1]) / 1024, "rows": outcome["current_rows"]}))
"""


def _peak_mib(uc, window: RunWindow) -> dict:
    """The step's peak resident memory in a fresh interpreter (VmHWM: the high-water mark of
    this process's own memory, unlike ru_maxrss, which inherits the parent's across exec)."""
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, uc.model_dump_json(by_alias=True, exclude_unset=True), str(window.start), str(window.end)],
        capture_output=True, text=True, timeout=600, cwd=_REPO,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_memory_is_bounded_by_the_sample_not_the_window(champion):
    uc, settings, version = champion
    _deliver(uc, settings, 10, SAMPLE, "same")
    _deliver(uc, settings, 11, 10 * SAMPLE, "same")
    small, large = _peak_mib(uc, _window(10)), _peak_mib(uc, _window(11))
    assert (small["rows"], large["rows"]) == (SAMPLE, 10 * SAMPLE)
    assert large["peak_mib"] <= small["peak_mib"] + MEMORY_GROWTH_MIB, (small, large)
    assert large["peak_mib"] < MEMORY_CEILING_MIB, large


def test_served_rows_count_with_the_feature_rows_of_the_window(champion):
    import numpy as np

    from esteira.serving.inference_log import InferenceLog, Record

    uc, settings, version = champion
    _deliver(uc, settings, 7, 2000, "same")
    served, _ = window_rows(_window(7).start, 500, seed=907)
    noon = dt.datetime.combine(_window(7).start, dt.time(12), dt.UTC).timestamp()
    log = InferenceLog(log_dir(settings, uc), flush_seconds=0.05)
    log.start()
    for start in range(0, 500, 100):
        part = served.iloc[start : start + 100]
        log.append(Record(f"req-{start}", noon, uc.model_name, str(version),
                          {name: part[name].to_numpy() for name in uc.feature_names}, np.zeros(len(part))))
    log.append(Record("next-day", noon + 86_400, uc.model_name, str(version),
                      {name: served[name].to_numpy()[:10] for name in uc.feature_names}, np.zeros(10)))
    log.close()
    assert monitor(uc, _window(7), "served")["current_rows"] == 2500
