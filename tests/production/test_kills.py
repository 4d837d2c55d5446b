"""SIGKILLs and an outage on the running production topology, with what each one costs.

- the model server during a stream of requests: after its restart it serves the champion;
  the inference log has no torn file and loses at most what was in memory (the rows of the
  last flush interval), measured here;
- the Celery worker during batch scoring, and during a monitoring window: the retry
  completes, with no duplicate row;
- MLflow stopped between the champion's alias move and the audit tags (the registry
  barrier holds the promotion exactly there): the retry completes the audit.

Each test writes its figures to ``test-output/production-kills.json`` (README, Operations).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from esteira.stack import production
from tests.production.conftest import REPO, model_versions, wait_promotions_done, wait_until

pytestmark = pytest.mark.production

_FIGURES = REPO / "test-output" / "production-kills.json"
_TRAINING = {"gate_mode": "disabled"}


def _record(name: str, figures: dict) -> None:
    _FIGURES.parent.mkdir(exist_ok=True)
    known = json.loads(_FIGURES.read_text()) if _FIGURES.exists() else {}
    _FIGURES.write_text(json.dumps({**known, name: figures}, indent=2, sort_keys=True))


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def _served_version(topology, uc) -> int | None:
    try:
        version = _get_json(f"{topology.model_server_url}/models/{uc.name}/version").get("model_version")
    except OSError:
        return None
    return None if version is None else int(version)


class _Requests:
    """Single-row requests one after another, each with its own X-Request-Id; remembers
    when each was answered (200) or failed."""

    def __init__(self, url: str, key: str, body: bytes) -> None:
        self.url, self.key, self.body = url, key, body
        self.answered: dict[str, float] = {}
        self.failed: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Requests:
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        sent = 0
        while not self._stop.is_set():
            sent += 1
            request_id = f"kill-test-{sent:07d}"
            request = urllib.request.Request(self.url, data=self.body, headers={
                "Content-Type": "application/json", "X-API-Key": self.key, "X-Request-Id": request_id,
            })
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    response.read()
                self.answered[request_id] = time.monotonic()
            except (OSError, urllib.error.HTTPError):
                self.failed[request_id] = time.monotonic()
                time.sleep(0.05)


def _request_body(uc) -> bytes:
    from esteira import tables
    from esteira.config import get_settings

    uri = tables.table_uri(get_settings(), uc, tables.FEATURES)
    rows = tables.read_table(uri, columns=uc.feature_names).head(1)
    return json.dumps({"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}).encode()


def _logged(uc) -> tuple[list[str], int, int]:
    """Request ids in the inference log, its Parquet files and leftover temporary files;
    every Parquet file must read whole (a torn one would raise)."""
    import pyarrow.parquet as pq

    from esteira.config import get_settings
    from esteira.serving.inference_log import log_dir

    root = log_dir(get_settings(), uc)
    files = sorted(root.rglob("*.parquet"))
    ids = [i for path in files for i in pq.read_table(path, columns=["request_id"]).column(0).to_pylist()]
    return ids, len(files), len(list(root.rglob(".*.tmp")))


def test_model_server_killed_during_requests(cycle, usecase, topology):
    from esteira.registry.transitions import get_alias_version

    champion = get_alias_version(usecase, "champion")
    wait_until(lambda: _served_version(topology, usecase) == champion, 120, "the server serves the champion")
    url = f"{topology.model_server_url}/models/{usecase.name}/invocations"
    with _Requests(url, topology.model_server_api_key, _request_body(usecase)) as stream:
        wait_until(lambda: len(stream.answered) >= 300, 120, "300 answered requests", poll=0.1)
        killed_at = time.monotonic()
        production.kill_component(topology, "model-server")
        time.sleep(2)
        production.restart_component(topology, "model-server")
        restarted_at = time.monotonic()
        wait_until(lambda: _served_version(topology, usecase) == champion, 120, "the champion again")
        after = len(stream.answered)
        wait_until(lambda: len(stream.answered) >= after + 100, 120, "100 more answered", poll=0.1)
    time.sleep(3)  # two flush intervals: the restarted server has written what it answered

    ids, files, temporary = _logged(usecase)
    mine = [i for i in ids if i.startswith("kill-test-")]
    before = {i for i, at in stream.answered.items() if at < killed_at}
    since = {i for i, at in stream.answered.items() if at > restarted_at}
    lost = before - set(mine)
    lost_window = max((killed_at - stream.answered[i] for i in lost), default=0.0)
    figures = {
        "requests_answered_before_kill": len(before), "requests_failed_while_down": len(stream.failed),
        "requests_answered_after_restart": len(since), "log_rows_lost": len(lost),
        "log_rows_lost_answered_within_s_of_kill": round(lost_window, 2),
        "duplicate_log_rows": len(mine) - len(set(mine)), "parquet_files": files,
        "leftover_temporary_files": temporary,
    }
    _record("model_server_sigkill", figures)

    assert _served_version(topology, usecase) == champion
    assert len(mine) == len(set(mine)), figures  # no request logged twice
    assert since <= set(mine), figures  # the restarted server logs what it answers
    # Only what was in memory is lost: rows answered in the last flush interval (1 s; the
    # margin is for a busy machine, where the writer thread may run late).
    assert lost_window <= 3.0, figures
    assert set(mine) <= set(stream.answered) | set(stream.failed)


def _kill_worker_during(belt, topology, stage: str, conf: dict, task_id: str):
    run_id = belt.trigger(stage, conf)
    belt.wait_for_task(stage, run_id, task_id, {"running"}, poll=0.2)
    production.kill_component(topology, "worker")
    production.restart_component(topology, "worker")
    outcome = belt.wait(stage, run_id)
    (task,) = [t for t in outcome.tasks if t["task_id"] == task_id]
    return run_id, outcome, task


def test_worker_killed_during_batch_scoring(cycle, belt, topology, usecase):
    from esteira import tables
    from esteira.config import get_settings

    settings = get_settings()
    window = {"interval_start": "2026-02-01", "interval_end": "2026-03-01"}
    wait_promotions_done(belt)
    run_id, outcome, task = _kill_worker_during(belt, topology, "batch_inference", window, "score_batch")

    assert outcome.state == "success" and task["try_number"] >= 2, outcome.tasks
    scored = belt.xcom("batch_inference", run_id, "score_batch")
    uri = tables.table_uri(settings, usecase, tables.PREDICTIONS)
    keys = [usecase.entity, usecase.timestamp, "model_name", "model_version"]
    frame = tables.read_table(uri)
    inside = frame[(frame[usecase.timestamp] >= "2026-02-01") & (frame[usecase.timestamp] < "2026-03-01")
                   & (frame["model_version"].astype(str) == str(scored["model_version"]))]
    features = tables.read_interval(tables.table_uri(settings, usecase, tables.FEATURES), usecase.timestamp,
                                    dt.datetime(2026, 2, 1), dt.datetime(2026, 3, 1), columns=[usecase.entity])
    figures = {"tries": task["try_number"], "rows_expected": len(features), "rows_written": len(inside),
               "rows_lost": len(features) - len(inside), "duplicate_rows": int(frame.duplicated(keys).sum())}
    _record("worker_sigkill_batch_scoring", figures)
    assert figures["duplicate_rows"] == 0 and figures["rows_lost"] == 0, figures
    assert scored["rows"] == len(features)


def test_worker_killed_during_a_monitoring_window(cycle, belt, topology, usecase):
    from esteira import tables
    from esteira.config import get_settings

    window = {"interval_start": "2026-02-20", "interval_end": "2026-02-21"}
    wait_promotions_done(belt)
    run_id, outcome, task = _kill_worker_during(belt, topology, "drift_monitoring", window, "monitor_window")

    assert outcome.state in ("success",), outcome.tasks
    assert task["try_number"] >= 2, outcome.tasks
    result = belt.xcom("drift_monitoring", run_id, "monitor_window")
    frame = tables.read_table(tables.table_uri(get_settings(), usecase, tables.MONITORING))
    rows = frame[frame["window_start"].astype(str).str.startswith("2026-02-20")
                 & (frame["model_version"].astype(str) == str(result["model_version"]))]
    figures = {"tries": task["try_number"], "window_rows": len(rows),
               "duplicate_rows": int(frame.duplicated(["window_start", "model_version"]).sum())}
    _record("worker_sigkill_monitoring_window", figures)
    assert len(rows) == 1 and figures["duplicate_rows"] == 0, figures


def test_mlflow_down_between_the_alias_move_and_the_audit_tags(cycle, belt, topology, usecase):
    from esteira.registry.transitions import audit_events, get_alias_version

    barrier = Path(topology.extra_env["ESTEIRA_REGISTRY_BARRIER"])
    wait_promotions_done(belt)
    before = get_alias_version(usecase, "champion")
    known = belt.run_ids("model_promotion")
    (barrier / "promote.alias_moved.hold").touch()
    try:
        belt.trigger("model_training", _TRAINING)
        run_id = belt.next_run("model_promotion", known, timeout=900)
        wait_until(lambda: (barrier / "promote.alias_moved.reached").exists(), 900, "the alias move")
        production.stop_component(topology, "mlflow", grace=5)
    finally:
        (barrier / "promote.alias_moved.hold").unlink(missing_ok=True)
    try:
        belt.wait_for_task("model_promotion", run_id, "promote_challenger", {"up_for_retry"}, timeout=300)
    finally:
        production.restart_component(topology, "mlflow")
    outcome = belt.wait("model_promotion", run_id)

    (promote,) = [t for t in outcome.tasks if t["task_id"] == "promote_challenger"]
    version = belt.xcom("model_promotion", run_id, "read_challenger")["version"]
    events = [e for e in audit_events(usecase) if e.action == "promote" and e.version == version]
    tags = next(v for v in model_versions(usecase.model_name) if int(v.version) == version).tags
    pool = belt.client.request("GET", f"pools/esteira_registry__{usecase.model_name}")
    figures = {"promote_tries": promote["try_number"], "promote_events": len(events),
               "promotion_tags": tags.get("previous_champion") is not None, "pool_slots": pool["slots"]}
    _record("mlflow_down_after_alias_move", figures)

    assert outcome.state == "success" and promote["try_number"] == 2, outcome.tasks
    assert get_alias_version(usecase, "champion") == version
    assert get_alias_version(usecase, "challenger") != version
    assert [(e.previous, e.alias) for e in events] == [(before, "champion")]
    assert tags["previous_champion"] == str(before)
    assert pool["slots"] == 1  # created by the scheduler on first use
