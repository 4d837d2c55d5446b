"""`make demo`: the whole belt through the real scheduler, on the embedded stack.

Everything goes through Airflow's REST API (triggers, waits, the runs that Asset events
start), exactly as a person or a CI job would drive it; nothing calls `dag.test()`.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.request

from esteira.config import Settings, get_settings, get_usecase
from esteira.stack.airflow_api import AirflowClient, RunOutcome, describe_tasks

_STARTED = time.monotonic()
_THINKING_SECONDS = 5


class DemoError(RuntimeError):
    pass


def say(message: str) -> None:
    print(f"[{time.monotonic() - _STARTED:7.1f}s] {message}", flush=True)


def _show(state: str, tasks: list[dict]) -> None:
    say(f"    {state}: {describe_tasks(tasks)}")


class Belt:
    def __init__(self, client: AirflowClient, usecase: str):
        self.client, self.uc = client, usecase

    def dag(self, stage: str) -> str:
        return f"{self.uc}__{stage}"

    def run(self, stage: str, conf: dict | None = None) -> RunOutcome:
        dag_id = self.dag(stage)
        run_id = self.client.trigger(dag_id, conf or {})
        say(f"triggered {dag_id} ({json.dumps(conf or {})})")
        return self._finish(dag_id, run_id)

    def follow(self, stage: str, after: set[str], timeout: float = 600, approve: bool = False) -> RunOutcome:
        """Wait for the run an Asset event starts (one not in ``after``), then for its end.

        With ``approve``, a pending approval of that run is answered through the REST API,
        exactly as the Airflow UI's *Required actions* page sends it.
        """
        dag_id = self.dag(stage)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            runs = [r for r in self.client.latest_runs(dag_id) if r["dag_run_id"] not in after]
            if runs:
                run_id = runs[0]["dag_run_id"]
                say(f"{dag_id} started by an Asset event: {run_id}")
                if approve:
                    self._approve(dag_id, run_id)
                return self._finish(dag_id, run_id)
            time.sleep(2)
        raise DemoError(f"no run of {dag_id} started within {timeout:.0f} s")

    def _approve(self, dag_id: str, run_id: str, timeout: float = 600) -> None:
        """Answer the run's approval once it has waited a few seconds, as a person would.

        Airflow 3.3.2 races with an answer given within a second of the request: the task is
        re-queued while the executor still reports its first pass, is retried, and asks
        again. So keep watching until the approval task has finished, and answer each ask.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            tasks = {t["task_id"]: t["state"] for t in self.client.task_states(dag_id, run_id)}
            if tasks.get("approve_promotion") in ("success", "skipped", "failed", "upstream_failed"):
                return
            for detail in self.client.pending_approvals():
                ti = detail["task_instance"]
                waited = time.time() - dt.datetime.fromisoformat(detail["created_at"]).timestamp()
                if ti["dag_id"] == dag_id and ti["dag_run_id"] == run_id and waited > _THINKING_SECONDS:
                    say(f"   approval requested: {detail['subject']}")
                    say("   demo mode: approving as 'admin' through the REST API (a person clicks "
                        "Approve under Required actions in the Airflow UI)")
                    self.client.answer_approval(
                        dag_id, run_id, ti["task_id"], "Approve",
                        "demo mode: approved automatically", ti.get("map_index", -1),
                    )
            time.sleep(2)
        raise DemoError(f"{dag_id} run {run_id}: approval not settled within {timeout:.0f} s")

    def known_runs(self, stage: str) -> set[str]:
        return {r["dag_run_id"] for r in self.client.latest_runs(self.dag(stage), limit=100)}

    def _finish(self, dag_id: str, run_id: str) -> RunOutcome:
        outcome = self.client.wait(dag_id, run_id, timeout=1800, on_change=_show)
        say(f"{dag_id}: {outcome.state}")
        if not outcome.ok:
            raise DemoError(f"{dag_id} run {run_id} failed: see its task logs in the Airflow UI")
        return outcome

    def xcom(self, outcome: RunOutcome, task_id: str):
        return self.client.xcom(outcome.dag_id, outcome.run_id, task_id)


def _sample_request(settings: Settings, uc) -> None:
    from esteira.features.training_set import build_training_set

    frame, _ = build_training_set(uc, settings, dt.datetime(2026, 2, 1), dt.datetime(2026, 2, 2))
    rows = frame[uc.feature_names].head(2)
    body = json.dumps({"dataframe_split": json.loads(rows.to_json(orient="split", index=False))})
    served = f"{settings.model_server_url}/models/{uc.name}"
    request = urllib.request.Request(
        f"{served}/invocations", data=body.encode(), headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer = response.read().decode()
    with urllib.request.urlopen(f"{served}/version", timeout=10) as response:
        version = json.loads(response.read()).get("model_version")
    say(f"model server {settings.model_server_url}: POST /models/{uc.name}/invocations {body}")
    say(f"    -> {answer}   (/models/{uc.name}/version: version {version})")


def _summary(settings: Settings, uc) -> None:
    from esteira.cli import history_lines, registry_history
    from esteira.evaluation.comparison import text_lines
    from esteira.monitoring.results import read_history
    from esteira.registry.transitions import get_alias_version

    events = registry_history(uc.name)
    # search_model_versions leaves the aliases out: ask for each alias instead.
    aliases = {get_alias_version(uc, a): a for a in ("challenger", "champion")}
    print("\nModel versions: the gate's comparison, both models on the candidate's test set")
    for event in (e for e in events if e["action"] == "register_challenger"):
        version = event["version"]
        print(f"  v{version}  {aliases.get(version, '-'):<10}  registered {event['at']}: {event['reason']}")
        print("\n".join(text_lines(event["comparison"], event["compared_champion"], indent="      ")))
    print("\nRegistry history (esteira registry history " + uc.name + ")")
    print("\n".join(f"  {line}" for line in history_lines(events)) or "  (none)")
    print("\nMonitoring windows")
    history = read_history(settings, uc)
    for _, row in history.iterrows():
        print(f"  {row['window_start']:%Y-%m-%d}  model v{row['model_version']}  drift share "
              f"{row['drift_share']:.2f}  drifted {row['drifted_columns']}  retrain={row['retrain']}")
    if history.empty:
        print("  (none recorded)")
    print("\nWhere to look")
    print(f"  Airflow      {settings.airflow_url}  (DAGs tagged 'esteira'; the Esteira page in the menu)")
    print(f"  MLflow       {settings.mlflow_ui_url}  (experiment '{uc.name}-training', model '{uc.model_name}')")
    print(f"  Model server {settings.model_server_url}/models/{uc.name}/invocations  "
          f"(/models/{uc.name}/version, /metrics)")
    print("  The stack keeps running; stop it with: make down")


def run_demo(short: bool = False, usecase: str = "churn") -> int:
    from esteira.features.generator import generate_landing

    settings = get_settings()
    uc = get_usecase(usecase, settings)
    belt = Belt(AirflowClient.for_settings(settings), usecase)
    client = belt.client
    say("Esteira demo: the whole belt through the Airflow scheduler (REST API triggers)")
    files = generate_landing(uc, settings.landing_dir / uc.source.landing)
    say(f"1. landing: {len(files)} daily raw files (synthetic, drift switch on from "
        f"{uc.source.generator.drift.start}) in {settings.landing_dir / uc.source.landing}")
    for stage in ("feature_refresh", "model_training", "model_promotion", "batch_inference", "drift_monitoring"):
        client.wait_for_dag(belt.dag(stage))
        client.unpause(belt.dag(stage))
    seen = {s: belt.known_runs(s) for s in ("model_training", "model_promotion", "batch_inference")}

    say("2. feature refresh over the history (2025-12-01 .. 2026-03-01); its Asset event starts training")
    belt.run("feature_refresh", {"interval_start": "2025-12-01", "interval_end": "2026-03-01"})
    say("3. training: candidates in parallel, gate against the champion (none yet)")
    training = belt.follow("model_training", seen["model_training"])
    challenger = belt.xcom(training, "register_challenger")
    if not challenger:
        raise DemoError("the first model was rejected by the gate: see the evaluate_gate task log")
    say(f"   challenger: {uc.model_name} v{challenger['version']} (run {challenger['run_id']})")
    say("4. promotion, with human approval (require_approval in churn.yaml)")
    belt.follow("model_promotion", seen["model_promotion"], approve=uc.registry.require_approval)
    _sample_request(settings, uc)
    say("5. batch inference, started by the champion Asset")
    belt.follow("batch_inference", seen["batch_inference"])

    say("6. new days arrive, with the drift switch on from "
        f"{uc.source.generator.drift.start}: refresh without starting training")
    seen = {s: belt.known_runs(s) for s in ("model_training", "model_promotion", "batch_inference")}
    belt.run("feature_refresh", {"interval_start": "2026-03-01", "interval_end": "2026-04-01",
                                 "notify_downstream": False})
    belt.run("batch_inference", {"interval_start": "2026-03-01", "interval_end": "2026-04-01"})
    say("7. daily drift monitoring; the rule asks for "
        f"{uc.retraining.breaches} breaching windows of the last {uc.retraining.windows}")
    first = dt.date(2026, 3, 3)
    requested = None
    for offset in range(5 if short else 7):
        day = first + dt.timedelta(days=offset)
        outcome = belt.run("drift_monitoring", {"interval_start": day.isoformat(),
                                                "interval_end": (day + dt.timedelta(days=1)).isoformat()})
        result = belt.xcom(outcome, "monitor_window") or {}
        say(f"   window {day}: drift share {result.get('drift_share', float('nan')):.2f}, "
            f"drifted {result.get('drifted_columns')}; {result.get('reason')}")
        if result.get("retrain") and requested is None:
            requested = day
    if requested is None:
        raise DemoError("monitoring did not request retraining")
    say(f"8. retraining requested after window {requested}: a new training run")
    retrain = belt.follow("model_training", seen["model_training"])
    challenger = belt.xcom(retrain, "register_challenger")
    if challenger:
        say(f"   new challenger v{challenger['version']} passed the gate; promoting")
        belt.follow("model_promotion", seen["model_promotion"], approve=uc.registry.require_approval)
        _sample_request(settings, uc)
    else:
        gate = belt.xcom(retrain, "evaluate_gate") or {}
        said = "found nothing new in" if gate.get("verdict") == "nothing_new" else "rejected"
        say(f"   the gate {said} the retrained model: {'; '.join(gate.get('reasons') or [])}")
    _summary(settings, uc)
    say("demo finished")
    return 0
